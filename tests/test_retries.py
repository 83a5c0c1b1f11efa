"""Scenarios: failed attempts retried by the job's retry policy."""

import datetime

from ZODB.POSException import ConflictError

import zasync

import scenario_jobs as jobs
from scenario_jobs import rendezvous, unique

TIMEOUT = jobs.TIMEOUT




def test_a_conflict_on_the_first_attempt_is_retried(dispatcher, producer):
    name = unique("conflict-once")
    job = producer.put(zasync.Job(jobs.conflict_once, name))
    done = zasync.wait_for(job, timeout=TIMEOUT)
    assert done.succeeded, done.failure
    assert done.result == "resolved"
    assert done.attempt_count == 2
    [first] = done.attempts
    assert first.check(ConflictError)
    assert "a conflict on the first attempt" in first.message
    assert "conflict_once" in first.traceback
    assert jobs.calls[name] == 2


def test_a_job_always_conflicting_fails_after_5_attempts(dispatcher, producer):
    name = unique("always")
    job = producer.put(zasync.Job(jobs.always_conflict, name))
    done = zasync.wait_for(job, timeout=TIMEOUT)
    assert done.failed
    assert done.failure.check(ConflictError)
    assert "conflict number 5" in done.failure.message
    assert done.attempt_count == 5
    assert [failure.message for failure in done.attempts] == [
        f"{name}: conflict number {number}" for number in range(1, 5)]
    assert jobs.calls[name] == 5


def test_backoff_reschedules_without_holding_a_thread_and_succeeds_on_attempt_3(
        db, producer, viewer):
    name = unique("backoff")
    meeting = rendezvous(name)
    policy = zasync.Backoff(ValueError, attempts=3, initial=0.2)
    with zasync.Dispatcher(db, threads=1, poll_interval=0.05):
        flaky = producer.put(zasync.Job(jobs.value_error_twice, name),
                             retry_policy=policy)
        put_at = flaky.begin_after
        try:
            assert meeting.wait_arrived(label="first")
            # the flaky job's first attempt holds the only thread; a quick
            # job is put meanwhile
            quick = producer.put(zasync.Job(jobs.add, 3, 4))
        finally:
            meeting.release()
        quick_done = zasync.wait_for(quick, timeout=TIMEOUT)
        done = zasync.wait_for(flaky, timeout=TIMEOUT)
    assert quick_done.result == 7
    first, second, third = jobs.records[name]
    # the thread was free while the flaky job waited: the quick job ran
    # between its attempts, not after its last one
    assert quick_done.ended_at < third
    assert second - first >= datetime.timedelta(seconds=0.2)
    assert third - second >= datetime.timedelta(seconds=0.4)
    assert done.succeeded, done.failure
    assert done.result == "succeeded on call 3"
    assert done.attempt_count == 3
    assert [failure.message for failure in done.attempts] == [
        f"{name}: failure number 1", f"{name}: failure number 2"]
    assert all(failure.check(ValueError) for failure in done.attempts)
    # rescheduled: its begin_after moved 0.2 s, then 0.4 s later
    assert done.begin_after - put_at >= datetime.timedelta(seconds=0.6)
    assert done.started_at >= done.begin_after
    assert jobs.calls[name] == 3


def test_backoff_moves_begin_after_later_while_the_job_waits(db, producer, viewer):
    name = unique("moved")
    meeting = rendezvous(name)
    policy = zasync.Backoff(ValueError, attempts=3, initial=5.0)
    with zasync.Dispatcher(db, threads=1, poll_interval=0.05):
        job = producer.put(zasync.Job(jobs.value_error_twice, name),
                           retry_policy=policy)
        put_at = job.begin_after
        meeting.release()
        waiting = wait_attempts(viewer, job, 1)
        assert waiting.status == zasync.PENDING
        assert waiting.begin_after - put_at >= datetime.timedelta(seconds=5)
        [failure] = waiting.attempts
        assert failure.check(ValueError)
        assert jobs.calls[name] == 1


def wait_attempts(viewer, job, count):
    return jobs.wait_until(
        lambda: len(viewer.get(job).attempts) >= count and viewer.get(job))


def test_a_value_error_fails_at_once_with_its_traceback(dispatcher, producer):
    job = producer.put(zasync.Job(jobs.raise_value_error, "bad input"))
    done = zasync.wait_for(job, timeout=TIMEOUT)
    assert done.failed and not done.succeeded
    assert done.attempt_count == 1
    assert done.attempts == ()
    failure = done.failure
    assert failure.check(ValueError)
    assert failure.type_name == "ValueError"
    assert failure.message == "bad input"
    assert failure.traceback.startswith("Traceback (most recent call last):")
    assert 'in raise_value_error' in failure.traceback
    assert "raise ValueError(message)" in failure.traceback
    assert failure.traceback.rstrip().endswith("ValueError: bad input")
