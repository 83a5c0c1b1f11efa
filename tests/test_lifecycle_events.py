"""The lifecycle events: sent with zope.event after the commit that made
them true, in order, never for an aborted transaction; a failing
subscriber is logged, not raised into the worker."""

import datetime
import logging
import threading

import pytest
import transaction
import zope.event

import zasync
from zasync.job import clock, events
from zasync import interfaces
from zasync.worker.record import DispatcherRecord

import zope_jobs

TIMEOUT = 30


class Recorder:
    """A zope.event subscriber that keeps zasync's events and, for each job
    event, what a fresh connection sees of the job at that moment: proof
    that the event came after the commit that made it true."""

    def __init__(self, db):
        self.db = db
        self.seen = []
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)

    def __call__(self, event):
        if interfaces.IJobEvent.providedBy(event):
            committed = self._committed_status(event.job._p_oid)
            entry = (type(event).__name__, event.job.id, committed)
        elif interfaces.IDispatcherEvent.providedBy(event):
            dispatcher = event.dispatcher
            entry = (type(event).__name__, getattr(dispatcher, "id", dispatcher), None)
        else:
            return
        with self.changed:
            self.seen.append(entry)
            self.changed.notify_all()

    def _committed_status(self, oid):
        tm = transaction.TransactionManager()
        conn = self.db.open(transaction_manager=tm)
        try:
            job = conn.get(oid)
            return job.status, job.succeeded, job.failed
        except Exception as error:   # not committed: no such object yet
            return type(error).__name__
        finally:
            tm.abort()
            conn.close()

    def of(self, job_id):
        with self.lock:
            return [(name, committed) for name, jid, committed in self.seen if jid == job_id]

    def names(self, job_id):
        return [name for name, _ in self.of(job_id)]

    def wait_for(self, predicate, timeout=TIMEOUT):
        with self.changed:
            assert self.changed.wait_for(lambda: predicate(self.seen), timeout), self.seen


@pytest.fixture
def recorder(db):
    recording = Recorder(db)
    zope.event.subscribers.append(recording)
    yield recording
    zope.event.subscribers.remove(recording)


class Put:
    """What a test keeps of a job it put: its id and oid (the job object
    belongs to a connection that is closed by then); `wait_for` takes it."""

    def __init__(self, job):
        self.id = job.id
        self._p_oid = job._p_oid
        self._p_jar = job._p_jar


def _put(db, *args, **put_kwargs):
    with db.transaction() as conn:
        job = zasync.get_queue(conn).put(zasync.Job(*args), **put_kwargs)
        conn.transaction_manager.commit()
        return Put(job)


def _wait_completed(recorder, job):
    recorder.wait_for(lambda seen: any(
        jid == job.id and name in ("JobSucceeded", "JobFailed", "JobCancelled")
        for name, jid, _ in seen))


def test_a_succeeding_job_sends_put_started_succeeded_each_after_its_commit(
        db, recorder):
    with zasync.testing.running_dispatcher(db, threads=1):
        job = _put(db, zope_jobs.add, 1, 2)
        _wait_completed(recorder, job)
    seen = recorder.of(job.id)
    assert [name for name, _ in seen] == ["JobPut", "JobStarted", "JobSucceeded"]
    put, started, succeeded = (committed for _, committed in seen)
    assert put[0] != "POSKeyError"       # the put was committed
    assert started[0] in (zasync.ACTIVE, zasync.COMPLETED)
    assert succeeded == (zasync.COMPLETED, True, False)


def test_a_failing_job_sends_put_started_failed(db, recorder):
    with zasync.testing.running_dispatcher(db, threads=1):
        job = _put(db, zope_jobs.fail, retry_policy=zasync.NeverRetry())
        _wait_completed(recorder, job)
    seen = recorder.of(job.id)
    assert [name for name, _ in seen] == ["JobPut", "JobStarted", "JobFailed"]
    assert seen[-1][1] == (zasync.COMPLETED, False, True)


def test_a_cancelled_pending_job_sends_put_then_cancelled(db, recorder):
    job = _put(db, zope_jobs.add, 1, 2, begin_after=clock.now() + datetime.timedelta(hours=1))
    with db.transaction() as conn:
        assert conn.get(job._p_oid).cancel()
    assert recorder.names(job.id) == ["JobPut", "JobCancelled"]
    assert recorder.of(job.id)[-1][1] == (zasync.COMPLETED, False, True)
    cancelled = [e for e in recorder.seen if e[0] == "JobCancelled"]
    assert len(cancelled) == 1


