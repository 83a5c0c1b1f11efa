"""Bulk actions of the web view and its API, the banner's cancellations,
and the credential rules: buttons only once logged in, the throttle on
wrong credentials, and reading that requires the login.  WebTest against
`make_app` on a FileStorage database whose jobs a real dispatcher ran."""

import datetime
import logging

import pytest
import webtest
from click.testing import CliRunner

import zasync
from zasync.interfaces import ConfigurationError
from zasync.web import bulk, make_app
from zasync.web.guard import Throttle

import web_jobs
from test_web import TOKEN, bearer, change, csrf, login, look, put, wait_completed

LATER = datetime.timedelta(hours=1)


class Failures:
    """Five failures of `web_jobs.fail`, two of `web_jobs.fail_with_html`,
    one success, and two pending jobs cancelled (failed as Cancelled)."""

    def __init__(self, db):
        with zasync.Dispatcher(db, threads=2, poll_interval=0.05):
            self.plain = [put(db, web_jobs.fail, f"plain {n}") for n in range(5)]
            self.html = [put(db, web_jobs.fail_with_html) for _ in range(2)]
            self.ok = put(db, web_jobs.add, 1, 2)
            for job_id in self.plain + self.html + [self.ok]:
                wait_completed(db, job_id)
        later = datetime.datetime.now(datetime.timezone.utc) + LATER
        self.cancelled = [put(db, web_jobs.add, n, n, begin_after=later) for n in range(2)]

        def cancel(conn):
            for job_id in self.cancelled:
                zasync.get_queues(conn).find_job(job_id).cancel()
        change(db, cancel)


@pytest.fixture
def failures(db):
    return Failures(db)


@pytest.fixture
def app(db):
    return webtest.TestApp(make_app(db, token=TOKEN, refresh=2))


def dismissed(db, ids):
    return [look(db, job_id, "dismissed") for job_id in ids]


def bulk_form(page):
    return page.forms["bulk-form"]


# -- the list page's bulk form ---------------------------------------------------

def test_bulk_dismiss_of_all_matching_a_filter_is_confirmed_with_the_count(app, db, failures):
    login(app)
    page = app.get("/jobs", {"state": "failure", "callable": "fail_with_html"})
    assert len(page.html.select("tr[data-job]")) == 2
    form = bulk_form(page)
    form["action"] = "dismiss"
    confirm = form.submit("scope", value="all")
    assert confirm.status_int == 200
    assert confirm.html.select_one("h1").text == "Dismiss 2 jobs?"
    assert confirm.html.select_one(".bulk-count").text == "2"
    assert {li["data-job"] for li in confirm.html.select(".bulk-jobs li[data-job]")} \
        == set(failures.html)
    assert dismissed(db, failures.html) == [False, False]     # nothing done yet

    done = confirm.forms["bulk-confirm"].submit()
    assert done.status_int == 303
    assert "done=bulk-dismiss" in done.location and "count=2" in done.location
    assert "callable=fail_with_html" in done.location          # back to the list
    page = done.follow()
    assert page.html.select_one(".notice").text == "2 failures dismissed."
    assert dismissed(db, failures.html) == [True, True]
    assert dismissed(db, failures.plain) == [False] * 5
    assert page.html.select_one("#banner .n-failed").text == "5"


def test_bulk_action_on_the_checked_rows(app, db, failures):
    login(app)
    page = app.get("/jobs", {"state": "failure", "cancelled": "no"})
    form = bulk_form(page)
    boxes = form.fields["job"]
    picked = failures.plain[:2]
    for box in boxes:
        box.checked = box._value in picked
    form["action"] = "retry"
    confirm = form.submit("scope", value="checked")
    assert confirm.html.select_one("h1").text == "Retry 2 jobs?"
    done = confirm.forms["bulk-confirm"].submit()
    assert "done=bulk-retry" in done.location and "count=2" in done.location
    for job_id in picked:
        assert look(db, job_id, "status") == "pending"
    assert look(db, failures.plain[2], "status") == "completed"


