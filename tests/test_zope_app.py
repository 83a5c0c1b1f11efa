"""zasync in a real Zope instance (mkwsgiinstance, runwsgi), configured as
docs/zope.rst says, in both layouts (queues in the main database, or in an
'async' database), driven over HTTP: puts from request threads, a put in
a request that fails, jobs in the context of the request that put them,
and the web view under Zope's permissions."""

import concurrent.futures
import importlib.util
import os
import re
import signal
import time
import urllib.parse
import uuid

import pytest

# The test extra installs Zope; its instances run in their own processes.
# Importing Zope here would set INSTANCE_HOME and CLIENT_HOME in this
# process's environment (App.FindHomes), where other tests' dispatchers
# would then look for their id files: it is only looked for.
assert importlib.util.find_spec("Zope2"), "these tests need Zope: pip install -e '.[test]'"

from zope_instance import ADMIN, ZopeInstance

VIEWER = ("viewer", "viewer-pw")     # may view jobs, not act on them
MEMBER = ("member", "member-pw")     # authenticated, may do neither

TIMEOUT = 60


@pytest.fixture(scope="module", params=["main", "async", "zeo"])
def zope(request, tmp_path_factory):
    instance = ZopeInstance(tmp_path_factory.mktemp(f"zope-{request.param}"),
                            request.param).make()
    instance.start()
    try:
        answer = instance.post("/@@zasync-test-setup", auth=ADMIN)
        assert answer.status == 200, answer.text
        yield instance
    finally:
        instance.stop()


def token():
    return uuid.uuid4().hex


def put(zope, path, auth=ADMIN, **data):
    """POST to a view that puts a job; return the job's id."""
    answer = zope.post(path, data=data, auth=auth)
    assert answer.status == 200, (f"{path}: {answer.status} {answer.text[:200]}; "
                                  f"the instance logged {zope.errors()}")
    return answer.text


def state(zope, job_id=None):
    answer = zope.get("/@@zasync-test-state" + (f"?job={job_id}" if job_id else ""),
                      auth=ADMIN)
    assert answer.status == 200, answer.text
    return answer.json()


def wait_until(predicate, what, timeout=TIMEOUT):
    deadline = time.monotonic() + timeout
    while True:
        found = predicate()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def records_of(zope, tokens):
    records = state(zope)["records"]
    return {key: records[key] for key in tokens if key in records}


def job_done(zope, job_id):
    found = state(zope, job_id)["job"]
    return found if found.get("status") == "completed" else None


# -- puts from request threads ---------------------------------------------

def _put_concurrently(zope, tokens):
    def put(each):
        return zope.post("/@@put-record", data={"token": each}, auth=ADMIN)

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(put, tokens))
    failed = [(answer.status, answer.text[:300]) for answer in answers if answer.status != 200]
    assert failed == [], (f"{len(failed)} of {len(tokens)} puts failed: {failed[:1]}; "
                          f"the instance logged {zope.errors()}")
    return [answer.text for answer in answers]


def test_concurrent_puts_from_request_threads_all_commit_and_run_once(zope):
    # A first round, whose jobs an operator then looks at in the web view
    # (which loads their arguments, objects of the main database), while
    # the workers ran them: the connections of both go back to the pools
    # from which the requests of the second round take theirs.
    first = [token() for _ in range(16)]
    for job_id in _put_concurrently(zope, first):
        page = zope.get(f"/@@zasync/jobs/{job_id}", auth=ADMIN)
        assert page.status == 200, (f"job {job_id}'s page: {page.text[:300]}; "
                                    f"the instance logged {zope.errors()}")
    tokens = [token() for _ in range(64)]
    _put_concurrently(zope, tokens)
    everything = first + tokens
    done = wait_until(
        lambda: len(records_of(zope, everything)) == 80 and records_of(zope, everything),
        "the 80 jobs to run")
    assert sorted(done) == sorted(everything)
    assert {record["runs"] for record in done.values()} == {1}


def test_a_put_in_a_request_that_fails_leaves_no_job(zope):
    lost, kept = token(), token()
    answer = zope.post("/@@put-then-fail", data={"token": lost}, auth=ADMIN)
    assert answer.status == 500
    job_id = put(zope, "/@@put-record", token=kept)
    assert wait_until(lambda: job_done(zope, job_id), "the job put after")
    jobs = zope.get("/@@zasync/api/jobs?limit=1000", auth=ADMIN)
    assert jobs.status == 200, jobs.text
    assert lost not in jobs.text and kept in jobs.text
    assert records_of(zope, [lost, kept]).keys() == {kept}