def test_an_aborted_transaction_sends_no_event(db, recorder):
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    try:
        tm.begin()
        job = zasync.get_queue(conn).put(zasync.Job(zope_jobs.add, 1, 2))
        job_id = job.id
        tm.abort()
        # and one whose commit fails
        tm.begin()
        zasync.get_queue(conn).put(zasync.Job(zope_jobs.add, 3, 4))
        tm.get().addBeforeCommitHook(_raise)
        with pytest.raises(RuntimeError, match="refused"):
            tm.commit()
        tm.abort()
    finally:
        conn.close()
    assert recorder.seen == []
    assert recorder.names(job_id) == []


def _raise():
    raise RuntimeError("commit refused")


def test_events_of_many_jobs_come_in_order_for_each(db, recorder):
    # Backlogs make the dispatcher take jobs ahead of its free threads;
    # their start is recorded later, and must still be announced before
    # their completion.
    agents = [zasync.Agent(size=2, prefetch=2)]
    with zasync.testing.running_dispatcher(db, agents=agents):
        with db.transaction() as conn:
            queue = zasync.get_queue(conn)
            jobs = [queue.put(zasync.Job(zope_jobs.add, i, i)) for i in range(40)]
            conn.transaction_manager.commit()
            jobs = [Put(job) for job in jobs]
        for job in jobs:
            _wait_completed(recorder, job)
    for job in jobs:
        assert recorder.names(job.id) == ["JobPut", "JobStarted", "JobSucceeded"], job.id


def test_a_retried_attempt_sends_job_retried(db, recorder):
    from zasync.cli import examples
    with zasync.testing.running_dispatcher(db, threads=1):
        job = _put(db, examples.flaky, 1)   # a ConflictError, retried at once
        _wait_completed(recorder, job)
    names = recorder.names(job.id)
    assert names[:2] == ["JobPut", "JobStarted"]
    assert "JobRetried" in names
    assert names[-1] == "JobSucceeded"


def test_dispatcher_started_stopped_and_died(db, recorder):
    # A record whose heartbeat stopped an hour ago: its process is gone.
    with db.transaction() as conn:
        ghost = DispatcherRecord("ghost")
        ghost.started_at = ghost.last_ping = clock.now() - datetime.timedelta(hours=1)
        ghost.info = {"host": "elsewhere", "pid": 1}
        zasync.get_queues(conn).dispatchers["ghost"] = ghost
    dispatcher = zasync.Dispatcher(db, threads=1, id="watcher", poll_interval=0.02,
                                   ping_interval=0.05, death_interval=1)
    dispatcher.start()
    try:
        recorder.wait_for(lambda seen: ("DispatcherDied", "ghost", None) in seen)
    finally:
        dispatcher.stop()
    names = [(name, who) for name, who, _ in recorder.seen]
    assert names[0] == ("DispatcherStarted", "watcher")
    assert ("DispatcherDied", "ghost") in names
    assert names[-1] == ("DispatcherStopped", "watcher")
    with db.transaction() as conn:
        assert zasync.get_queues(conn).dispatchers["ghost"].dead_at is not None


def _broken_subscriber(event):
    raise RuntimeError("this subscriber is broken")


def test_a_failing_subscriber_is_logged_not_raised(db, recorder, caplog):
    zope.event.subscribers.insert(0, _broken_subscriber)
    try:
        with caplog.at_level(logging.ERROR, logger="zasync.job.events"):
            with zasync.testing.running_dispatcher(db, threads=1):
                job = _put(db, zope_jobs.add, 20, 22)
                done = zasync.wait_for(job, timeout=TIMEOUT)
                _wait_completed(recorder, job)
    finally:
        zope.event.subscribers.remove(_broken_subscriber)
    assert done.result == 42
    assert recorder.names(job.id) == ["JobPut", "JobStarted", "JobSucceeded"]
    assert "a subscriber failed" in caplog.text
    assert "this subscriber is broken" in caplog.text


def test_event_objects_provide_their_interfaces(db):
    from zope.interface.verify import verifyObject
    job = zasync.Job(zope_jobs.add, 1, 2)
    assert verifyObject(interfaces.IDispatcherDied, events.DispatcherDied("gone"))
    assert verifyObject(interfaces.IJobStarted, events.JobStarted(job))


# -- the order of a job's events across threads, on bare transactions ---------

class FakeJob:
    def __init__(self, id):
        self.id = id


@pytest.fixture
def names():
    seen = []

    def record(event):
        if interfaces.IJobEvent.providedBy(event):
            seen.append(type(event).__name__)
    zope.event.subscribers.append(record)
    yield seen
    zope.event.subscribers.remove(record)


def _commit_in_thread(event):
    def run():
        tm = transaction.TransactionManager()
        events.notify_after_commit(tm.begin(), event)
        tm.commit()
    thread = threading.Thread(target=run)
    thread.start()
    return thread


