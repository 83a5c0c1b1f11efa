"""Quotas: no more than `size` jobs of a quota held at once, across every
worker process, with a size that changes while workers run.

The scenarios run two ``zasync worker`` processes on a real ZEO server;
the bookkeeping (what a quota holds after jobs complete, fail or are
rescheduled) is watched on an in-process dispatcher over FileStorage; the
resolver that keeps two claimers from both taking the last place is tested
on plain states and with two transaction managers.
"""

import datetime

import pytest
import transaction
from ZODB.POSException import ConflictError

import zasync
from zasync.interfaces import ACTIVE, ConfigurationError, PENDING
from zasync.queue.quota import HeldJobs, Quota, merge_held_states

import process_jobs
import scenario_jobs
from process_jobs import read_lines
from scenario_jobs import Producer, Viewer, unique

TIMEOUT = process_jobs.TIMEOUT


# This module's tests run over ZEO, with worker processes (conftest.py).
@pytest.fixture
def producer(zeo_producer):
    return zeo_producer


@pytest.fixture
def viewer(zeo_viewer):
    return zeo_viewer


@pytest.fixture
def workers(process_workers):
    return process_workers


def set_quota(producer, name, size):
    with producer.tm:
        producer.queue().set_quota(name, size)


def held(viewer, name):
    viewer.root()   # a fresh transaction
    return zasync.get_queue(viewer.conn).quotas[name].held


def overlaps(intervals):
    """Pairs of (label, start, end) intervals that overlap in time."""
    ordered = sorted(intervals, key=lambda interval: interval[1])
    return [(a[0], b[0]) for a, b in zip(ordered, ordered[1:]) if b[1] < a[2]]


# -- across worker processes ---------------------------------------------------------

def test_a_quota_of_one_runs_its_jobs_one_at_a_time_across_two_workers(
        zeo_server, producer, viewer, workers, tmp_path):
    intervals_dir, gather_dir = tmp_path / "intervals", tmp_path / "gather"
    intervals_dir.mkdir()
    gather_dir.mkdir()
    set_quota(producer, "db", 1)
    # Worker "a" takes only jobs tagged "a" (and untagged ones), "b" those
    # tagged "b": the quota's jobs alternate between the two processes, so
    # only a limit held across processes keeps them from overlapping.
    for tag in "ab":
        workers.start(str(tmp_path / f"{tag}.log"), zeo_server.uri, "--threads", "2",
                      "--id", tag, "--filter", "process_jobs:tagged",
                      env={"PROCESS_JOBS_TAG": tag})
    limited = [producer.put(zasync.Job(process_jobs.interval, str(intervals_dir),
                                       f"db{n}", 0.1, tag="ab"[n % 2]),
                            quotas=("db",))
               for n in range(8)]
    # jobs outside the quota run side by side: each completes only once the
    # other has started too
    free = [producer.put(zasync.Job(process_jobs.gather, str(gather_dir), f"free{n}", 2))
            for n in range(2)]
    done = viewer.wait_completed(limited + free, timeout=TIMEOUT)
    assert all(job.succeeded for job in done), [job.failure for job in done]
    assert {job.dispatcher_id for job in done[:8]} == {"a", "b"}
    assert held(viewer, "db") == 0

    lines = read_lines(str(intervals_dir), "intervals")
    intervals = [(label, float(start), float(end))
                 for label, start, end in (line.split() for line in lines)]
    assert sorted(label for label, _, _ in intervals) == [f"db{n}" for n in range(8)]
    assert overlaps(intervals) == []


def test_raising_a_quota_while_workers_run_lets_more_jobs_run_at_once(
        zeo_server, producer, viewer, workers, tmp_path):
    gather_dir = tmp_path / "gather"
    gather_dir.mkdir()
    set_quota(producer, "db", 1)
    for name in ("one", "two"):
        workers.start(str(tmp_path / f"{name}.log"), zeo_server.uri, "--threads", "2",
                      "--id", name)
    # each completes only once both run at once, which the quota forbids
    jobs = [producer.put(zasync.Job(process_jobs.gather, str(gather_dir), f"g{n}", 2),
                         quotas="db")
            for n in range(2)]
    process_jobs.wait_until(lambda: process_jobs.arrived(str(gather_dir)) == 1, TIMEOUT)
    # The worker's claim committed before its job started, but over ZEO the
    # viewer hears of that commit a moment later: wait for it.  Two active
    # at once (the quota broken) would never turn into this.
    process_jobs.wait_until(
        lambda: sorted(viewer.get(job).status for job in jobs) == [ACTIVE, PENDING],
        TIMEOUT, what="one job of the quota active, the other pending")
    assert held(viewer, "db") == 1

    set_quota(producer, "db", 2)
    for job in jobs:
        done = zasync.wait_for(job, timeout=TIMEOUT)
        assert done.succeeded, done.failure
    assert held(viewer, "db") == 0
    assert process_jobs.arrived(str(gather_dir)) == 2


