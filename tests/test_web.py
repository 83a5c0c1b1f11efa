"""The web view and JSON API through WebTest, against `make_app` on a
FileStorage database with real jobs run by an in-process dispatcher."""

import base64
import datetime
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
import transaction
import webtest
from click.testing import CliRunner

import zasync
from zasync.interfaces import ConfigurationError
from zasync.testing import free_port
from zasync.web import make_app
from zasync.web.metrics import escape_label
from zasync.web.serve import is_loopback, parse_bind

import web_jobs

TOKEN = "t0ken-for-tests"
TIMEOUT = 30.0
HTML_ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"


def wait_until(predicate, timeout=TIMEOUT, what="the condition"):
    """Poll `predicate` until it is true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def change(db, do):
    """Call do(connection) in a transaction of its own, retried on
    ConflictError (a running dispatcher writes the same queue); return
    what it returns."""
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    try:
        for attempt in tm.attempts(10):
            with attempt:
                found = do(conn)
        return found
    finally:
        tm.abort()
        conn.close()


def put(db, func, *args, queue="", **options):
    """Put a job in its own transaction; return its id."""
    with db.transaction() as conn:
        job = zasync.get_queue(conn, queue).put(zasync.Job(func, *args), **options)
        return job.id


def look(db, job_id, attribute):
    """An attribute of a job (or what a function of the job returns),
    read in a fresh transaction."""
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    try:
        job = zasync.get_queues(conn).find_job(job_id)
        if job is None:
            return None
        return attribute(job) if callable(attribute) else getattr(job, attribute)
    finally:
        tm.abort()
        conn.close()


def wait_completed(db, job_id):
    wait_until(lambda: look(db, job_id, "status") == "completed",
               what=f"job {job_id} completing")


class Scene:
    """A database with one job in each state, and a dispatcher running:
    succeeded, failed (with HTML in its message), pending for an hour,
    pending in the 'mail' queue (no worker serves it) and running (held
    at a gate until the scene ends)."""

    def __init__(self, db, gate):
        self.db = db
        self.gate = gate
        self.dispatcher = zasync.Dispatcher(db, threads=2, poll_interval=0.05)
        self.dispatcher.start()
        self.ok = put(db, web_jobs.add, 1, 2)
        self.failed = put(db, web_jobs.fail_with_html)
        later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)
        self.pending = put(db, web_jobs.add, 5, 5, begin_after=later)
        self.mail = put(db, web_jobs.add, 7, 8, queue="mail")
        self.running = put(db, web_jobs.hold, gate)
        for job_id in (self.ok, self.failed):
            wait_completed(db, job_id)
        wait_until(lambda: look(db, self.running, "status") == "active"
                   and look(db, self.running, "progress") == 0.5,
                   what="the held job reporting its progress")

    def release(self):
        web_jobs.gates.setdefault(self.gate, __import__("threading").Event()).set()

    def stop(self):
        self.release()
        if self.dispatcher.running:
            wait_completed(self.db, self.running)
            self.dispatcher.stop(timeout=TIMEOUT)


@pytest.fixture
def scene(db, request):
    made = Scene(db, f"gate-{request.node.name}")
    yield made
    made.stop()


@pytest.fixture
def app(db):
    return webtest.TestApp(make_app(db, token=TOKEN, refresh=2))


def bearer(token=TOKEN):
    return {"Authorization": f"Bearer {token}"}


def basic(user, password):
    text = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {text}"}


def csrf(app):
    """The CSRF token of this browser's forms, from the login page (the
    one form a visitor sees before logging in)."""
    return app.get("/login").html.select_one('input[name="csrf_token"]')["value"]


def login(app, token=TOKEN, next_path="/"):
    page = app.get("/login", params={"next": next_path})
    form = page.forms["login-form"]
    form["token"] = token
    return form.submit(expect_errors=True)


# -- make_app and the command line ------------------------------------------------

def test_make_app_refuses_bad_arguments(db):
    with pytest.raises(ConfigurationError, match="refresh"):
        make_app(db, refresh=-1)
    with pytest.raises(ConfigurationError, match="not both"):
        make_app(db, token="a", username="u", password="p")
    with pytest.raises(ConfigurationError, match="go together"):
        make_app(db, username="u")
    with pytest.raises(ConfigurationError, match="non-empty"):
        make_app(db, token="")
    with pytest.raises(ConfigurationError, match="ZODB database"):
        make_app("var/Data.fs")


def test_parse_bind_and_loopback():
    assert parse_bind("127.0.0.1:8080") == ("127.0.0.1", 8080)
    assert parse_bind("[::1]:9000") == ("::1", 9000)
    for bad in ("8080", "host:", ":80", "h:99999", "h:x"):
        with pytest.raises(ConfigurationError, match="HOST:PORT"):
            parse_bind(bad)
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("example.com")


def test_web_command_help_and_bad_options():
    from zasync.cli.cli import main
    runner = CliRunner()
    result = runner.invoke(main, ["web", "--help"])
    assert result.exit_code == 0
    for option in ("--db", "--bind", "--token", "--user", "--password", "--refresh",
                   "127.0.0.1:8080", "ZASYNC_WEB_TOKEN", "read only"):
        assert option in result.output
    result = runner.invoke(main, ["web", "--db", "x.fs", "--token", "a", "--user", "u",
                                  "--password", "p"])
    assert result.exit_code == 2 and "not both" in result.output
    result = runner.invoke(main, ["web", "--db", "x.fs", "--user", "u"])
    assert result.exit_code == 2 and "go together" in result.output
    result = runner.invoke(main, ["web", "--db", "x.fs", "--bind", "nowhere"])
    assert result.exit_code == 2 and "HOST:PORT" in result.output


def test_web_command_serves_until_sigterm(tmp_path):
    path = str(tmp_path / "Data.fs")
    db = zasync.open_db(path)
    zasync.install(db)
    db.close()
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "zasync", "web", "--db", path,
         "--bind", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        def answers():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/summary",
                                            timeout=TIMEOUT) as reply:
                    return json.load(reply)["installed"] is True
            except OSError:
                assert process.poll() is None, process.stderr.read().decode()
                return False
        wait_until(answers, what="zasync web answering")
        # the first page compiles its templates: seconds on a loaded machine
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=TIMEOUT) as reply:
            page = reply.read().decode()
        assert "Read only: actions are disabled" in page
    finally:
        os.kill(process.pid, signal.SIGTERM)
        _, err = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 0, err.decode()
    assert f"serving http://127.0.0.1:{port}/" in err.decode()


# -- pages -------------------------------------------------------------------------

PAGES = ["/", "/jobs", "/running", "/workers", "/login", "/jobs?state=failure",
         "/jobs?queue=mail&status=pending", "/jobs?queue=", "/jobs?callable=add&page=1"]


@pytest.mark.parametrize("path", PAGES)
def test_every_page_renders_with_the_banner(app, scene, path):
    page = app.get(path)
    assert page.content_type == "text/html"
    assert page.text.startswith("<!DOCTYPE html>")
    assert page.html.select_one("#banner .n-running").text == "1"
    assert page.html.select_one("#banner .n-failed").text == "1"
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert page.headers["Cache-Control"] == "no-store"


def test_each_job_page_renders(app, scene):
    for job_id in (scene.ok, scene.failed, scene.pending, scene.mail, scene.running):
        page = app.get(f"/jobs/{job_id}")
        assert page.html.select_one(".job-page")["data-job"] == job_id


def test_overview_counts_queues_charts_and_workers(app, scene):
    page = app.get("/")
    cards = page.html.select("article.queue")
    assert len(cards) == 2
    default = cards[0]
    counts = {a["class"][1]: a.b.text for a in default.select("a.stat")}
    assert counts == {"pending": "1", "active": "1", "failed": "1", "completed": "2"}
    mail = {a["class"][1]: a.b.text for a in cards[1].select("a.stat")}
    assert mail == {"pending": "1", "active": "0", "failed": "0", "completed": "0"}
    bars = default.select("svg g")
    assert len(bars) == 60
    assert default.select("svg rect.ok") and default.select("svg rect.bad")
    assert "1 succeeded" in default.figcaption.text and "1 failed" in default.figcaption.text
    worker_row = page.html.select("table.grid tbody tr")[0]
    assert "alive" in worker_row.text and "1 / 2" in worker_row.text


def test_running_page_shows_progress_and_message(app, scene):
    page = app.get("/running")
    card = page.html.select_one(f'article.running-job[data-job="{scene.running}"]')
    assert card is not None
    assert card.select_one(".fill")["style"] == "width: 50.0%"
    assert card.select_one("p.message").text == "halfway"
    assert "web_jobs.hold" in card.text
    assert card.select("form") == []        # no action buttons before logging in
    login(app)
    card = app.get("/running").html.select_one(
        f'article.running-job[data-job="{scene.running}"]')
    assert [f.get("action") for f in card.select("form")] == [
        f"/jobs/{scene.running}/cancel"]


def test_job_page_shows_call_history_failure_and_traceback(app, scene):
    page = app.get(f"/jobs/{scene.failed}")
    text = page.html.text
    assert "web_jobs.fail_with_html" in text
    assert page.html.select_one(".exception .type").text == "RuntimeError"
    traceback = page.html.select_one("section.failure pre.traceback").text
    assert traceback.startswith("Traceback (most recent call last)")
    assert "raise RuntimeError(HTML_MESSAGE)" in traceback
    history = [row.select("td")[0].text for row in page.html.select("section table tbody tr")]
    assert history[:5] == ["new", "pending", "assigned", "active", "completed"]
    worker_cells = [row.select("td")[3].text for row in page.html.select("section table tbody tr")]
    assert scene.dispatcher.id in worker_cells
    assert page.html.select(".job-status form button") == []
    login(app)
    page = app.get(f"/jobs/{scene.failed}")
    buttons = [b.text for b in page.html.select(".job-status form button")]
    assert buttons == ["Retry", "Dismiss"]

    ok = app.get(f"/jobs/{scene.ok}")
    assert ok.html.select_one("pre.value").text == "3"
    assert "web_jobs.add(\n    1,\n    2,\n)" in ok.html.select_one("pre.call").text


def test_job_page_shows_attempts_annotations_and_truncates(app, db):
    big = "x" * 100_000
    with db.transaction() as conn:
        job = zasync.Job(web_jobs.add, big, 1)     # fails: str + int
        job.annotations["source"] = "<i>import</i>"
        zasync.get_queue(conn).put(job)
        job_id = job.id
    with zasync.Dispatcher(db, threads=1, poll_interval=0.05):
        wait_completed(db, job_id)
        def retry(conn):
            found = zasync.get_queues(conn).find_job(job_id)
            found.queue.retry(found)
        change(db, retry)
        wait_until(lambda: look(db, job_id, "attempt_count") == 2
                   and look(db, job_id, "status") == "completed", what="the second attempt")
    page = app.get(f"/jobs/{job_id}")
    assert len(page.body) < 60_000      # the argument is cut, not shown whole
    call = page.html.select_one("pre.call").text
    assert "xxx...xxx" in call and len(call) < 1000
    attempts = page.html.select("details.attempt")
    assert len(attempts) == 1 and "TypeError" in attempts[0].summary.text
    annotations = page.html.select("section table tbody tr")
    assert any(row.th.text == "source" and row.td.text == "'<i>import</i>'"
               for row in annotations if row.th)
    assert "<i>import</i>" not in page.text


def test_failure_message_with_html_is_shown_as_text_everywhere(app, scene):
    for path in (f"/jobs/{scene.failed}", "/jobs", "/", "/jobs?state=failure"):
        page = app.get(path)
        assert "<script>alert(1)</script>" not in page.text, path
        assert HTML_ESCAPED in page.text, path
        assert not page.html.select("b.injected"), path
        shown = page.html.select_one(".failure-text").text
        assert "<script>alert(1)</script>" in shown, path
    data = app.get(f"/api/jobs/{scene.failed}").json
    assert data["failure"]["message"] == web_jobs.HTML_MESSAGE
    assert data["message"] == "RuntimeError: " + web_jobs.HTML_MESSAGE


def test_html_in_a_callable_argument_is_escaped(app, db):
    job_id = put(db, web_jobs.add, "<img src=x onerror=alert(1)>", "")
    page = app.get(f"/jobs/{job_id}")
    assert "<img" not in page.text
    assert "&lt;img src=x onerror=alert(1)&gt;" in page.text


def test_pages_without_credential_say_actions_are_disabled(db, scene):
    read_only = webtest.TestApp(make_app(db))
    page = read_only.get(f"/jobs/{scene.failed}")
    assert "actions are disabled" in page.html.select_one(".session").text
    assert not page.html.select("form.action") and not page.html.select("form.dismiss")
    assert "nothing to log in to" in read_only.get("/login").text


# -- filters and paging ------------------------------------------------------------

def ids_of(reply):
    return [job["id"] for job in reply.json["jobs"]]


def test_filters_by_status_state_queue_callable_and_dismissed(app, scene):
    assert ids_of(app.get("/api/jobs", {"status": "pending"})) == [scene.mail, scene.pending]
    assert ids_of(app.get("/api/jobs", {"status": "active"})) == [scene.running]
    assert ids_of(app.get("/api/jobs", {"state": "pending"})) == [scene.mail, scene.pending]
    assert ids_of(app.get("/api/jobs", {"state": "started"})) == [scene.running]
    assert ids_of(app.get("/api/jobs", {"state": "success"})) == [scene.ok]
    assert ids_of(app.get("/api/jobs", {"state": "failure"})) == [scene.failed]
    assert ids_of(app.get("/api/jobs", {"state": "failure", "dismissed": "no"})) == [scene.failed]
    assert ids_of(app.get("/api/jobs", {"dismissed": "yes"})) == []
    assert ids_of(app.get("/api/jobs", {"queue": "mail"})) == [scene.mail]
    assert ids_of(app.get("/api/jobs", {"queue": ""})) == [
        scene.running, scene.pending, scene.failed, scene.ok]
    assert ids_of(app.get("/api/jobs", {"callable": "WEB_JOBS.ADD"})) == [
        scene.mail, scene.pending, scene.ok]
    assert ids_of(app.get("/api/jobs", {"callable": "fail", "queue": "*"})) == [scene.failed]
    page = app.get("/jobs", {"state": "failure"})
    assert [row["data-job"] for row in page.html.select("tr[data-job]")] == [scene.failed]
    assert page.html.select_one('select[name="state"] option[selected]').text == "failure"


@pytest.mark.parametrize("query", [
    {"status": "sleeping"}, {"state": "done"}, {"queue": "nope"}, {"page": "0"},
    {"page": "x"}, {"per_page": "100000"}, {"dismissed": "maybe"}])
def test_bad_filters_are_400(app, db, query):
    reply = app.get("/api/jobs", query, status=400)
    assert reply.json["result"] == "fail" and reply.json["message"]
    page = app.get("/jobs", query, status=400)
    assert "This filter is not understood" in page.text


def test_paging_newest_first(app, db):
    put_ids = [put(db, web_jobs.add, number, 0) for number in range(7)]
    newest_first = put_ids[::-1]
    first = app.get("/api/jobs", {"per_page": 3}).json
    assert ids_of_json(first) == newest_first[:3] and first["has_next"] is True
    assert first["page"] == 1 and first["per_page"] == 3
    second = app.get("/api/jobs", {"per_page": 3, "page": 2}).json
    assert ids_of_json(second) == newest_first[3:6] and second["has_next"] is True
    third = app.get("/api/jobs", {"per_page": 3, "page": 3}).json
    assert ids_of_json(third) == newest_first[6:] and third["has_next"] is False
    page = app.get("/jobs", {"per_page": 3, "page": 2})
    assert [row["data-job"] for row in page.html.select("tr[data-job]")] == newest_first[3:6]
    links = {a.text: a["href"] for a in page.html.select("nav.pager a")}
    assert links == {"← Newer": "/jobs?per_page=3", "Older →": "/jobs?page=3&per_page=3"}


def ids_of_json(data):
    return [job["id"] for job in data["jobs"]]


# -- the JSON API ------------------------------------------------------------------

def test_job_json_has_both_vocabularies(app, scene):
    listed = {job["id"]: job for job in app.get("/api/jobs").json["jobs"]}
    running = listed[scene.running]
    assert running["status"] == "active" and running["state"] == "started"
    assert running["progress"] == 0.5 and running["message"] == "halfway"
    assert datetime.datetime.fromisoformat(running["started_at"]).tzinfo is not None
    assert running["duration"] is None and running["result"] is None
    ok = listed[scene.ok]
    assert (ok["status"], ok["state"], ok["progress"], ok["result"]) == (
        "completed", "success", 1.0, "3")
    assert isinstance(ok["duration"], float) and ok["duration"] >= 0
    failed = listed[scene.failed]
    assert (failed["status"], failed["state"]) == ("completed", "failure")
    assert set(failed["failure"]) == {"type", "message", "traceback", "time"}
    assert failed["failure"]["type"] == "RuntimeError"
    assert listed[scene.pending]["state"] == "pending"
    for job in listed.values():
        assert 0.0 <= job["progress"] <= 1.0
        assert {"id", "queue", "callable", "status", "state", "message", "progress",
                "started_at", "duration", "result", "failure"} <= set(job)


def test_job_detail_json(app, scene):
    data = app.get(f"/api/jobs/{scene.ok}").json
    assert data["args"] == ["1", "2"] and data["kwargs"] == {}
    assert [entry["status"] for entry in data["status_history"]] == [
        "new", "pending", "assigned", "active", "completed"]
    assert data["status_history"][-1]["dispatcher_id"] == scene.dispatcher.id
    assert data["attempts"] == [] and data["annotations"] == {}
    assert data["queue"] == "" and data["callable"] == "web_jobs.add"


def test_queues_and_workers_json(app, scene):
    queues = {q["name"]: q for q in app.get("/api/queues").json["queues"]}
    assert set(queues) == {"", "mail"}
    default = queues[""]
    assert (default["pending"], default["active"], default["failed"], default["completed"]) == (
        1, 1, 1, 2)
    assert len(default["last_hour"]["succeeded"]) == 60
    assert sum(default["last_hour"]["succeeded"]) == 1 and sum(default["last_hour"]["failed"]) == 1
    # the scene's dispatcher serves the default queue only: the overview's warning
    assert not default["unserved"] and queues["mail"]["unserved"]
    workers = app.get("/api/workers").json["workers"]
    assert len(workers) == 1
    worker = workers[0]
    assert worker["id"] == scene.dispatcher.id and worker["health"] == "alive"
    assert worker["slots"] == 2 and worker["load"] == 1 and worker["jobs"] == [scene.running]
    assert worker["pid"] == os.getpid()
    summary = app.get("/api/summary").json
    assert summary["running"] == 1 and summary["failed"] == 1 and summary["serial"]


# -- actions through the JSON API -------------------------------------------------

#: An action and the scene's job it applies to.
ACTION_JOBS = [("cancel", "pending"), ("cancel", "running"), ("remove", "mail"),
               ("retry", "failed"), ("dismiss", "failed")]


def state_of(db, job_id):
    return look(db, job_id, lambda job: (
        job.status, job.dismissed, job.attempt_count, job.annotations.cancel_requested,
        job.queue_name))


@pytest.mark.parametrize("action, job_attr", ACTION_JOBS)
def test_api_actions_need_the_credential(app, db, scene, action, job_attr):
    job_id = getattr(scene, job_attr)
    before = state_of(db, job_id)
    for headers in ({}, bearer("wrong"), basic("u", TOKEN), {"Authorization": "Bearer"},
                    {"Authorization": "Basic !!!"}):
        reply = app.post(f"/api/jobs/{job_id}/{action}", headers=headers, status=401)
        assert reply.json == {"result": "fail", "message": reply.json["message"]}
        assert reply.headers["WWW-Authenticate"] == "Bearer"
    assert state_of(db, job_id) == before


def test_api_cancel_remove_retry_dismiss(app, db, scene):
    reply = app.post(f"/api/jobs/{scene.pending}/cancel", headers=bearer())
    assert reply.json["task_id"] == scene.pending and reply.json["result"] == "ok"
    assert look(db, scene.pending, "cancelled") is True

    reply = app.post(f"/api/jobs/{scene.mail}/remove", headers=bearer())
    assert reply.json["result"] == "ok"
    app.get(f"/api/jobs/{scene.mail}", status=404)

    reply = app.post(f"/api/jobs/{scene.running}/cancel", headers=bearer())
    assert "requested" in reply.json["message"]
    assert look(db, scene.running, lambda job: job.annotations.cancel_requested)
    scene.release()
    wait_completed(db, scene.running)
    assert look(db, scene.running, "cancelled") is True

    reply = app.post(f"/api/jobs/{scene.failed}/dismiss", headers=bearer())
    assert reply.json == {"task_id": scene.failed, "result": "ok",
                          "message": f"job {scene.failed} dismissed"}
    assert look(db, scene.failed, "dismissed") is True
    summary = app.get("/api/summary").json      # cancellations are not failures
    assert summary["failed"] == 0 and summary["cancelled"] == 2

    reply = app.post(f"/api/jobs/{scene.failed}/retry", headers=bearer())
    assert reply.json["result"] == "ok"
    wait_until(lambda: look(db, scene.failed, "attempt_count") == 2
               and look(db, scene.failed, "status") == "completed", what="the retry")
    assert len(look(db, scene.failed, "attempts")) == 1


@pytest.mark.parametrize("job_attr, action", [
    ("ok", "retry"), ("ok", "dismiss"), ("ok", "cancel"), ("ok", "remove"),
    ("pending", "retry"), ("pending", "dismiss"), ("running", "remove")])
def test_api_actions_refused_in_the_wrong_state(app, db, scene, job_attr, action):
    job_id = getattr(scene, job_attr)
    before = look(db, job_id, "status")
    reply = app.post(f"/api/jobs/{job_id}/{action}", headers=bearer(), status=409)
    assert reply.json["result"] == "fail" and job_id in reply.json["message"]
    assert look(db, job_id, "status") == before


def test_api_unknown_and_malformed_ids_and_actions_are_404(app, scene):
    for job_id in ("00000000000000000000", "..", "%3Cscript%3E", "a" * 200, "x y"):
        reply = app.get(f"/api/jobs/{job_id}", status=404)
        assert reply.json["result"] == "fail"
        reply = app.post(f"/api/jobs/{job_id}/cancel", headers=bearer(), status=404)
        assert reply.json["result"] == "fail"
    reply = app.post(f"/api/jobs/{scene.pending}/explode", headers=bearer(), status=404)
    assert "expected one of" in reply.json["message"]
    assert app.get("/api/nothing", status=404).json["result"] == "fail"


def test_api_actions_with_basic_auth(db, scene):
    app = webtest.TestApp(make_app(db, username="admin", password="pa:ss"))
    reply = app.post(f"/api/jobs/{scene.pending}/cancel", headers=basic("admin", "wrong"),
                     status=401)
    assert reply.headers["WWW-Authenticate"].startswith("Basic")
    app.post(f"/api/jobs/{scene.pending}/cancel", headers=bearer("pa:ss"), status=401)
    # a browser sending remembered basic credentials from another site
    headers = dict(basic("admin", "pa:ss"), Origin="http://evil.example")
    app.post(f"/api/jobs/{scene.pending}/cancel", headers=headers, status=403)
    assert look(db, scene.pending, "status") == "pending"
    reply = app.post(f"/api/jobs/{scene.pending}/cancel", headers=basic("admin", "pa:ss"))
    assert reply.json["result"] == "ok"


def test_api_actions_with_the_login_cookie_need_the_csrf_header(app, db, scene):
    assert login(app).status_int == 303
    reply = app.post(f"/api/jobs/{scene.pending}/cancel", status=403)
    assert "X-CSRF-Token" in reply.json["message"]
    token = csrf(app)
    reply = app.post(f"/api/jobs/{scene.pending}/cancel", headers={"X-CSRF-Token": token})
    assert reply.json["result"] == "ok"


def test_api_actions_disabled_without_a_credential(db, scene):
    app = webtest.TestApp(make_app(db))
    reply = app.post(f"/api/jobs/{scene.pending}/cancel", headers=bearer(), status=403)
    assert "disabled" in reply.json["message"]


# -- actions through the pages' forms ----------------------------------------------

def test_form_action_refused_until_logged_in_then_done(app, db, scene):
    page = app.get(f"/jobs/{scene.pending}")
    assert page.html.select("form.action") == []     # no buttons before logging in
    assert page.html.select("#banner form") == []
    # a form from a page opened in a session that has since ended
    here = f"/jobs/{scene.pending}"
    refused = app.post(here + "/cancel", {"csrf_token": csrf(app), "next": here},
                       status=403)
    assert "Log in first" in refused.text
    assert look(db, scene.pending, "status") == "pending"
    # every "Log in" link returns to the page, never to a GET of the action
    links = [a["href"] for a in refused.html.select("a") if a.text.strip() == "Log in"]
    assert len(links) == 2
    assert set(links) == {f"/login?next=%2Fjobs%2F{scene.pending}"}

    assert login(app, token="wrong").status_int == 403
    logged_in = login(app, next_path=f"/jobs/{scene.pending}")
    assert logged_in.status_int == 303
    assert logged_in.location.endswith(f"/jobs/{scene.pending}?done=login")
    page = logged_in.follow()
    assert "Logged in" in page.html.select_one(".notice").text
    forms = [f for f in page.forms.values() if f.action.endswith("/cancel")]
    done = forms[0].submit(status=303)
    assert done.location.endswith(f"/jobs/{scene.pending}?done=cancel&job={scene.pending}")
    assert "cancelled" in done.follow().html.select_one(".notice").text
    assert look(db, scene.pending, "cancelled") is True


@pytest.mark.parametrize("action, job_attr", ACTION_JOBS)
def test_form_actions_need_the_login_and_the_csrf_token(app, db, scene, action, job_attr):
    job_id = getattr(scene, job_attr)
    before = state_of(db, job_id)
    url = f"/jobs/{job_id}/{action}"
    token = csrf(app)
    assert "Log in first" in app.post(url, {"csrf_token": token}, status=403).text
    login(app)
    assert "expired" in app.post(url, status=403).text
    assert "expired" in app.post(url, {"csrf_token": "forged"}, status=403).text
    # a token from another browser (another CSRF cookie) does not serve
    other = webtest.TestApp(app.app)
    other_token = csrf(other)
    app.post(url, {"csrf_token": other_token}, status=403)
    assert state_of(db, job_id) == before
    reply = app.post(url, {"csrf_token": token})
    assert reply.status_int == 303 and f"done={action}" in reply.location
    assert state_of(db, job_id) != before


def test_an_action_is_retried_on_conflict(app, db, scene, monkeypatch):
    """A concurrent commit that writes the same job makes the action's
    commit raise ConflictError; it runs again, in a fresh transaction."""
    from zasync.web import actions
    calls = []
    dismiss = actions.DO["dismiss"]

    def interfering(job):
        calls.append(job.id)
        if len(calls) == 1:
            def rewrite(conn):
                other = zasync.get_queues(conn).find_job(job.id)
                other.priority = other.priority + 1      # writes the job
            change(db, rewrite)
        return dismiss(job)
    monkeypatch.setitem(actions.DO, "dismiss", interfering)
    reply = app.post(f"/api/jobs/{scene.failed}/dismiss", headers=bearer())
    assert reply.json["result"] == "ok"
    assert calls == [scene.failed, scene.failed]
    assert look(db, scene.failed, "dismissed") is True
    assert look(db, scene.failed, "priority") == 1


def test_form_action_with_bearer_still_needs_csrf_and_next_stays_local(app, db, scene):
    token = csrf(app)
    reply = app.post(f"/jobs/{scene.failed}/dismiss",
                     {"csrf_token": token, "next": "//evil.example/x"}, headers=bearer())
    assert reply.location.endswith(f"/jobs/{scene.failed}?done=dismiss&job={scene.failed}")
    page = reply.follow()
    assert page.html.select_one("#banner .n-failed").text == "0"
    assert not page.html.select("#banner .failures li")


def test_form_remove_goes_back_to_the_list_and_wrong_state_is_409(app, db, scene):
    login(app)
    token = csrf(app)
    reply = app.post(f"/jobs/{scene.mail}/remove",
                     {"csrf_token": token, "next": f"/jobs/{scene.mail}"})
    assert reply.location.endswith(f"/jobs?done=remove&job={scene.mail}")
    app.get(f"/jobs/{scene.mail}", status=404)
    page = app.post(f"/jobs/{scene.ok}/retry", {"csrf_token": token}, status=409)
    assert "only a failed job can be retried" in page.text


def test_logout_ends_the_session(app, db, scene):
    login(app)
    page = app.get("/")
    assert page.html.select_one(".session .who").text == "Logged in"
    page = page.forms[[k for k, f in page.forms.items() if f.action.endswith("/logout")][0]
                      ].submit().follow()
    assert "Log in" in page.html.select_one(".session").text
    token = csrf(app)
    app.post(f"/jobs/{scene.pending}/cancel", {"csrf_token": token}, status=403)


def test_form_actions_disabled_without_a_credential(db, scene):
    app = webtest.TestApp(make_app(db))
    token = app.get("/").html.select_one('input[name="csrf_token"]')
    assert token is None        # no form at all
    page = app.post(f"/jobs/{scene.pending}/cancel", status=403)
    assert "Actions are disabled" in page.text


# -- reading never writes; errors -----------------------------------------------------

def test_get_never_changes_anything(app, db, scene):
    scene.stop()
    storage = db.storage
    before = (db.lastTransaction(), len(storage), os.path.getsize(storage.getName()))
    for path in PAGES + [f"/jobs/{job_id}" for job_id in (
            scene.ok, scene.failed, scene.pending, scene.mail, scene.running)] + [
            "/api/jobs", f"/api/jobs/{scene.failed}", "/api/queues", "/api/workers",
            "/api/summary", "/metrics"]:
        app.get(path, headers=bearer())
    for action in ("cancel", "retry", "dismiss", "remove"):
        for prefix in ("", "/api"):
            app.get(f"{prefix}/jobs/{scene.pending}/{action}", headers=bearer(), status=405)
            app.get(f"{prefix}/jobs/{scene.failed}/{action}", headers=bearer(), status=405)
    app.get("/logout", status=405)
    assert (db.lastTransaction(), len(storage), os.path.getsize(storage.getName())) == before


def test_unknown_pages_and_jobs_are_404_without_a_traceback(app, scene):
    for path in ("/jobs/00000000000000000000", "/jobs/%3Cb%3Ex", "/jobs/" + "z" * 300,
                 "/nothing", "/jobs/a/b/c"):
        page = app.get(path, status=404)
        assert "Traceback" not in page.text and "<b>x" not in page.text
        assert page.content_type == "text/html"
    assert app.post("/static/zasync.css", status=405)
    assert "progress" in app.get("/static/zasync.css").text
    app.get("/static/../app.py", status=[403, 404])


@pytest.mark.skipif(not (3, 11) <= sys.version_info < (3, 11, 8),
                    reason="only CPython 3.11 before 3.11.8 fails an AST that another "
                           "thread builds at the same time (gh-106905)")
def test_the_first_view_of_a_page_survives_another_thread_building_an_ast():
    # A page is compiled at its first view in a process; in a Zope
    # instance over ZEO, the first job page answered 500 (SystemError from
    # Chameleon) while a worker formatted the traceback of a ConflictError.
    # tests/ast_race_page.py forces that race in a fresh process.
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ast_race_page.py")
    done = subprocess.run([sys.executable, script], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found["raced"] > 0, "no AST was built during the page's compilation"
    assert found["status"] == 200, found["log"]
    assert any(line.startswith("web: compiling job.pt met CPython 3.11's AST race")
               for line in found["log"]), found["log"]


def test_not_installed_database(tmp_path):
    db = zasync.open_db(str(tmp_path / "Empty.fs"))
    try:
        app = webtest.TestApp(make_app(db))
        page = app.get("/", status=503)
        assert "not installed" in page.text
        assert app.get("/api/jobs", status=503).json["result"] == "fail"
        assert app.get("/api/summary").json["installed"] is False
    finally:
        db.close()


def test_mounted_under_a_prefix(db, scene):
    inner = make_app(db, token=TOKEN)

    def mounted(environ, start_response):
        environ["SCRIPT_NAME"] += "/ops"
        environ["PATH_INFO"] = environ["PATH_INFO"][len("/ops"):]
        return inner(environ, start_response)

    app = webtest.TestApp(mounted)
    page = app.get("/ops/jobs")
    assert page.html.select_one("nav a")["href"] == "/ops/"
    assert page.html.select_one('link[rel="stylesheet"]')["href"] == "/ops/static/zasync.css"
    assert "Path=/ops" in app.get("/ops/login").headers["Set-Cookie"]
    assert "data-live" in app.get("/ops/static/zasync.js").text
    form = app.get("/ops/login", {"next": "/jobs"}).forms["login-form"]
    assert form.action == "/ops/login"
    form["token"] = TOKEN
    reply = form.submit()
    assert reply.location.endswith("/ops/jobs?done=login")
    assert "Path=/ops" in reply.headers["Set-Cookie"]


# -- metrics ---------------------------------------------------------------------------

SAMPLE = re.compile(
    r'[a-zA-Z_:][a-zA-Z0-9_:]*'
    r'(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\["\\n])*",?)*\})?'
    r' (-?[0-9.e+-]+|NaN|[+-]Inf)')


def parse_metrics(text):
    samples = {}
    families = set()
    for line in text.splitlines():
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            families.add(line.split()[2])
            continue
        assert SAMPLE.fullmatch(line), line
        name_labels, _, value = line.rpartition(" ")
        samples[name_labels] = float(value)
    return samples, families


def test_metrics_format_and_values(app, scene):
    reply = app.get("/metrics")
    assert reply.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    samples, families = parse_metrics(reply.text)
    assert {"zasync_jobs", "zasync_jobs_failed_undismissed", "zasync_jobs_completed_last_hour",
            "zasync_jobs_running", "zasync_workers", "zasync_worker_health"} <= families
    assert samples['zasync_jobs{queue="",status="pending"}'] == 1
    assert samples['zasync_jobs{queue="",status="active"}'] == 1
    assert samples['zasync_jobs{queue="",status="completed"}'] == 2
    assert samples['zasync_jobs{queue="mail",status="pending"}'] == 1
    assert samples['zasync_jobs_failed_undismissed{queue=""}'] == 1
    assert samples['zasync_jobs_completed_last_hour{queue="",outcome="success"}'] == 1
    assert samples['zasync_jobs_completed_last_hour{queue="",outcome="failure"}'] == 1
    assert samples["zasync_jobs_running"] == 1
    assert samples['zasync_workers{health="alive"}'] == 1
    worker = scene.dispatcher.id
    assert samples[f'zasync_worker_health{{worker="{worker}",host="{os.uname().nodename}",'
                   f'health="alive"}}'] == 1


def test_metrics_escape_label_values(db):
    odd = 'we"ird\\queue\nname'
    zasync.install(db, (odd,))
    reply = webtest.TestApp(make_app(db)).get("/metrics")
    samples, _ = parse_metrics(reply.text)
    assert samples['zasync_jobs{queue="we\\"ird\\\\queue\\nname",status="pending"}'] == 0
    assert escape_label('a"b\\c\nd') == 'a\\"b\\\\c\\nd'


# -- jobs whose code this process cannot import -------------------------------------

def test_jobs_whose_code_cannot_be_imported(tmp_path, monkeypatch):
    """The view reads such jobs (ZODB shows their callables and arguments as
    broken objects), and its actions work on them."""
    folder = tmp_path / "code"
    folder.mkdir()
    (folder / "vanishing_jobs.py").write_text(
        "class Thing:\n    pass\n\n\ndef boom(thing):\n    raise ValueError('boom')\n")
    monkeypatch.syspath_prepend(str(folder))
    import vanishing_jobs
    path = str(tmp_path / "Data.fs")
    db = zasync.open_db(path)
    zasync.install(db)
    job_id = put(db, vanishing_jobs.boom, vanishing_jobs.Thing())
    with zasync.Dispatcher(db, threads=1, poll_interval=0.05):
        wait_completed(db, job_id)
    db.close()
    monkeypatch.delitem(sys.modules, "vanishing_jobs")
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(folder)])

    db = zasync.open_db(path)
    try:
        app = webtest.TestApp(make_app(db, token=TOKEN))
        data = app.get(f"/api/jobs/{job_id}").json
        assert data["callable"] == "vanishing_jobs.boom"
        assert data["args"] == ["<broken vanishing_jobs.Thing instance>"]
        assert data["failure"]["message"] == "boom"
        page = app.get(f"/jobs/{job_id}")
        assert "vanishing_jobs.boom" in page.html.select_one("h1").text
        # The action writes the job's record alone, which holds no code
        # (its call is a record of its own): it works here too.
        reply = app.post(f"/api/jobs/{job_id}/dismiss", headers=bearer())
        assert reply.json["result"] == "ok"
        assert look(db, job_id, "dismissed") is True
    finally:
        db.close()


def test_a_job_cancelled_before_any_claim_is_still_listed(app, db):
    """Cancelled while still in the queue's inbox, with no worker to file
    it, the job is only in the history's merging set: still listed."""
    job_id = put(db, web_jobs.add, 1, 1)
    app.post(f"/api/jobs/{job_id}/cancel", headers=bearer())
    assert ids_of(app.get("/api/jobs")) == [job_id]
    assert ids_of(app.get("/api/jobs", {"state": "failure", "dismissed": "no"})) == [job_id]
    assert app.get(f"/api/jobs/{job_id}").json["status"] == "completed"