def test_checked_rows_not_in_a_state_for_the_action_are_counted_apart(app, db, failures):
    login(app)
    token = csrf(app)
    confirm = app.post("/bulk/dismiss", {"csrf_token": token, "scope": "checked",
                                         "job": [failures.ok, failures.plain[0]]})
    assert confirm.html.select_one(".bulk-count").text == "1"
    assert "1 of the checked rows is not failures to dismiss" in confirm.text
    nothing = app.post("/bulk/cancel", {"csrf_token": token, "scope": "checked",
                                        "job": [failures.ok]})
    assert "There are no jobs to cancel among the checked rows" in nothing.text
    assert nothing.html.select("#bulk-confirm") == []


def test_all_matching_is_bounded_and_the_confirmation_says_so(app, db, failures,
                                                              monkeypatch):
    monkeypatch.setattr(bulk, "BULK_LIMIT", 3)
    monkeypatch.setattr(bulk, "BATCH", 2)         # and done in two transactions
    login(app)
    token = csrf(app)
    confirm = app.post("/bulk/dismiss", {"csrf_token": token, "scope": "all",
                                         "state": "failure", "cancelled": "no"})
    assert confirm.html.select_one(".bulk-count").text == "3"
    assert "only the newest 3 are taken at once" in confirm.text
    done = confirm.forms["bulk-confirm"].submit()
    assert "count=3" in done.location
    assert sum(dismissed(db, failures.plain + failures.html)) == 3
    # more ids than the limit are refused, not cut silently
    reply = app.post("/bulk/dismiss", {"csrf_token": token, "confirm": "yes",
                                       "job": failures.plain}, status=400)
    assert "at most 3" in reply.text


def test_a_batch_is_retried_on_conflict(app, db, failures, monkeypatch):
    """A concurrent commit writing a job of the second batch makes that
    batch's commit conflict; it runs again, and the first batch is not
    redone."""
    from zasync.web import actions
    monkeypatch.setattr(bulk, "BATCH", 3)
    calls = []
    dismiss = actions.DO["dismiss"]
    target = failures.plain[3]           # in the second batch of 3

    def interfering(job):
        calls.append(job.id)
        if job.id == target and calls.count(target) == 1:
            def rewrite(conn):
                other = zasync.get_queues(conn).find_job(job.id)
                other.priority = other.priority + 1
            change(db, rewrite)
        return dismiss(job)
    monkeypatch.setitem(actions.DO, "dismiss", interfering)
    reply = app.post_json("/api/bulk/dismiss", {"ids": failures.plain}, headers=bearer())
    assert reply.json["count"] == 5 and reply.json["skipped"] == []
    assert calls == failures.plain[:3] + failures.plain[3:] * 2
    assert dismissed(db, failures.plain) == [True] * 5
    assert look(db, target, "priority") == 1


def test_bulk_forms_need_the_login_and_the_csrf_token(app, db, failures):
    token = csrf(app)
    fields = {"csrf_token": token, "scope": "all", "state": "failure", "next": "/jobs"}
    refused = app.post("/bulk/dismiss", fields, status=403)
    assert "Log in first" in refused.text
    login(app)
    assert "expired" in app.post("/bulk/dismiss", dict(fields, csrf_token="forged"),
                                 status=403).text
    assert "expired" in app.post("/bulk/dismiss", dict(fields, csrf_token="", confirm="yes",
                                                       job=failures.plain), status=403).text
    app.post("/bulk/explode", fields, status=404)
    assert "expected one of" in app.post("/bulk/dismiss", dict(fields, state="weird"),
                                         status=400).text
    assert "is not a job id" in app.post("/bulk/dismiss", dict(
        fields, confirm="yes", job="../x"), status=400).text
    assert not any(dismissed(db, failures.plain + failures.html))


def test_the_bulk_form_is_shown_only_once_logged_in(app, failures):
    page = app.get("/jobs")
    assert "bulk-form" not in page.forms
    assert page.html.select('input[type="checkbox"]') == []
    login(app)
    page = app.get("/jobs", {"state": "failure"})
    form = bulk_form(page)
    assert form.action == "/bulk"
    assert form["state"].value == "failure"        # the filter goes with it
    assert len(page.html.select('input[type="checkbox"][form="bulk-form"]')) == 9


# -- the JSON API -----------------------------------------------------------------

