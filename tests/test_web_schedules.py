"""The Schedules page, /api/schedules and removing a schedule, and the
unique key on the job's page, through WebTest against `make_app`."""

import datetime

import pytest
import transaction
import webtest

import zasync
from zasync.web import make_app

import web_jobs
from test_web import TOKEN, bearer, login

HOUR = datetime.timedelta(hours=1)
NAME = "<img src=x onerror=alert(1)>"   # a name is text, shown escaped


@pytest.fixture
def app(db):
    return webtest.TestApp(make_app(db, token=TOKEN, refresh=2))


@pytest.fixture
def schedules(db):
    """A schedule that ran once (its occurrence called here, which runs
    its callback too), one by cron in the 'mail' queue, never run."""
    with db.transaction() as conn:
        queue = zasync.get_queue(conn)
        ran = queue.schedule(web_jobs.add, 1, 2, every=HOUR, name="hourly add")
        ran.next_job()
        zasync.get_queue(conn, "mail").schedule(
            web_jobs.fail, "x", cron="*/5 * * * *", name=NAME, catch_up="none")
    return "hourly add"


def read(db, do):
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    try:
        return do(conn)
    finally:
        tm.abort()
        conn.close()


def schedule_names(db, queue=""):
    return read(db, lambda conn: list(zasync.get_queue(conn, queue).schedules))


def test_the_schedules_page_lists_them_with_their_runs(app, schedules):
    page = app.get("/")
    assert page.html.select_one('nav a[href="/schedules"]').text == "Schedules"
    page = app.get("/schedules")
    rows = {row["data-schedule"]: row for row in page.html.select("tr[data-schedule]")}
    assert set(rows) == {"hourly add", NAME}
    hourly = rows["hourly add"].text
    assert "web_jobs.add" in hourly and "every 1 h" in hourly
    assert "success" in hourly and "pending" in hourly
    cells = [td.text.strip() for td in rows["hourly add"].select("td.num")]
    assert cells == ["1", "0"]                   # runs, skipped
    assert "cron */5 * * * *" in rows[NAME].text and "none" in rows[NAME].text
    assert "&lt;img src=x onerror=alert(1)&gt;" in page.text
    assert "<img src=x" not in page.text


def test_the_schedules_json(app, schedules):
    found = {s["name"]: s for s in app.get("/api/schedules").json["schedules"]}
    hourly = found["hourly add"]
    assert hourly["queue"] == "" and hourly["callable"] == "web_jobs.add"
    assert hourly["every"] == 3600.0 and hourly["cron"] is None
    assert hourly["runs"] == 1 and hourly["skipped"] == 0
    assert hourly["last_outcome"] == "success" and hourly["next_status"] == "pending"
    job = app.get(f"/api/jobs/{hourly['next_job']}").json
    assert job["schedule"] == "hourly add" and job["occurs_at"] == hourly["next_at"]
    assert found[NAME]["queue"] == "mail" and found[NAME]["cron"] == "*/5 * * * *"
    assert found[NAME]["last_outcome"] is None


def test_api_remove_needs_the_credential_then_cancels_the_pending_run(app, db, schedules):
    url = "/api/schedules/hourly%20add/remove"
    for headers in ({}, bearer("wrong")):
        reply = app.post(url, headers=headers, status=401)
        assert reply.json["result"] == "fail"
    assert schedule_names(db) == ["hourly add"]
    pending = app.get("/api/schedules").json["schedules"][0]["next_job"]
    reply = app.post(url, headers=bearer())
    assert reply.json == {"task_id": "hourly add", "result": "ok",
                          "message": "schedule 'hourly add' removed; its pending run "
                                     "is cancelled"}
    assert schedule_names(db) == []
    assert app.get(f"/api/jobs/{pending}").json["message"].startswith("Cancelled")
    reply = app.post(url, headers=bearer(), status=404)
    assert "no schedule 'hourly add'" in reply.json["message"]


def test_api_remove_in_another_queue(app, db, schedules):
    url = "/api/schedules/%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E/remove"
    app.post(url, headers=bearer(), status=404)          # not in the default queue
    app.post(url + "?queue=mail", headers=bearer())
    assert schedule_names(db, "mail") == []


def test_api_remove_disabled_without_a_credential(db, schedules):
    app = webtest.TestApp(make_app(db))
    reply = app.post("/api/schedules/hourly%20add/remove", headers=bearer(), status=403)
    assert "disabled" in reply.json["message"]
    assert schedule_names(db) == ["hourly add"]
    assert not app.get("/schedules").html.select("form.action")   # no button to press
    app.post("/schedules/hourly%20add/remove", status=403)
    assert schedule_names(db) == ["hourly add"]


def test_form_remove_needs_the_login_and_the_csrf_token(app, db, schedules):
    url = "/schedules/hourly%20add/remove"
    page = app.get("/schedules")
    assert not [f for f in page.forms.values() if f.action.endswith("/remove")]
    token = app.get("/login").html.select_one('input[name="csrf_token"]')["value"]
    assert "Log in first" in app.post(url, {"csrf_token": token}, status=403).text
    login(app)
    assert "expired" in app.post(url, status=403).text
    assert "expired" in app.post(url, {"csrf_token": "forged"}, status=403).text
    assert schedule_names(db) == ["hourly add"]
    page = app.get("/schedules")
    [form] = [f for f in page.forms.values() if f.action == "/schedules/hourly%20add/remove"]
    done = form.submit(status=303)
    assert done.location.endswith("/schedules?done=unschedule")
    assert "Schedule removed" in done.follow().html.select_one(".notice").text
    assert schedule_names(db) == []
    assert "Could not remove" in app.post(url, {"csrf_token": token}, status=404).text


def test_the_job_page_and_json_show_the_key(app, db):
    with db.transaction() as conn:
        job = zasync.get_queue(conn).put(web_jobs.add, 1, 2, key="<b>report</b>")
        plain = zasync.get_queue(conn).put(web_jobs.add, 1, 2)
    page = app.get(f"/jobs/{job.id}")
    assert page.html.select_one(".job-key").text == "<b>report</b>"
    assert "&lt;b&gt;report&lt;/b&gt;" in page.text
    assert app.get(f"/api/jobs/{job.id}").json["key"] == "<b>report</b>"
    assert app.get(f"/api/jobs/{plain.id}").json["key"] is None
    assert app.get(f"/jobs/{plain.id}").html.select_one(".job-key") is None


def test_a_stalled_schedule_is_flagged(app, db):
    with db.transaction() as conn:
        made = zasync.get_queue(conn).schedule(web_jobs.add, 1, 2, every=HOUR, name="stuck")
        made.next_job._callbacks = ()     # as if its callback had failed
        made.next_job()
    page = app.get("/schedules")
    assert page.html.select_one('tr[data-schedule="stuck"] .stalled').text == "stalled"
    [found] = app.get("/api/schedules").json["schedules"]
    assert found["stalled"] is True and found["last_outcome"] is None   # never counted
