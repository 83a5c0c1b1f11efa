"""Agents claim by their own load: a busy worker leaves new jobs to an idle
one, a filter keeps an agent to the jobs it accepts, and jobs are taken
ahead of free threads under a backlog (below one, for short jobs only, no
more than stay pending).

The first two scenarios run two ``zasync worker`` processes on a real ZEO
server; the third watches one in-process dispatcher on FileStorage.
"""

import time

import pytest

import zasync
from zasync.job import clock
from zasync.interfaces import ACTIVE, ASSIGNED, COMPLETED, NEW, PENDING

import process_jobs
import scenario_jobs
from scenario_jobs import Producer, Viewer, unique

#: Starting a worker process and running a job in it is quick, but a loaded
#: machine (CI) can take seconds to start Python.
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


def registered(viewer, dispatcher_id):
    """Whether the dispatcher `dispatcher_id` has registered and not stopped."""
    viewer.root()    # a fresh transaction
    record = zasync.get_queues(viewer.conn).dispatchers.get(dispatcher_id)
    return record is not None and record.stopped_at is None


def status_is(viewer, job, status):
    return viewer.get(job).status == status


def test_a_new_job_runs_on_the_idle_worker_not_on_the_busy_one(
        zeo_server, producer, viewer, workers, tmp_path):
    gates = tmp_path / "gates"
    gates.mkdir()
    workers.start(str(tmp_path / "a.log"), zeo_server.uri, "--threads", "1",
                  "--id", "A")
    long = producer.put(zasync.Job(process_jobs.hold, str(gates), "long"))
    process_jobs.wait_until(lambda: status_is(viewer, long, ACTIVE), TIMEOUT)
    assert viewer.get(long).dispatcher_id == "A"

    workers.start(str(tmp_path / "b.log"), zeo_server.uri, "--threads", "1",
                  "--id", "B")
    process_jobs.wait_until(lambda: registered(viewer, "B"), TIMEOUT)
    for number in range(3):
        job = producer.put(zasync.Job(process_jobs.quick, number))
        done = zasync.wait_for(job, timeout=TIMEOUT)
        assert done.result == number
        assert done.dispatcher_id == "B", f"job {number} ran on busy A"
    # A has had its single thread busy all along, and took nothing more
    assert viewer.get(long).status == ACTIVE
    record = zasync.get_queues(viewer.conn).dispatchers["A"]
    assert record.jobs.ids() == [long.id]

    (gates / "release").touch()
    done = zasync.wait_for(long, timeout=TIMEOUT)
    assert done.result == "long" and done.dispatcher_id == "A"


def test_a_filtered_worker_takes_only_what_its_filter_accepts(
        zeo_server, producer, viewer, workers, tmp_path):
    workers.start(str(tmp_path / "reports.log"), zeo_server.uri, "--threads", "2",
                  "--id", "reports", "--filter", "process_jobs:only_reports")
    process_jobs.wait_until(lambda: registered(viewer, "reports"), TIMEOUT)
    # chores first: the filtered worker must pass them over to reach reports
    chores = [producer.put(zasync.Job(process_jobs.chore, f"c{n}")) for n in range(3)]
    reports = [producer.put(zasync.Job(process_jobs.report, f"r{n}")) for n in range(3)]
    for n, job in enumerate(reports):
        done = zasync.wait_for(job, timeout=TIMEOUT)
        assert done.result == f"report r{n}" and done.dispatcher_id == "reports"
    # the reports, put after the chores, ran: the chores were passed over
    assert [viewer.get(job).status for job in chores] == [PENDING] * 3

    workers.start(str(tmp_path / "others.log"), zeo_server.uri, "--threads", "2",
                  "--id", "others")
    for n, job in enumerate(chores):
        done = zasync.wait_for(job, timeout=TIMEOUT)
        assert done.result == f"chore c{n}" and done.dispatcher_id == "others"
    assert "Traceback" not in workers[0].log + workers[1].log


# -- prefetch, in-process ---------------------------------------------------------

def _held(viewer, dispatcher_id):
    """Ids of the jobs the dispatcher's record holds, as committed now."""
    viewer.root()
    return set(zasync.get_queues(viewer.conn).dispatchers[dispatcher_id].jobs.ids())


def _claimed_at(job):
    """When `job` was last assigned (claimed), from its status history."""
    return [when for status, when, _ in job.status_history if status == ASSIGNED][-1]


@pytest.mark.parametrize("recent, ahead", [
    # nothing run yet, or jobs of 20 ms and more: one per thread
    (None, 2), (0.02, 2), (0.5, 2),
    # short jobs: about 50 ms of them per thread, by their moving average
    (0.01, 10), (0.002, 50), (0.019, 5),
    # ... at most 64 per thread, however short
    (0.0001, 128), (0.0, 128),
])
def test_the_default_prefetch_holds_about_fifty_ms_of_short_jobs_per_thread(recent, ahead):
    agent = zasync.Agent(2)
    agent._recent = recent
    assert agent.ahead == ahead


@pytest.mark.parametrize("recent", [None, 0.0001, 0.01, 0.5])
def test_a_prefetch_given_is_kept_whatever_the_jobs_take(recent):
    fixed = zasync.Agent(2, prefetch=3)
    fixed._recent = recent
    assert fixed.ahead == 3


@pytest.fixture
def local_producer(db):
    yield from scenario_jobs.opened(Producer, db)


@pytest.fixture
def local_viewer(db):
    yield from scenario_jobs.opened(Viewer, db)


