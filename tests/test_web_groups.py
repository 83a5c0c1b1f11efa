"""Groups in the web view: a group's page lists its parts with links,
status and progress under a readable name; a part links to its group; a
failed job shows how far it got, not 100 %.  WebTest against `make_app`
on a FileStorage database, jobs run by an in-process dispatcher."""

import threading
import time

import pytest
import webtest

import zasync
from zasync.web import make_app

import web_jobs

TIMEOUT = 30.0


@pytest.fixture
def app(db):
    return webtest.TestApp(make_app(db, token="t0ken", refresh=2))


@pytest.fixture
def dispatcher(db):
    running = zasync.Dispatcher(db, threads=2, poll_interval=0.05)
    running.start()
    yield running
    running.stop(timeout=TIMEOUT)


def put(db, job):
    with db.transaction() as conn:
        return zasync.get_queue(conn).put(job)


def test_a_part_knows_its_group_and_a_plain_job_has_none():
    parts = [zasync.Job(web_jobs.add, 1, 2), zasync.Job(web_jobs.add, 3, 4)]
    group = zasync.parallel(*parts, web_jobs.add)
    assert [part.group for part in group.args[0]] == [group, group, group]
    assert zasync.Job(web_jobs.add, 1, 2).group is None


def test_group_page_lists_parts_with_links_status_and_progress(app, db, dispatcher):
    parts = [zasync.Job(web_jobs.add, 1, 2), zasync.Job(web_jobs.half_then_fail, "no"),
             zasync.Job(web_jobs.add, 3, 4)]
    group = zasync.wait_for(put(db, zasync.parallel(*parts)), timeout=TIMEOUT)
    assert group.failed

    page = app.get(f"/jobs/{group.id}")
    heading = page.html.select_one("h1").get_text(" ", strip=True)
    assert heading == "parallel group of 3: add, half_then_fail, add"
    assert "_parallel_step" not in page.text
    rows = page.html.select("table.parts tr[data-job]")
    assert [row["data-job"] for row in rows] == [part.id for part in parts]
    for row, part in zip(rows, parts):
        link = row.select_one("a.callable")
        assert link["href"].endswith(f"/jobs/{part.id}")
        assert link.get_text(strip=True) == part.callable_name
    badges = [row.select_one(".badge").get_text(" ", strip=True) for row in rows]
    assert badges == ["completed · success", "completed · failure", "completed · success"]
    percents = [row.select_one(".percent").get_text(strip=True) for row in rows]
    assert percents == ["100.0 %", "50.0 %", "100.0 %"]
    assert "ValueError: no" in rows[1].get_text()
    assert page.html.select_one(".parts-done").get_text(strip=True).startswith("3 of 3 done")

    # the part's page links back to its group
    part_page = app.get(f"/jobs/{parts[1].id}")
    link = part_page.html.select_one("dd.group a")
    assert link["href"].endswith(f"/jobs/{group.id}")
    assert "part 2 of 3" in part_page.html.select_one("dd.group").get_text(" ", strip=True)
    assert "parallel group of 3" in link.get_text(" ", strip=True)


def test_serial_group_in_the_list_and_its_cancelled_parts(app, db, dispatcher):
    parts = [zasync.Job(web_jobs.fail, "out of paper"), zasync.Job(web_jobs.add, 5, 6)]
    group = zasync.wait_for(put(db, zasync.serial(*parts)), timeout=TIMEOUT)
    zasync.wait_for(parts[1], timeout=TIMEOUT)

    listing = app.get("/jobs")
    row = listing.html.select_one(f'tr[data-job="{group.id}"]')
    assert row.select_one("a.callable").get_text(strip=True) == "serial group of 2: fail, add"
    part_row = listing.html.select_one(f'tr[data-job="{parts[1].id}"]')
    assert part_row.select_one("a.group")["href"].endswith(f"/jobs/{group.id}")

    page = app.get(f"/jobs/{group.id}")
    rows = page.html.select("table.parts tr[data-job]")
    assert "cancelled" in rows[1].select_one(".badge").get_text()
    # a part cancelled before it ran did no work
    assert rows[1].select_one(".percent").get_text(strip=True) == "0.0 %"


def test_group_and_part_in_the_json_api(app, db, dispatcher):
    parts = [zasync.Job(web_jobs.add, 1, 2), zasync.Job(web_jobs.half_then_fail, "no")]
    group = zasync.wait_for(put(db, zasync.parallel(*parts)), timeout=TIMEOUT)

    data = app.get(f"/api/jobs/{group.id}").json
    # the callable stays the dotted name for scripts; the group says what it is
    assert data["callable"] == "zasync.job.workflow._parallel_step"
    assert data["group"] == {"kind": "parallel", "parts": [part.id for part in parts]}
    assert data["group_id"] is None
    failed = app.get(f"/api/jobs/{parts[1].id}").json
    assert failed["group_id"] == group.id and failed["group"] is None
    assert failed["state"] == "failure" and failed["progress"] == 0.5
    listed = {job["id"]: job for job in app.get("/api/jobs").json["jobs"]}
    assert listed[parts[0].id]["progress"] == 1.0
    assert listed[parts[1].id]["progress"] == 0.5


def test_a_failed_job_shows_how_far_it_got(app, db, dispatcher):
    job = zasync.wait_for(put(db, zasync.Job(web_jobs.half_then_fail, "no")), timeout=TIMEOUT)
    assert job.progress == 1.0      # the job's contract: 1 once completed
    page = app.get(f"/jobs/{job.id}")
    assert page.html.select_one(".progress")["aria-valuenow"] == "50.0"
    assert app.get(f"/api/jobs/{job.id}").json["progress"] == 0.5


def test_a_group_with_a_postprocess_names_it(app, db, dispatcher):
    group = zasync.wait_for(put(db, zasync.parallel(
        zasync.Job(web_jobs.add, 1, 2), postprocess=web_jobs.add_results)), timeout=TIMEOUT)
    assert group.result == 3
    page = app.get(f"/jobs/{group.id}")
    assert "web_jobs.add_results" in page.html.select_one("section.group-parts").get_text()
    assert "_parallel_step" not in page.text


def test_a_waiting_group_shows_its_parts_moving(app, db, dispatcher, request):
    gate = f"gate-{request.node.name}"
    parts = [zasync.Job(web_jobs.add, 1, 2), zasync.Job(web_jobs.hold, gate, 0.25, "a quarter")]
    group = put(db, zasync.parallel(*parts))
    try:
        zasync.wait_for(parts[0], timeout=TIMEOUT)

        def held():
            row = app.get(f"/jobs/{group.id}").html.select_one(
                f'table.parts tr[data-job="{parts[1].id}"]')
            return row if "25.0 %" in row.get_text() else None
        deadline = time.monotonic() + TIMEOUT
        while (row := held()) is None:
            assert time.monotonic() < deadline, "the held part never reported its progress"
            time.sleep(0.05)
        assert "a quarter" in row.get_text()
        assert row.select_one(".badge").get_text(strip=True) == "active"
        page = app.get(f"/jobs/{group.id}")
        assert page.html.select_one(".job-status .badge").get_text(strip=True) == "active"
        assert page.html.select_one(".parts-done").get_text(strip=True).startswith("1 of 2 done")
    finally:
        web_jobs.gates.setdefault(gate, threading.Event()).set()
    assert zasync.wait_for(group, timeout=TIMEOUT).result == [3, gate]