class HeldCommit:
    """A producer's commit in a thread of its own, held after the commit
    and before its events are sent (as a thread is that has committed a
    put and not yet run its hooks, when a worker claims the job)."""

    def __init__(self, event):
        self.committed, self.release = threading.Event(), threading.Event()

        def hold(status):
            self.committed.set()
            self.release.wait(TIMEOUT)

        def run():
            tm = transaction.TransactionManager()
            txn = tm.begin()
            txn.addAfterCommitHook(hold)
            events.notify_after_commit(txn, event)
            tm.commit()
        self.thread = threading.Thread(target=run)
        self.thread.start()
        assert self.committed.wait(TIMEOUT)

    def finish(self):
        self.release.set()
        self.thread.join(TIMEOUT)


def test_a_later_event_waits_for_an_earlier_one_of_another_thread(names):
    job = FakeJob("ordered")
    producer = HeldCommit(events.JobPut(job))
    worker = _commit_in_thread(events.JobStarted(job))
    worker.join(0.2)
    assert worker.is_alive() and names == []    # held back, not sent first
    producer.finish()
    worker.join(TIMEOUT)
    assert names == ["JobPut", "JobStarted"]


def test_a_transaction_left_open_holds_up_no_other_commit(names, caplog, monkeypatch):
    """An operator's commit in the thread that keeps another transaction
    open (two connections, two transaction managers) sends its events at
    once: the open one has not started to commit, so it comes later."""
    monkeypatch.setattr(events, "ORDER_TIMEOUT", 60.0)
    job = FakeJob("left-open")
    runner, operator = transaction.TransactionManager(), transaction.TransactionManager()
    events.notify_after_commit(runner.begin(), events.JobSucceeded(job))
    events.notify_after_commit(operator.begin(), events.JobCancelled(job))
    with caplog.at_level(logging.WARNING, logger="zasync.job.events"):
        operator.commit()       # would wait 60 s for the runner's ticket
        assert names == ["JobCancelled"]
        runner.commit()
    assert names == ["JobCancelled", "JobSucceeded"]
    assert "waited" not in caplog.text


def test_an_earlier_event_that_aborts_lets_the_later_go(names):
    job = FakeJob("aborted-first")
    producer = transaction.TransactionManager()
    events.notify_after_commit(producer.begin(), events.JobPut(job))
    worker = _commit_in_thread(events.JobStarted(job))
    producer.abort()
    worker.join(TIMEOUT)
    assert not worker.is_alive()
    assert names == ["JobStarted"]


def test_events_of_other_jobs_do_not_wait(names):
    producer = transaction.TransactionManager()
    events.notify_after_commit(producer.begin(), events.JobPut(FakeJob("one")))
    worker = _commit_in_thread(events.JobStarted(FakeJob("other")))
    worker.join(TIMEOUT)
    assert names == ["JobStarted"]
    producer.abort()


def test_a_subscriber_may_commit_more_events_of_the_same_job(names, caplog, monkeypatch):
    monkeypatch.setattr(events, "ORDER_TIMEOUT", 60.0)
    job = FakeJob("nested")

    def retry_on_failure(event):
        if isinstance(event, events.JobFailed):
            tm = transaction.TransactionManager()
            events.notify_after_commit(tm.begin(), events.JobPut(job))
            tm.commit()      # sent at once, inside the JobFailed it follows
    zope.event.subscribers.append(retry_on_failure)
    try:
        tm = transaction.TransactionManager()
        events.notify_after_commit(tm.begin(), events.JobFailed(job))
        with caplog.at_level(logging.WARNING, logger="zasync.job.events"):
            tm.commit()
    finally:
        zope.event.subscribers.remove(retry_on_failure)
    assert names == ["JobFailed", "JobPut"]
    assert "waited" not in caplog.text


def test_an_earlier_event_never_settled_holds_the_later_ones_once(names, caplog, monkeypatch):
    monkeypatch.setattr(events, "ORDER_TIMEOUT", 0.1)
    job = FakeJob("abandoned")
    producer = HeldCommit(events.JobPut(job))     # a subscriber that never returns
    with caplog.at_level(logging.WARNING, logger="zasync.job.events"):
        _commit_in_thread(events.JobStarted(job)).join(TIMEOUT)
        monkeypatch.setattr(events, "ORDER_TIMEOUT", 60.0)   # no second wait
        _commit_in_thread(events.JobSucceeded(job)).join(TIMEOUT)
    assert names == ["JobStarted", "JobSucceeded"]
    assert caplog.text.count("waited") == 1
    producer.finish()


def test_of_events_with_one_once_key_only_the_first_committed_is_sent(names):
    job = FakeJob("once")
    for _ in range(2):
        tm = transaction.TransactionManager()
        events.notify_after_commit(tm.begin(), events.JobStarted(job), once=("once", 1))
        tm.commit()
    assert names == ["JobStarted"]