# -- put -----------------------------------------------------------------------------

def test_put_with_an_unknown_quota_raises_naming_it_and_writes_nothing(db):
    producer = Producer(db)
    try:
        set_quota(producer, "db", 1)
        with pytest.raises(ConfigurationError, match="'dbb'.*'db'"):
            with producer.tm:
                producer.queue().put(scenario_jobs.add, 1, 2, quotas=("db", "dbb"))
        with producer.tm:
            queue = producer.queue()
            assert len(queue) == 0
            assert list(queue.jobs()) == []
            assert set(queue.quotas.keys()) == {"db"}
    finally:
        producer.close()


# -- what a quota holds, in-process ----------------------------------------------------

def test_a_quota_is_given_back_when_its_jobs_complete_fail_or_wait_to_retry(db):
    name = unique("quota")
    meeting = scenario_jobs.rendezvous(name)
    producer = Producer(db)
    try:
        set_quota(producer, "db", 3)
        with zasync.Dispatcher(db, threads=3, poll_interval=0.05), Viewer(db) as viewer:
            running = producer.put(scenario_jobs.pause, name, "held", quotas="db")
            assert meeting.wait_arrived(label="held")
            assert held(viewer, "db") == 1
            meeting.release("held")
            assert zasync.wait_for(running, timeout=TIMEOUT).succeeded

            succeeds = producer.put(scenario_jobs.add, 1, 2, quotas="db")
            fails = producer.put(scenario_jobs.raise_value_error, "no", quotas="db")
            conflicts_once = producer.put(scenario_jobs.conflict_once, unique(),
                                          quotas="db")
            later = producer.put(
                scenario_jobs.raise_value_error, "later", quotas="db",
                retry_policy=zasync.Backoff(ValueError, initial=3600))
            assert zasync.wait_for(succeeds, timeout=TIMEOUT).result == 3
            assert zasync.wait_for(fails, timeout=TIMEOUT).failed
            retried = zasync.wait_for(conflicts_once, timeout=TIMEOUT)
            assert retried.result == "resolved" and retried.attempt_count == 2

            def rescheduled():
                job = viewer.get(later)
                return job.status == PENDING and job.attempt_count == 1
            process_jobs.wait_until(rescheduled, TIMEOUT)
            job = viewer.get(later)
            assert job.begin_after > zasync.job.clock.now() + datetime.timedelta(minutes=59)
            assert held(viewer, "db") == 0
    finally:
        producer.close()


# -- two claimers and the last place ---------------------------------------------------

def test_two_transactions_that_both_took_jobs_of_a_quota_conflict():
    old = {"_jobs": {"a": 1}}
    with pytest.raises(ConflictError, match="took jobs of one quota"):
        merge_held_states(old, {"_jobs": {"a": 1, "b": 2}}, {"_jobs": {"a": 1, "c": 3}})


def test_a_release_merges_with_a_take_and_with_another_release():
    old = {"_jobs": {"a": 1, "b": 2}}
    taken_and_released = merge_held_states(
        old, {"_jobs": {"a": 1, "b": 2, "c": 3}}, {"_jobs": {"b": 2}})
    assert taken_and_released == {"_jobs": {"b": 2, "c": 3}}
    assert merge_held_states(old, {"_jobs": {"b": 2}}, {"_jobs": {"a": 1}}) == {
        "_jobs": {}}
    with pytest.raises(ConflictError):
        merge_held_states(old, {"_jobs": {"b": 2}}, {"_jobs": {"b": 2}})


def test_a_new_quota_holds_its_jobs_in_a_set_that_refuses_two_takes():
    assert isinstance(Quota("db", 1)._held, HeldJobs)


def test_two_workers_claiming_the_last_place_of_a_quota_at_once_conflict(db):
    producer = Producer(db)
    first_tm, second_tm = transaction.TransactionManager(), transaction.TransactionManager()
    first, second = db.open(transaction_manager=first_tm), db.open(
        transaction_manager=second_tm)
    try:
        set_quota(producer, "db", 1)
        with producer.tm:
            queue = producer.queue()
            for number in range(200):
                queue.put(scenario_jobs.add, number, 0, quotas="db")
        with producer.tm:
            producer.queue().claim("drain", 0)
        # two claimers pick different jobs, far apart in the pending tree,
        # each seeing the quota's one place free
        first_tm.begin()
        second_tm.begin()
        taken = zasync.get_queue(first).claim(
            "first", 1, accept=lambda job: job.args[0] == 50)
        also = zasync.get_queue(second).claim(
            "second", 1, accept=lambda job: job.args[0] == 150)
        assert len(taken) == len(also) == 1
        first_tm.commit()
        with pytest.raises(ConflictError):
            second_tm.commit()
        second_tm.abort()
        with producer.tm:
            assert producer.queue().quotas["db"].held == 1
    finally:
        first_tm.abort()
        second_tm.abort()
        first.close()
        second.close()
        producer.close()
