"""What the live pages rely on, through WebTest: a page's ETag covers what
it shows and nothing else (so an unchanged page answers 304), the
summary's ETag is the database's last transaction, whole values behind a
link, and the overview's warning about a queue no worker serves.  The
browser side is in test_web_browser.py."""

import datetime
import time

import pytest
import transaction
import webtest

import zasync
from zasync.web import make_app

import web_jobs

TOKEN = "t0ken-for-live-tests"


@pytest.fixture
def app(db):
    return webtest.TestApp(make_app(db, token=TOKEN))


def put(db, func, *args, queue="", **kwargs):
    with db.transaction() as conn:
        job = zasync.get_queue(conn, queue).put(zasync.Job(func, *args, **kwargs))
        return job.id


def commit_elsewhere(db, value):
    """A commit that no page shows: the database's last transaction changes."""
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    try:
        with tm:
            conn.root()["unrelated"] = value
    finally:
        conn.close()


def test_refresh_defaults_to_one_second(db):
    assert make_app(db).refresh == 1


def test_page_answers_304_until_what_it_shows_changes(app, db, monkeypatch):
    job_id = put(db, web_jobs.add, 1, 2)
    first = app.get(f"/jobs/{job_id}")
    etag = first.headers["ETag"]
    assert first.html.select_one("time.live-time")["datetime"]

    # another transaction, and time going by: the relative times' text
    # changes, the ETag does not
    commit_elsewhere(db, 1)
    later = zasync.job.clock.now() + datetime.timedelta(minutes=5)
    monkeypatch.setattr(zasync.job.clock, "now", lambda: later)
    again = app.get(f"/jobs/{job_id}", headers={"If-None-Match": etag}, status=304)
    assert again.body == b""
    fresh = app.get(f"/jobs/{job_id}")
    assert fresh.headers["ETag"] == etag
    assert "5 min" in fresh.html.select_one("time.live-time").text
    assert fresh.html.select_one("time.live-time").text != \
        first.html.select_one("time.live-time").text

    # something shown changes: a whole page with another ETag
    with db.transaction() as conn:
        zasync.get_queues(conn).find_job(job_id).cancel()
    changed = app.get(f"/jobs/{job_id}", headers={"If-None-Match": etag})
    assert changed.status_int == 200 and changed.headers["ETag"] != etag
    assert "cancelled" in changed.html.select_one(".job-status .badge").text


def test_a_stale_etag_gets_the_whole_page(app, db):
    job_id = put(db, web_jobs.add, 1, 2)
    page = app.get(f"/jobs/{job_id}", headers={"If-None-Match": '"not-this-one"'})
    assert page.status_int == 200 and page.html.select_one("h1")


def test_summary_answers_304_until_something_is_committed(app, db):
    first = app.get("/api/summary")
    assert first.headers["ETag"].strip('"') == "serial-" + first.json["serial"]
    app.get("/api/summary", headers={"If-None-Match": first.headers["ETag"]}, status=304)
    commit_elsewhere(db, 2)
    second = app.get("/api/summary", headers={"If-None-Match": first.headers["ETag"]})
    assert second.status_int == 200 and second.json["serial"] != first.json["serial"]


def test_a_long_value_is_cut_on_the_page_and_whole_behind_its_link(app, db):
    big = "<b>" + "x" * 112_000 + "</b>"
    with db.transaction() as conn:
        job = zasync.Job(web_jobs.add, big, "tail", note=big)
        job.annotations["log"] = big
        job.annotations["short"] = "fine"
        zasync.get_queue(conn).put(job)
        job_id = job.id
    page = app.get(f"/jobs/{job_id}")
    assert len(page.body) < 60_000
    links = {a.text: a["href"] for a in page.html.select(".whole a")}
    assert links["Show all of argument 0"] == f"/jobs/{job_id}/values/args/0"
    assert links["Show all of note"] == f"/jobs/{job_id}/values/kwargs/note"
    assert f"/jobs/{job_id}/values/annotations/log" in links.values()
    assert f"/jobs/{job_id}/values/annotations/short" not in links.values()
    assert "Show all of argument 1" not in links       # 'tail' is shown whole
    assert "(112,009 characters)" in page.html.select_one(".whole").text

    for path in ("args/0", "kwargs/note", "annotations/log"):
        whole = app.get(f"/jobs/{job_id}/values/{path}")
        assert whole.content_type == "text/plain"
        assert whole.text == repr(big)
        assert whole.headers["X-Content-Type-Options"] == "nosniff"
    download = app.get(f"/jobs/{job_id}/values/args/0", params={"download": "1"})
    assert download.headers["Content-Disposition"] == \
        f'attachment; filename="{job_id}-args-0.txt"'

    for path, says in (("args/2", "has no argument 2: expected 0 to 1"),
                       ("args/x", "has no argument x"),
                       ("kwargs/other", "has no keyword argument 'other'"),
                       ("result", "has no result"),
                       ("args", "add its index"),
                       ("annotations/nope", "has no annotation 'nope'")):
        missing = app.get(f"/jobs/{job_id}/values/{path}", status=404)
        assert says in missing.html.select_one("main p").text, path


def test_a_result_is_whole_behind_its_link(app, db):
    with zasync.Dispatcher(db, threads=1, poll_interval=0.05):
        job_id = put(db, web_jobs.add, "y" * 5000, "z")
        tm = transaction.TransactionManager()
        conn = db.open(transaction_manager=tm)
        try:
            zasync.wait_for(zasync.get_queues(conn).find_job(job_id), timeout=30)
        finally:
            tm.abort()
            conn.close()
    page = app.get(f"/jobs/{job_id}")
    link = page.html.select_one("section .whole a")
    assert link.text == "Show all of the result"
    assert app.get(link["href"]).text == repr("y" * 5000 + "z")


def test_overview_flags_a_queue_with_pending_jobs_and_no_live_worker(app, db):
    later = zasync.job.clock.now() + datetime.timedelta(hours=1)
    with db.transaction() as conn:
        zasync.get_queue(conn).put(zasync.Job(web_jobs.add, 1, 2), begin_after=later)
        zasync.get_queue(conn, "mail").put(zasync.Job(web_jobs.add, 3, 4))

    def warnings():
        page = app.get("/")
        return {card.h2.a.text: " ".join(card.select_one(".unserved").text.split())
                for card in page.html.select("article.queue")
                if card.select_one(".unserved") is not None}

    found = warnings()
    assert set(found) == {"(default)", "mail"}
    assert found["mail"].startswith("No live worker serves this queue: its 1 pending job ")

    with zasync.Dispatcher(db, threads=1, poll_interval=0.05, queues=("",)):
        deadline = time.monotonic() + 30
        while app.get("/api/workers").json["workers"] == []:
            assert time.monotonic() < deadline, "the dispatcher never registered"
            time.sleep(0.05)
        assert set(warnings()) == {"mail"}
    # a stopped worker serves nothing
    assert set(warnings()) == {"(default)", "mail"}