def test_without_a_backlog_jobs_are_claimed_only_as_threads_free_up(
        db, local_producer, local_viewer):
    name = unique("no-backlog")
    meeting = scenario_jobs.rendezvous(name)
    jobs = [local_producer.put(zasync.Job(scenario_jobs.pause, name, n))
            for n in range(3)]
    dispatcher = zasync.Dispatcher(
        db, agents=[zasync.Agent(1, prefetch=4)], poll_interval=0.05)
    with dispatcher:
        try:
            for n, job in enumerate(jobs):
                assert meeting.wait_arrived(label=n), f"job {n} did not start"
                # the claim that started job n committed before it ran: had
                # it taken more ahead of the thread, they would show here
                assert _held(local_viewer, dispatcher.id) == {job.id}
                assert [local_viewer.get(other).status for other in jobs[n + 1:]] == [
                    PENDING] * (2 - n)
                assert local_viewer.get(job).status == ACTIVE
                meeting.release(n)
        finally:
            meeting.release()    # a failed test does not leave jobs waiting
        done = local_viewer.wait_completed(jobs)
    assert [job.result for job in done] == [0, 1, 2]
    assert scenario_jobs.calls[name] == 3
    assert {job.attempt_count for job in done} == {1}


def test_under_a_backlog_a_worker_takes_up_to_its_prefetch_ahead(
        db, local_producer, local_viewer):
    name = unique("backlog")
    meeting = scenario_jobs.rendezvous(name)
    jobs = [local_producer.put(zasync.Job(scenario_jobs.pause, name, n))
            for n in range(50)]
    dispatcher = zasync.Dispatcher(
        db, agents=[zasync.Agent(1, prefetch=4)], poll_interval=0.05)
    with dispatcher:
        try:
            assert meeting.wait_arrived(count=1)
            first = meeting.arrived[0]
            held = _held(local_viewer, dispatcher.id)
            assert len(held) == 5      # one running, four taken ahead
            statuses = {job.id: local_viewer.get(job).status for job in jobs}
            assert statuses[jobs[first].id] == ACTIVE
            ahead = [job for job in jobs
                     if job.id in held and job.id != jobs[first].id]
            assert [statuses[job.id] for job in ahead] == [ASSIGNED] * 4
            assert list(statuses.values()).count(PENDING) == 45

            # the next job taken ahead starts when the first one ends
            claimed = {job.id: _claimed_at(local_viewer.get(job)) for job in ahead}
            released_at = clock.now()
            meeting.release(first)
            assert meeting.wait_arrived(count=2)
            second = jobs[meeting.arrived[1]]
            assert second.id in claimed
            process_jobs.wait_until(
                lambda: local_viewer.get(second).status == ACTIVE, scenario_jobs.TIMEOUT)
            # it is active, and the dispatcher took one more ahead for the freed place
            process_jobs.wait_until(
                lambda: len(_held(local_viewer, dispatcher.id)) == 5
                and jobs[first].id not in _held(local_viewer, dispatcher.id),
                scenario_jobs.TIMEOUT)
        finally:
            meeting.release()    # the rest run at once
        done = local_viewer.wait_completed(jobs, timeout=scenario_jobs.TIMEOUT * 3)
    assert [job.result for job in done] == list(range(50))
    assert scenario_jobs.calls[name] == 50
    assert {job.attempt_count for job in done} == {1}
    assert {job.status for job in done} == {COMPLETED}
    # its start is when its thread took it, not when it was claimed
    started = local_viewer.get(second)
    assert claimed[second.id] < released_at <= started.started_at <= started.ended_at
    statuses = [status for status, _, _ in started.status_history]
    assert statuses == [NEW, PENDING, ASSIGNED, ACTIVE, COMPLETED]


@pytest.mark.parametrize("recent, held", [
    # short jobs: the free thread's job, and as many ahead as stay pending
    # beyond two: 3 of the 9 left, and 6 stay (no later claim takes them)
    (0.001, 1 + 3),
    # long jobs (or none run yet): only the free thread's
    (0.5, 1), (None, 1),
])
def test_below_a_backlog_a_worker_of_short_jobs_takes_half_the_rest_ahead(
        db, local_producer, local_viewer, recent, held):
    # 10 jobs are no backlog for Agent(1, prefetch=8) (twice 9 would be).
    # Taking none ahead left the end of every drain of short jobs claimed
    # a job per thread per commit; taking half leaves the rest to others.
    name = unique("below-backlog")
    meeting = scenario_jobs.rendezvous(name)
    jobs = [local_producer.put(zasync.Job(scenario_jobs.pause, name, n))
            for n in range(10)]
    agent = zasync.Agent(1, prefetch=8)
    agent._recent = recent      # as if it had run such jobs
    assert agent.short == (recent is not None and recent < 0.02)
    dispatcher = zasync.Dispatcher(db, agents=[agent], poll_interval=0.05)
    with dispatcher:
        try:
            assert meeting.wait_arrived(count=1)
            assert len(_held(local_viewer, dispatcher.id)) == held
            time.sleep(0.2)     # four more polls: none takes more
            assert len(_held(local_viewer, dispatcher.id)) == held
            statuses = [local_viewer.get(job).status for job in jobs]
            assert statuses.count(ASSIGNED) == held - 1
            assert statuses.count(PENDING) == 10 - held
        finally:
            meeting.release()
        done = local_viewer.wait_completed(jobs, timeout=scenario_jobs.TIMEOUT * 3)
    assert sorted(job.result for job in done) == list(range(10))
    assert scenario_jobs.calls[name] == 10
    assert {job.attempt_count for job in done} == {1}