def test_api_bulk_with_ids_with_a_filter_and_a_dry_run(app, db, failures):
    reply = app.post_json("/api/bulk/dismiss", {
        "all": True, "filter": {"callable": "fail_with_html"}, "dry_run": True},
        headers=bearer())
    assert reply.json["dry_run"] is True and reply.json["count"] == 2
    assert sorted(reply.json["ids"]) == sorted(failures.html)
    assert dismissed(db, failures.html) == [False, False]

    reply = app.post_json("/api/bulk/dismiss", {
        "all": True, "filter": {"callable": "fail_with_html"}}, headers=bearer())
    assert reply.json["result"] == "ok" and reply.json["count"] == 2
    assert reply.json["more"] is False and reply.json["limit"] == bulk.BULK_LIMIT
    assert dismissed(db, failures.html) == [True, True]

    reply = app.post("/api/bulk/retry", {"id": [failures.plain[0], failures.ok]},
                     headers=bearer())
    assert reply.json["done"] == [failures.plain[0]]
    assert reply.json["skipped"] == [failures.ok]

    reply = app.post_json("/api/bulk/cancel", {"ids": [failures.plain[0]]},
                          headers=bearer())       # pending again after the retry
    assert reply.json["done"] == [failures.plain[0]]
    wait_completed(db, failures.plain[0])
    assert look(db, failures.plain[0], "cancelled") is True


@pytest.mark.parametrize("body, message", [
    ({}, "name the jobs"),
    ({"ids": ["a"], "all": True}, "not both"),
    ({"ids": "abc"}, "must be a list"),
    ({"ids": ["../etc"]}, "is not a job id"),
    ({"all": True, "filter": {"state": "weird"}}, "state='weird'"),
    ({"all": True, "filter": {"state": 3}}, "object of strings"),
    ([1, 2], "JSON object"),
])
def test_api_bulk_bad_requests_are_400(app, failures, body, message):
    reply = app.post_json("/api/bulk/dismiss", body, headers=bearer(), status=400)
    assert reply.json["result"] == "fail" and message in reply.json["message"]


def test_api_bulk_needs_the_credential_and_csrf_for_the_cookie(app, db, failures):
    body = {"all": True, "filter": {"state": "failure"}}
    reply = app.post_json("/api/bulk/dismiss", body, status=401)
    assert reply.headers["WWW-Authenticate"] == "Bearer"
    app.post_json("/api/bulk/dismiss", body, headers=bearer("wrong"), status=401)
    login(app)
    reply = app.post_json("/api/bulk/dismiss", body, status=403)
    assert "X-CSRF-Token" in reply.json["message"]
    app.post_json("/api/bulk/nothing", body, headers=bearer(), status=404)
    assert not any(dismissed(db, failures.plain + failures.html))
    reply = app.post_json("/api/bulk/dismiss", body, headers={"X-CSRF-Token": csrf(app)})
    assert reply.json["count"] == 9           # the cancellations too: no filter on them
    assert app.get("/api/summary").json["failed"] == 0


# -- the banner ------------------------------------------------------------------------

def fail_and_cancel(db, failed, cancelled):
    """`failed` failures and `cancelled` cancellations, all filed into the
    history by a claim."""
    with db.transaction() as conn:
        queue = zasync.get_queue(conn)
        jobs = [queue.put(zasync.Job(web_jobs.fail, f"failure {n}")).id
                for n in range(failed)]
        later = datetime.datetime.now(datetime.timezone.utc) + LATER
        for n in range(cancelled):
            queue.put(zasync.Job(web_jobs.add, n, n), begin_after=later).cancel()
    # (one dispatcher id: the pages read each dispatcher's record)
    with zasync.Dispatcher(db, threads=2, poll_interval=0.05, id="worker"):
        for job_id in jobs:
            wait_completed(db, job_id)
    with db.transaction() as conn:
        zasync.get_queue(conn).claim("filer", 0)     # files what the workers left


def newest_failures(db, count):
    """Ids of the `count` failures (not cancellations) not dismissed that
    ended last, found by loading them all."""
    with db.transaction() as conn:
        failed = [job for job in zasync.get_queue(conn).jobs()
                  if job.failed and not job.cancelled and not job.dismissed]
        failed.sort(key=lambda job: (job.ended_at, job.id), reverse=True)
        return [job.id for job in failed[:count]]