def test_host_check_refuses_other_names():
    from zasync.web.serve import HostCheck

    def hello(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"hello"]
    app = webtest.TestApp(HostCheck(hello, ("127.0.0.1", "localhost", "::1", "ops.example")))
    for host in ("127.0.0.1:8080", "localhost", "[::1]:8080", "OPS.example:443"):
        assert app.get("/", headers={"Host": host}).text == "hello"
    for host in ("evil.example", "evil.example:8080", "127.0.0.1.evil.example"):
        reply = app.get("/", headers={"Host": host}, status=400)
        assert "unexpected Host" in reply.text


def test_api_index_lists_the_endpoints_and_each_get_answers(db):
    app = webtest.TestApp(make_app(db, token=TOKEN), extra_environ={"SCRIPT_NAME": "/jobs"})
    reply = app.get("/api/")
    assert reply.content_type == "application/json"
    listed = {(e["method"], e["path"]): e for e in reply.json["endpoints"]}
    for route in ("GET /api/jobs", "GET /api/jobs/{id}", "POST /api/jobs/{id}/{action}",
                  "GET /api/queues", "GET /api/workers", "GET /api/schedules",
                  "POST /api/schedules/{name}/remove", "GET /api/summary",
                  "GET /metrics"):
        method, path = route.split(" ")
        assert (method, path) in listed, route
        assert listed[(method, path)]["description"]
    # Each GET without a placeholder answers at the address the index gives.
    for (method, path), entry in listed.items():
        assert entry["url"] == "/jobs" + path
        if method == "GET" and "{" not in path:
            assert app.get(path).status_int == 200, path
    assert app.get("/api").json == reply.json
