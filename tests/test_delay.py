"""Scenarios: time-delayed jobs (`begin_after`) and start deadlines
(`begin_by`)."""

import datetime


import zasync
from zasync.job import clock

import scenario_jobs as jobs
from scenario_jobs import unique

TIMEOUT = jobs.TIMEOUT




def test_a_delayed_job_does_not_start_before_begin_after_and_starts_after(
        dispatcher, producer, viewer):
    name = unique("delayed")
    begin_after = clock.now() + datetime.timedelta(seconds=1.5)
    job = producer.put(zasync.Job(jobs.mark, name), begin_after=begin_after)
    assert job.begin_after == begin_after
    # a job put after it, due now, runs first
    marker = producer.put(zasync.Job(jobs.add, 1, 1))
    assert zasync.wait_for(marker, timeout=TIMEOUT).result == 2
    seen_at = clock.now()
    status = viewer.get(job).status
    if seen_at < begin_after:
        assert status == zasync.PENDING
        assert jobs.calls[name] == 0

    done = zasync.wait_for(job, timeout=TIMEOUT)
    assert done.succeeded
    assert done.started_at >= begin_after
    [ran_at] = jobs.records[name]
    assert ran_at >= begin_after
    assert jobs.calls[name] == 1


def test_a_job_past_its_begin_by_fails_with_a_timeout_and_runs_its_failure_callback(
        db, producer, viewer):
    name = unique("expired")
    # No dispatcher runs: the deadline, begin_after + begin_by, passes.
    begin_after = clock.now() - datetime.timedelta(seconds=2)
    begin_by = datetime.timedelta(seconds=1)
    producer.tm.begin()
    job = zasync.Job(jobs.mark, name)
    on_success, on_failure = job.add_callbacks(
        success=zasync.Job(jobs.record_outcome, name + "-success"),
        failure=zasync.Job(jobs.record_outcome, name + "-failure"))
    producer.queue().put(job, begin_after=begin_after, begin_by=begin_by)
    producer.tm.commit()
    assert clock.now() > begin_after + begin_by
    assert viewer.get(job).status == zasync.PENDING

    with zasync.Dispatcher(db, threads=1, poll_interval=0.05):
        done = zasync.wait_for(job, timeout=TIMEOUT)
        callbacks = viewer.wait_completed([on_success, on_failure])
    assert done.failed
    assert done.failure.check(zasync.JobTimeoutError)
    assert "begin_by" in done.failure.message
    assert done.result is None
    # it never ran its callable
    assert jobs.calls[name] == 0
    assert done.attempt_count == 0
    # its failure callback ran, with the failure; its success callback did not
    [received] = jobs.records[name + "-failure"]
    assert received.check(zasync.JobTimeoutError)
    assert jobs.records[name + "-success"] == []
    success_seen, failure_seen = callbacks
    assert success_seen.skipped
    assert failure_seen.succeeded and not failure_seen.skipped
    assert failure_seen.result.check(zasync.JobTimeoutError)


def test_a_job_started_before_its_begin_by_runs(dispatcher, producer):
    name = unique("in-time")
    job = producer.put(zasync.Job(jobs.mark, name),
                       begin_by=datetime.timedelta(seconds=TIMEOUT))
    done = zasync.wait_for(job, timeout=TIMEOUT)
    assert done.succeeded
    assert done.result == name