def loaded_by(db, app, path):
    """Objects that answering `path` loads, from empty caches."""
    db.cacheMinimize()
    assert db.cacheSize() == 0
    reply = app.get(path)
    return db.cacheSize(), reply


def test_the_banner_loads_no_more_jobs_with_more_failures(app, db):
    # The histories keep the counts and list the failures newest first:
    # the banner loads the five it names, not every failure to sort them.
    # (More than a bucket of failures before, so that the tree has the
    # same depth before and after.)
    fail_and_cancel(db, 6, 60)
    summary_before, reply = loaded_by(db, app, "/api/summary")
    assert (reply.json["failed"], reply.json["cancelled"]) == (6, 60)
    page_before, page = loaded_by(db, app, "/workers")
    assert page.html.select_one("#banner .n-failed").text == "6"

    fail_and_cancel(db, 150, 150)
    summary_after, reply = loaded_by(db, app, "/api/summary")
    assert (reply.json["failed"], reply.json["cancelled"]) == (156, 210)
    page_after, page = loaded_by(db, app, "/workers")
    assert page.html.select_one("#banner .n-failed").text == "156"
    assert page.html.select_one("#banner .n-cancelled").text == "210"
    listed = [li["data-job"] for li in page.html.select("#banner details.failures li[data-job]")]
    assert listed == newest_failures(db, 5)
    assert (summary_after, page_after) == (summary_before, page_before)


def test_the_list_of_failures_to_look_at_loads_one_page_with_more_failures(app, db):
    # The banner's "and N more" link lists the failures not dismissed,
    # newest end first as the banner does: one page's jobs are loaded, not
    # every failure to sort them (391 objects loaded before, against 82).
    path = "/api/jobs?state=failure&dismissed=no&cancelled=no&per_page=5"
    fail_and_cancel(db, 6, 60)
    loaded_before, reply = loaded_by(db, app, path)
    assert [job["id"] for job in reply.json["jobs"]] == newest_failures(db, 5)
    assert reply.json["has_next"]

    fail_and_cancel(db, 150, 150)
    loaded_after, reply = loaded_by(db, app, path)
    assert [job["id"] for job in reply.json["jobs"]] == newest_failures(db, 5)
    page = app.get(path.replace("/api", "") + "&page=32")
    assert [row["data-job"] for row in page.html.select("tr[data-job]")] == \
        newest_failures(db, 156)[155:]
    assert loaded_after == loaded_before


def test_banner_counts_cancellations_apart_and_lists_details_on_demand(app, db, failures):
    page = app.get("/")
    assert page.html.select_one("#banner .n-failed").text == "7"
    assert page.html.select_one("#banner .n-cancelled").text == "2"
    listed = [li["data-job"] for li in page.html.select("#banner details.failures li[data-job]")]
    assert len(listed) == 5 and not set(listed) & set(failures.cancelled)
    assert page.html.select_one("#banner details.failures").get("open") is None
    assert page.html.select("#banner form") == []          # not logged in
    summary = app.get("/api/summary").json
    assert (summary["failed"], summary["cancelled"]) == (7, 2)

    login(app)
    page = app.get("/")
    buttons = [b.text for b in page.html.select("#banner form.bulk-dismiss button")]
    assert buttons == ["Dismiss all 7 failures…", "Dismiss all 2 cancellations…"]
    form = [f for f in page.forms.values() if f.action == "/bulk/dismiss"][1]
    confirm = form.submit()
    assert confirm.html.select_one("h1").text == "Dismiss 2 jobs?"
    page = confirm.forms["bulk-confirm"].submit().follow()
    assert dismissed(db, failures.cancelled) == [True, True]
    assert page.html.select_one("#banner .n-failed").text == "7"
    assert page.html.select("#banner .n-cancelled") == []


# -- credentials -------------------------------------------------------------------------

def test_throttle_counts_failures_per_client_within_its_window():
    now = [100.0]
    throttle = Throttle(limit=3, window=60, clock=lambda: now[0])
    for _ in range(2):
        throttle.failed("10.0.0.1", "test")
    assert throttle.wait("10.0.0.1") == 0
    now[0] += 10
    throttle.failed("10.0.0.1", "test")
    assert throttle.wait("10.0.0.1") == pytest.approx(50)    # the first one expires at 160
    assert throttle.wait("10.0.0.2") == 0                     # another client
    now[0] = 160.5
    assert throttle.wait("10.0.0.1") == 0