# -- a stop in the middle of a job -----------------------------------------

@pytest.mark.slow(reason="stops and restarts a Zope instance (and its ZEO server): "
                        "about 10 s of Zope start-up, besides the 2 s job")
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_stop_in_the_middle_of_a_job_keeps_its_result_and_runs_it_once(zope, sig, tmp_path):
    # An operator stops the instance (Ctrl-C, or a supervisor's SIGTERM)
    # while a job runs: the dispatcher lets the job finish and stores its
    # result before the databases close, so the job is done once, is not
    # run again after the restart, and the stop logs no failure.
    started_file = str(tmp_path / "started")
    mark = token()
    job_id = put(zope, "/@@put-slow", token=mark, seconds="2", started_file=started_file)
    wait_until(lambda: os.path.exists(started_file), "the job to start")
    logged_before = len(zope.log())
    try:
        assert zope.stop(sig=sig) == 0
        stop_log = zope.log()[logged_before:]
    finally:
        zope.start()
    for trouble in ("could not store", "could not record", "Exception ignored", "Traceback"):
        assert trouble not in stop_log, stop_log
    assert wait_until(lambda: job_done(zope, job_id), "the job's result")["result"] == mark
    # a rerun would count a second run: give a wrongly handed-back job the
    # time to be claimed again by the restarted dispatcher
    follow = put(zope, "/@@put-record", token=token())
    wait_until(lambda: job_done(zope, follow), "a job put after the restart")
    assert records_of(zope, [mark]) == {mark: {"runs": 1}}


# -- the job context -------------------------------------------------------

def test_a_job_runs_as_its_user_in_its_site_with_its_acquisition_chain(zope):
    mark = token()
    job_id = put(zope, "/docs/doc1/@@put-whoami", token=mark)
    done = wait_until(lambda: job_done(zope, job_id), "the job")
    assert done["failure"] is None
    seen = records_of(zope, [mark])[mark]
    assert done["result"] == f"{zope.url}/docs/doc1"
    assert seen == {
        "url": f"{zope.url}/docs/doc1", "root": "", "path": "/docs/doc1",
        "user": "admin", "user_name": "admin", "site": "/docs",
        "request_url": zope.url, "runs": 1}


def test_a_job_put_by_an_anonymous_visitor_runs_as_anonymous(zope):
    mark = token()
    job_id = put(zope, "/docs/doc1/@@put-whoami", auth=None, token=mark)
    assert wait_until(lambda: job_done(zope, job_id), "the job")["failure"] is None
    seen = records_of(zope, [mark])[mark]
    assert (seen["user"], seen["user_name"]) == (None, "Anonymous User")
    assert seen["url"] == f"{zope.url}/docs/doc1"


def test_a_job_put_through_a_virtual_host_sees_its_urls(zope):
    mark = token()
    path = ("/VirtualHostBase/https/www.example.org:443/docs/VirtualHostRoot/_vh_news"
            "/doc1/@@put-whoami")
    job_id = put(zope, path, token=mark)
    done = wait_until(lambda: job_done(zope, job_id), "the job")
    assert done["failure"] is None
    seen = records_of(zope, [mark])[mark]
    assert done["result"] == seen["url"] == "https://www.example.org/news/doc1"
    assert seen["path"] == "/docs/doc1"


def test_a_job_whose_user_was_removed_fails_saying_so(zope):
    # the job waits 3 s in its queue, in which its user is removed
    job_id = put(zope, "/docs/doc1/@@put-whoami", auth=("leaver", "leaver-pw"),
                 token=token(), delay=3)
    assert zope.post("/@@remove-user", data={"name": "leaver"}, auth=ADMIN).status == 200
    done = wait_until(lambda: job_done(zope, job_id), "the job")
    assert "ContextLostError" in done["failure"]
    assert "user 'leaver' who put it is no longer in /acl_users" in done["failure"]


def test_a_method_of_a_stored_object_runs_on_it_in_its_chain(zope):
    job_id = put(zope, "/docs/doc1/@@put-method")
    done = wait_until(lambda: job_done(zope, job_id), "the job")
    assert (done["failure"], done["result"]) == (None, f"{zope.url}/docs/doc1")


# -- the web view ----------------------------------------------------------

