"""Helpers for applications' test suites (zasync.testing): eager mode,
a dispatcher for the time of a test, waiting until the queues are idle,
and a multi-database of FileStorages."""

import pytest
import transaction
import zope.event
import zope.security.management
from zope.component.hooks import getSite, setSite

import zasync
from zasync.integration import component
from zasync.job import context
from zasync import testing
from zasync.interfaces import IJobEvent

import zope_jobs

TIMEOUT = 30


def _fresh(db, oid):
    """The object as committed, read by a connection of its own."""
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    try:
        obj = conn.get(oid)
        obj._p_activate()
        return obj
    finally:
        conn.close()


def test_eager_mode_runs_a_job_when_its_put_commits(db):
    with testing.eager() as ran:
        with db.transaction() as conn:
            job = zasync.get_queue(conn).put(zasync.Job(zope_jobs.add, 2, 3))
            oid = job._p_oid
            job_id = job.id
            assert job.status == zasync.PENDING     # not before the commit
    done = _fresh(db, oid)
    assert done.status == zasync.COMPLETED
    assert done.result == 5
    assert ran.job_ids == [job_id]


def test_eager_mode_does_not_run_a_job_whose_put_aborted(db):
    with testing.eager() as ran:
        tm = transaction.TransactionManager()
        conn = db.open(transaction_manager=tm)
        tm.begin()
        zasync.get_queue(conn).put(zasync.Job(zope_jobs.add, 2, 3))
        tm.abort()
        conn.close()
    assert ran.job_ids == []


def test_a_job_put_by_an_eager_job_runs_too(db):
    with db.transaction() as conn:
        conn.root()["doc"] = zope_jobs.Document()
    component.register_adapters()
    try:
        with testing.eager() as ran:
            with db.transaction() as conn:
                document = conn.root()["doc"]
                zasync.get_queue(conn).put(
                    zasync.Job(zope_jobs.put_follow_up, document, "follow-up"))
    finally:
        component.unregister_adapters()
    assert len(ran.job_ids) == 2
    with db.transaction() as conn:
        assert conn.root()["doc"].log == ["follow-up"]


def test_a_failing_eager_job_fails_without_raising_into_the_producer(db):
    with testing.eager():
        with db.transaction() as conn:
            job = zasync.get_queue(conn).put(zasync.Job(zope_jobs.fail))
            oid = job._p_oid
    done = _fresh(db, oid)
    assert done.failed
    assert done.failure.check(ValueError)


def test_eager_jobs_send_their_events_in_order(db):
    seen = []

    def record(event):
        if IJobEvent.providedBy(event):
            seen.append(type(event).__name__)
    with testing.eager():
        zope.event.subscribers.append(record)   # after eager's own subscriber
        try:
            with db.transaction() as conn:
                zasync.get_queue(conn).put(zasync.Job(zope_jobs.add, 1, 1))
        finally:
            zope.event.subscribers.remove(record)
    assert seen == ["JobPut", "JobStarted", "JobSucceeded"]


def test_eager_jobs_run_in_their_context_and_leave_the_producers(db):
    import zope.component.testing
    zope.component.testing.setUp()
    try:
        with db.transaction() as conn:
            site = conn.root()["site"] = zope_jobs.Site()
            site.getSiteManager().registerUtility(zope_jobs.Greeter("Hi"), zope_jobs.IGreeter)
        with testing.eager():
            with db.transaction() as conn:
                site = conn.root()["site"]
                setSite(site)
                zope.security.management.newInteraction(
                    context.Participation(context.Principal("erin")))
                interaction = zope.security.management.getInteraction()
                job = context.put(zasync.get_queue(conn), zope_jobs.greet_in_site, "erin")
                oid = job._p_oid
            # the commit ran the job in its own connection and context, and
            # gave the producer back its own
            assert getSite() is site
            assert zope.security.management.getInteraction() is interaction
        assert _fresh(db, oid).result == "Hi, erin"
    finally:
        setSite(None)
        zope.security.management.endInteraction()
        zope.component.testing.tearDown()


def test_after_eager_mode_jobs_wait_for_a_worker(db):
    with testing.eager():
        pass
    with db.transaction() as conn:
        job = zasync.get_queue(conn).put(zasync.Job(zope_jobs.add, 1, 1))
        oid = job._p_oid
    assert _fresh(db, oid).status == zasync.PENDING


def test_running_dispatcher_starts_and_stops_a_dispatcher(db):
    with testing.running_dispatcher(db, threads=1) as dispatcher:
        assert dispatcher.running
        with db.transaction() as conn:
            job = zasync.get_queue(conn).put(zasync.Job(zope_jobs.add, 4, 4))
        assert testing.wait_for(job, timeout=TIMEOUT).result == 8
    assert not dispatcher.running


def test_running_dispatcher_fails_when_a_job_outlives_the_test(db):
    gate = "outlives-the-test"
    with pytest.raises(RuntimeError, match="jobs still ran"):
        with testing.running_dispatcher(db, threads=1, stop_timeout=0.2) as dispatcher:
            with db.transaction() as conn:
                job = zasync.get_queue(conn).put(zasync.Job(zope_jobs.wait_at_gate, gate))
            assert zope_jobs.arrived(gate).wait(TIMEOUT), "the job did not start"
    zope_jobs.gate(gate).set()
    assert testing.wait_for(job, timeout=TIMEOUT).result == gate
    assert not dispatcher.running


def test_wait_for_idle_returns_once_every_job_ran(db):
    with testing.running_dispatcher(db, threads=2, queues=("", "mail")):
        with db.transaction() as conn:
            for i in range(10):
                zasync.get_queue(conn, "mail" if i % 2 else "").put(zasync.Job(zope_jobs.add, i, i))
        testing.wait_for_idle(db, timeout=TIMEOUT)
        with db.transaction() as conn:
            assert len(zasync.get_queue(conn)) == 0
            assert len(zasync.get_queue(conn, "mail")) == 0


def test_wait_for_idle_times_out_with_what_is_left(db):
    with db.transaction() as conn:
        zasync.get_queue(conn).put(zasync.Job(zope_jobs.add, 1, 1))
    with pytest.raises(zasync.WaitTimeoutError, match="1 job.s. still pending"):
        testing.wait_for_idle(db, timeout=0.05)


def test_open_multidb_opens_file_storages_side_by_side(tmp_path):
    db = testing.open_multidb(tmp_path)
    try:
        assert db.database_name == "main"
        assert sorted(db.databases) == ["async", "main"]
        assert (tmp_path / "async.fs").exists()
    finally:
        testing.close_multidb(db)