def test_wrong_credentials_are_logged_and_then_answered_429(app, db, caplog):
    caplog.set_level(logging.WARNING, logger="zasync.web.guard")
    app.get("/api/jobs", headers=bearer("guess"), status=200)   # reading is open
    for _ in range(5):
        app.post("/api/jobs/abc/cancel", headers=bearer("guess"), status=401)
    reply = app.post("/api/jobs/abc/cancel", headers=bearer(), status=429)
    assert "too many wrong credentials" in reply.json["message"]
    assert 1 <= int(reply.headers["Retry-After"]) <= 60
    warnings = [r.getMessage() for r in caplog.records if "wrong credential" in r.getMessage()]
    assert len(warnings) == 5 and "from unknown" in warnings[0]   # WebTest has no address
    assert "5 failure(s) in the last 60 s" in warnings[-1]
    # the login form is throttled too, and reading without a credential is not
    app.get("/login")
    assert "429" in app.post("/login", {"token": TOKEN}, status=429).text
    app.get("/jobs", status=200)


def test_wrong_login_form_attempts_are_throttled(db):
    app = webtest.TestApp(make_app(db, token=TOKEN),
                          extra_environ={"REMOTE_ADDR": "192.0.2.7"})
    other = webtest.TestApp(app.app, extra_environ={"REMOTE_ADDR": "192.0.2.8"})
    for _ in range(5):
        assert login(app, token="guess").status_int == 403
    assert login(app).status_int == 429                 # even the right token
    assert login(other).status_int == 303               # another address is not


def test_require_login_for_reading(db, failures):
    with pytest.raises(ConfigurationError, match="require_login"):
        make_app(db, require_login=True)
    app = webtest.TestApp(make_app(db, token=TOKEN, require_login=True))
    reply = app.get("/jobs", {"state": "failure"}, status=303)
    assert reply.location.endswith("/login?next=%2Fjobs%3Fstate%3Dfailure")
    page = reply.follow()
    assert page.html.select("#banner") == []            # no job shown to a stranger
    assert page.html.select_one("body")["data-refresh"] == "0"
    for path in ("/api/jobs", "/api/summary", f"/api/jobs/{failures.ok}", "/metrics"):
        assert app.get(path, status=401).headers["WWW-Authenticate"] == "Bearer"
    app.get("/static/zasync.css", status=200)
    assert app.get("/api/jobs", headers=bearer()).json["jobs"]
    form = page.forms["login-form"]
    form["token"] = TOKEN
    back = form.submit()
    assert back.location.endswith("/jobs?state=failure&done=login")
    assert back.follow().html.select_one("#banner .n-failed").text == "7"


def test_web_command_require_login_needs_a_credential():
    from zasync.cli import main
    result = CliRunner().invoke(main, ["web", "--db", "memory://", "--require-login"])
    assert result.exit_code == 2
    assert "--require-login needs a credential" in result.output


def test_all_matching_a_search_takes_the_jobs_the_list_shows(app, db, failures):
    login(app)
    page = app.get("/jobs", {"q": "plain"})
    shown = {tr["data-job"] for tr in page.html.select("tr[data-job]")}
    assert shown == set(failures.plain)
    form = bulk_form(page)
    form["action"] = "dismiss"
    confirm = form.submit("scope", value="all")
    assert confirm.html.select_one(".bulk-count").text == "5"
    confirm.forms["bulk-confirm"].submit()
    assert dismissed(db, failures.plain) == [True] * 5
    assert dismissed(db, failures.html) == [False, False]


def test_the_cancelled_filter_lists_only_cancellations(app, failures):
    page = app.get("/jobs", {"cancelled": "yes"})
    assert {tr["data-job"] for tr in page.html.select("tr[data-job]")} \
        == set(failures.cancelled)
    page = app.get("/jobs", {"cancelled": "no", "state": "failure"})
    assert len(page.html.select("tr[data-job]")) == 7