def test_the_web_view_is_refused_to_an_anonymous_visitor(zope):
    job_id = put(zope, "/@@put-record", token="secret-argument")
    for path in ("/@@zasync", "/@@zasync/jobs", f"/@@zasync/jobs/{job_id}",
                 "/@@zasync/api/jobs", f"/@@zasync/api/jobs/{job_id}"):
        answer = zope.get(path)
        assert answer.status == 401, (path, answer.status)
        assert "secret-argument" not in answer.text
    answer = zope.post(f"/@@zasync/api/jobs/{job_id}/cancel")
    assert answer.status == 401


def test_the_web_view_is_offered_on_the_root_and_on_sites_only(zope):
    assert zope.get("/docs/@@zasync/jobs", auth=ADMIN).status == 200    # a site
    assert zope.get("/docs/doc1/@@zasync/jobs", auth=ADMIN).status == 404


def test_the_web_view_shows_the_jobs_to_the_manager(zope):
    job_id = put(zope, "/@@put-record", token="shown-argument")
    overview = zope.get("/@@zasync", auth=ADMIN)
    assert overview.status == 200, overview.text
    assert 'href="/@@zasync/jobs"' in overview.text
    page = zope.get(f"/@@zasync/jobs/{job_id}", auth=ADMIN)
    assert page.status == 200 and "shown-argument" in page.text
    api = zope.get(f"/@@zasync/api/jobs/{job_id}", auth=ADMIN)
    assert api.status == 200 and api.json()["id"] == job_id
    style = zope.get("/@@zasync/static/zasync.css", auth=ADMIN)
    assert style.status == 200 and style.headers["Content-Type"].startswith("text/css")


def test_the_web_view_is_refused_to_a_user_without_the_view_permission(zope):
    job_id = put(zope, "/@@put-record", token="member-cannot-see")
    for path in ("/@@zasync", f"/@@zasync/jobs/{job_id}", f"/@@zasync/api/jobs/{job_id}"):
        answer = zope.get(path, auth=MEMBER)
        assert answer.status == 401, (path, answer.status)
        assert "member-cannot-see" not in answer.text


def test_a_viewer_sees_the_jobs_and_cannot_act_on_them(zope):
    job_id = put(zope, "/@@put-record", token="viewer-sees", delay=3600)
    page = zope.get(f"/@@zasync/jobs/{job_id}", auth=VIEWER)
    assert page.status == 200 and "viewer-sees" in page.text
    answer = zope.post(f"/@@zasync/api/jobs/{job_id}/cancel", auth=VIEWER)
    assert answer.status == 403, answer.text
    assert "zasync: Manage jobs" in answer.json()["message"]
    assert zope.get(f"/@@zasync/api/jobs/{job_id}", auth=ADMIN).json()["status"] == "pending"


def test_a_manager_cancels_through_the_json_api(zope):
    job_id = put(zope, "/@@put-record", token=token(), delay=3600)
    answer = zope.post(f"/@@zasync/api/jobs/{job_id}/cancel", auth=ADMIN)
    assert answer.status == 200, answer.text
    assert answer.json()["result"] == "ok"
    assert zope.get(f"/@@zasync/api/jobs/{job_id}", auth=ADMIN).json()["status"] == "completed"


def test_a_managers_form_needs_its_csrf_token(zope):
    job_id = put(zope, "/@@put-record", token=token(), delay=3600)
    page = zope.get(f"/@@zasync/jobs/{job_id}", auth=ADMIN)
    assert page.status == 200
    form_token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    cookie = page.headers["Set-Cookie"].split(";", 1)[0]
    assert cookie.startswith("zasync_csrf=")
    assert "Path=/@@zasync" in page.headers["Set-Cookie"]
    forged = zope.post(f"/@@zasync/jobs/{job_id}/remove", data={"csrf_token": "forged"},
                       auth=ADMIN, headers={"Cookie": cookie})
    assert forged.status == 403
    assert zope.get(f"/@@zasync/api/jobs/{job_id}", auth=ADMIN).json()["status"] == "pending"
    done = zope.post(f"/@@zasync/jobs/{job_id}/remove", data={"csrf_token": form_token},
                     auth=ADMIN, headers={"Cookie": cookie})
    assert done.status == 303, done.text
    location = urllib.parse.urlsplit(done.headers["Location"])
    assert (location.path, location.query) == ("/@@zasync/jobs", f"done=remove&job={job_id}")
    assert zope.get(f"/@@zasync/api/jobs/{job_id}", auth=ADMIN).status == 404
