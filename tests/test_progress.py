"""Scenarios: a running job reports its progress, seen from other
connections while it runs."""


import zasync
from zasync.job import clock

import scenario_jobs as jobs
from scenario_jobs import rendezvous, unique

TIMEOUT = jobs.TIMEOUT




def test_progress_is_visible_from_another_connection_while_the_job_runs(
        dispatcher, producer, viewer):
    name = unique("half")
    meeting = rendezvous(name)
    job = producer.put(zasync.Job(jobs.progress_then_pause, name, (0.5, "half")))
    try:
        meeting.release("start")
        assert meeting.wait_arrived(label=0), "the job did not report progress"
        seen = viewer.get(job)
        assert seen.status == zasync.ACTIVE
        assert seen.progress == 0.5
        assert seen.progress_message == "half"
        # the producer's own connection sees it too, in a new transaction
        producer.tm.begin()
        assert job.progress == 0.5
        producer.tm.abort()
    finally:
        meeting.release()
    done = zasync.wait_for(job, timeout=TIMEOUT)
    assert done.result == 1
    assert done.progress == 1.0


def test_progress_is_0_at_start_and_1_at_completion(dispatcher, producer, viewer):
    name = unique("start")
    meeting = rendezvous(name)
    job = producer.put(zasync.Job(jobs.progress_then_pause, name, (0.3, "a third")))
    assert job.progress == 0.0
    try:
        assert meeting.wait_arrived(label="start")
        seen = viewer.get(job)
        assert seen.status == zasync.ACTIVE
        assert seen.progress == 0.0
        assert seen.progress_message is None
        meeting.release("start")
        assert meeting.wait_arrived(label=0)
        assert viewer.get(job).progress == 0.3
    finally:
        meeting.release()
    done = zasync.wait_for(job, timeout=TIMEOUT)
    assert done.progress == 1.0
    assert viewer.get(job).progress == 1.0


def test_progress_values_are_clamped_to_0_and_1(dispatcher, producer, viewer):
    name = unique("clamp")
    meeting = rendezvous(name)
    job = producer.put(zasync.Job(
        jobs.progress_then_pause, name, (1.7, "too far"), (-0.4, "too low"), (1, "int")))
    seen = []
    try:
        meeting.release("start")
        for index in range(3):
            assert meeting.wait_arrived(label=index)
            live = viewer.get(job)
            seen.append((live.progress, live.progress_message))
            meeting.release(index)
    finally:
        meeting.release()
    assert seen == [(1.0, "too far"), (0.0, "too low"), (1.0, "int")]
    assert all(isinstance(value, float) for value, _ in seen)
    assert zasync.wait_for(job, timeout=TIMEOUT).succeeded


def test_start_time_end_time_and_duration_are_recorded(dispatcher, producer):
    name = unique("timed")
    before = clock.now()
    new = zasync.Job(jobs.timed, name)
    assert new.started_at is None and new.ended_at is None and new.duration is None
    job = producer.put(new)
    done = zasync.wait_for(job, timeout=TIMEOUT)
    after = clock.now()
    [inside] = jobs.records[name]
    assert before <= done.created_at <= done.started_at <= inside
    assert inside <= done.ended_at <= after
    assert done.started_at.tzinfo is not None and done.ended_at.tzinfo is not None
    assert done.duration == (done.ended_at - done.started_at).total_seconds()
    assert done.duration >= 0


def test_current_job_inside_a_job_is_that_job(dispatcher, producer):
    job = producer.put(zasync.Job(jobs.current_job_id))
    done = zasync.wait_for(job, timeout=TIMEOUT)
    assert done.result == job.id
    assert zasync.current_job() is None


def test_progress_does_not_conflict_with_the_jobs_own_transaction(
        dispatcher, producer):
    with producer.tm:
        producer.conn.root()["counter"] = jobs.Counter()
    rounds = 50
    job = producer.put(zasync.Job(jobs.write_with_progress, "counter", rounds))
    done = zasync.wait_for(job, timeout=TIMEOUT)
    assert done.succeeded, done.failure
    assert done.attempt_count == 1
    assert done.attempts == ()
    assert done.result == rounds
    assert done.progress == 1.0
    assert done.progress_message == f"round {rounds} of {rounds}"
    counter = done._p_jar.root()["counter"]
    assert counter.value == rounds
    assert counter.log == list(range(rounds))
