"""zasync in a real Zope instance (mkwsgiinstance, runwsgi), configured as
docs/zope.rst says, in both layouts (queues in the main database, or in an
'async' database), driven over HTTP: puts from request threads, a put in
a request that fails, jobs in the context of the request that put them."""

import concurrent.futures
import time
import uuid

import pytest
import Zope2  # noqa: F401  (the test extra installs Zope; without it this fails here)

from zope_instance import ADMIN, ZopeInstance


TIMEOUT = 60


@pytest.fixture(scope="module", params=["main", "async"])
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
    _put_concurrently(zope, first)
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
    job_id = zope.post("/@@put-record", data={"token": kept}, auth=ADMIN).text
    assert wait_until(lambda: job_done(zope, job_id), "the job put after")
    assert records_of(zope, [lost, kept]).keys() == {kept}


# -- the job context -------------------------------------------------------

def test_a_job_runs_as_its_user_in_its_site_with_its_acquisition_chain(zope):
    mark = token()
    job_id = zope.post("/docs/doc1/@@put-whoami", data={"token": mark}, auth=ADMIN).text
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
    answer = zope.post("/docs/doc1/@@put-whoami", data={"token": mark})
    assert answer.status == 200, answer.text
    assert wait_until(lambda: job_done(zope, answer.text), "the job")["failure"] is None
    seen = records_of(zope, [mark])[mark]
    assert (seen["user"], seen["user_name"]) == (None, "Anonymous User")
    assert seen["url"] == f"{zope.url}/docs/doc1"


def test_a_job_put_through_a_virtual_host_sees_its_urls(zope):
    mark = token()
    path = ("/VirtualHostBase/https/www.example.org:443/docs/VirtualHostRoot/_vh_news"
            "/doc1/@@put-whoami")
    job_id = zope.post(path, data={"token": mark}, auth=ADMIN).text
    assert len(job_id) < 64, job_id
    done = wait_until(lambda: job_done(zope, job_id), "the job")
    assert done["failure"] is None
    seen = records_of(zope, [mark])[mark]
    assert done["result"] == seen["url"] == "https://www.example.org/news/doc1"
    assert seen["path"] == "/docs/doc1"


def test_a_method_of_a_stored_object_runs_on_it_in_its_chain(zope):
    job_id = zope.post("/docs/doc1/@@put-method", auth=ADMIN).text
    done = wait_until(lambda: job_done(zope, job_id), "the job")
    assert (done["failure"], done["result"]) == (None, f"{zope.url}/docs/doc1")
