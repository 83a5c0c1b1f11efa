"""Scenarios: jobs run by a real in-process Dispatcher on a FileStorage."""

import time

import pytest
import zope.event
from zope.interface.verify import verifyObject

import zasync
from zasync.interfaces import IDispatcher

import scenario_jobs as jobs
from scenario_jobs import Viewer, rendezvous, unique

TIMEOUT = jobs.TIMEOUT




def test_a_dispatcher_provides_its_interface(db):
    verifyObject(IDispatcher, zasync.Dispatcher(db, threads=1))


def test_a_dispatchers_record_says_which_agents_filter_jobs(db):
    # Other dispatchers read it to judge whether to leave this one's inbox
    # lanes to it (see test_queue's inbox lane tests).
    agents = [zasync.Agent(size=2, name="any"),
              zasync.Agent(size=1, name="short", filter=lambda job: True)]
    with zasync.Dispatcher(db, agents=agents, poll_interval=0.05) as running:
        with Viewer(db) as fresh:
            info = zasync.get_queues(fresh.conn).dispatchers[running.id].info
            assert info["agents"] == [{"name": "any", "size": 2, "filtered": False},
                                      {"name": "short", "size": 1, "filtered": True}]


def test_a_committed_job_runs_and_wait_for_returns_it_completed(dispatcher, producer):
    job = producer.put(zasync.Job(jobs.add, 2, 3))
    done = zasync.wait_for(job, timeout=TIMEOUT)
    assert done.status == zasync.COMPLETED
    assert done.succeeded and not done.failed
    assert done.result == 5
    assert done.failure is None
    assert done.id == job.id
    assert done.attempt_count == 1


def test_a_plain_callable_put_with_arguments_runs(dispatcher, producer):
    job = producer.put(jobs.add, 40, 2)
    assert zasync.wait_for(job, timeout=TIMEOUT).result == 42


def test_a_job_put_in_an_aborted_transaction_never_runs(dispatcher, producer, viewer):
    name = unique("aborted")
    producer.tm.begin()
    aborted = producer.queue().put(zasync.Job(jobs.mark, name))
    aborted_id = aborted.id
    producer.tm.abort()
    assert aborted._p_oid is None
    # A job committed after it runs; the dispatcher has had every chance.
    marker = producer.put(zasync.Job(jobs.mark, unique("marker")))
    zasync.wait_for(marker, timeout=TIMEOUT)
    assert jobs.calls[name] == 0
    viewer.root()
    queue = zasync.get_queue(viewer.conn)
    assert queue.get(aborted_id) is None
    assert len(queue) == 0


def test_a_dispatcher_never_runs_more_jobs_than_its_threads(dispatcher, producer, viewer):
    threads = dispatcher.agents[0].size
    name = unique("limit")
    meeting = rendezvous(name)
    put = [producer.put(zasync.Job(jobs.pause, name, index))
           for index in range(threads + 1)]
    try:
        assert meeting.wait_arrived(threads), "the dispatcher did not start its jobs"
        statuses = [viewer.get(job).status for job in put]
        assert statuses.count(zasync.ACTIVE) == threads, statuses
        assert statuses.count(zasync.PENDING) == 1, statuses
        assert len(meeting.arrived) == threads
        assert dispatcher.agents[0].free == 0
    finally:
        meeting.release()
    done = viewer.wait_completed(put)
    assert [job.result for job in done] == list(range(threads + 1))
    assert jobs.calls[name] == threads + 1


def test_an_idle_dispatcher_starts_a_committed_job_without_waiting_out_its_poll(
        db, producer):
    with zasync.Dispatcher(db, threads=1, poll_interval=60) as dispatcher:
        # the first job finds the dispatcher in its first wait, the second
        # finds it back in its long wait after the first
        for number in range(2):
            began = time.monotonic()
            job = producer.put(zasync.Job(jobs.add, number, 1))
            assert zasync.wait_for(job, timeout=TIMEOUT).result == number + 1
            assert time.monotonic() - began < TIMEOUT < dispatcher.poll_interval


@pytest.fixture
def hold_after_commit():
    zope.event.subscribers.append(jobs.hold_worker_after_commit)
    yield jobs.held_after_commit
    zope.event.subscribers.remove(jobs.hold_worker_after_commit)


def test_a_job_put_while_the_only_thread_finishes_another_starts_promptly(
        db, producer, hold_after_commit):
    # The first job's result is committed (wait_for sees it) but its worker
    # thread has not yet freed its slot when the second job is put: the
    # dispatcher, woken by that put, finds no free thread.  It must claim
    # the job once the thread is free, not after its 60 s poll.
    name = unique("busy")
    meeting = rendezvous(name)
    hold_after_commit.add(name)
    with zasync.Dispatcher(db, threads=1, poll_interval=60):
        first = producer.put(zasync.Job(jobs.mark, name))
        try:
            assert meeting.wait_arrived(label="committed")
            assert zasync.wait_for(first, timeout=TIMEOUT).succeeded
            second = producer.put(zasync.Job(jobs.add, 20, 22))
        finally:
            meeting.release()
        assert zasync.wait_for(second, timeout=TIMEOUT).result == 42


def test_callbacks_of_a_job_cancelled_while_every_thread_is_busy_run_once_one_frees(
        db, producer, viewer):
    # The cancelled job goes back through the inbox to have its callbacks
    # run.  The busy dispatcher's claims of none (every 0.05 s) must leave
    # it there, not take it with no thread to run it: taken, it would wait
    # for the next heartbeat (a minute) to be handed on.
    name = unique("busy-cancel")
    meeting = rendezvous(name)
    with zasync.Dispatcher(db, agents=[zasync.Agent(1, prefetch=0)], poll_interval=0.05,
                           ping_interval=60):
        busy = producer.put(zasync.Job(jobs.pause, name, "busy"))
        assert meeting.wait_arrived(label="busy")
        waiting = zasync.Job(jobs.add, 1, 2)
        waiting.add_callback(zasync.Job(jobs.record_outcome, name))
        waiting = producer.put(waiting)
        try:
            for attempt in producer.tm.attempts(5):
                with attempt:
                    assert producer.conn.get(waiting._p_oid).cancel()
            # Not a synchronisation: time for the dispatcher, woken by the
            # cancel and polling every 0.05 s, to make several claims of
            # none while its only thread is held (what took the job before).
            time.sleep(0.3)
        finally:
            meeting.release()
        done = zasync.wait_for(waiting, timeout=10)
        assert done.cancelled
        [callback] = done.callbacks
        assert callback.succeeded
        [outcome] = jobs.records[name]      # it ran once, given the failure
        assert outcome.check(zasync.Cancelled) is not None
        assert zasync.wait_for(busy, timeout=TIMEOUT).succeeded


def test_stop_returns_and_the_context_manager_starts_and_stops(db, producer):
    dispatcher = zasync.Dispatcher(db, threads=1, poll_interval=0.05)
    assert not dispatcher.running
    with dispatcher as entered:
        assert entered is dispatcher
        assert dispatcher.running
        job = producer.put(zasync.Job(jobs.add, 1, 1))
        assert zasync.wait_for(job, timeout=TIMEOUT).result == 2
    assert not dispatcher.running

    dispatcher = zasync.Dispatcher(db, threads=1, poll_interval=0.05)
    dispatcher.start()
    began = time.monotonic()
    assert dispatcher.stop(timeout=TIMEOUT) is True
    assert time.monotonic() - began < TIMEOUT
    assert not dispatcher.running


def test_stop_with_a_timeout_returns_while_a_job_still_runs(db, producer, viewer):
    name = unique("stop")
    meeting = rendezvous(name)
    dispatcher = zasync.Dispatcher(db, threads=1, poll_interval=0.05)
    dispatcher.start()
    job = producer.put(zasync.Job(jobs.progress_then_pause, name, (0.9, "after stop")))
    try:
        assert meeting.wait_arrived(label="start")
        began = time.monotonic()
        assert dispatcher.stop(timeout=0.2) is False
        assert time.monotonic() - began < TIMEOUT
        assert not dispatcher.running
        # the job goes on, and still reports its progress
        meeting.release("start")
        assert meeting.wait_arrived(label=0)
        seen = viewer.get(job)
        assert (seen.status, seen.progress, seen.progress_message) == (
            zasync.ACTIVE, 0.9, "after stop")
    finally:
        meeting.release()
    done = zasync.wait_for(job, timeout=TIMEOUT)
    assert done.succeeded, done.failure
    assert done.result == 1
    assert dispatcher.agents[0].wait_idle(TIMEOUT)


def test_a_method_of_a_persistent_object_changes_the_data_exactly_once(
        dispatcher, producer):
    with producer.tm:
        counter = producer.conn.root()["counter"] = jobs.Counter()
    job = producer.put(zasync.Job(counter.increment))
    done = zasync.wait_for(job, timeout=TIMEOUT)
    assert done.result == 1
    # the effect committed with the result: the same snapshot shows both
    assert done._p_jar.root()["counter"].value == 1
    with Viewer(producer.db) as fresh:
        assert fresh.root()["counter"].value == 1


def test_a_job_that_changes_data_then_raises_leaves_no_change(dispatcher, producer):
    with producer.tm:
        counter = producer.conn.root()["counter"] = jobs.Counter()
    job = producer.put(zasync.Job(counter.increment_then_fail))
    done = zasync.wait_for(job, timeout=TIMEOUT)
    assert done.failed
    assert done.failure.check(ValueError)
    assert "setting the counter to 1" in done.failure.message
    assert done.attempt_count == 1
    assert done._p_jar.root()["counter"].value == 0
    with Viewer(producer.db) as fresh:
        assert fresh.root()["counter"].value == 0


def test_a_job_in_a_named_queue_runs_only_on_a_dispatcher_serving_it(
        db, dispatcher, producer, viewer):
    name = unique("mail")
    mail_job = producer.put(zasync.Job(jobs.mark, name), queue="mail")
    assert mail_job.queue_name == "mail"
    # the default queue's dispatcher runs a later job, not the mail job
    marker = producer.put(zasync.Job(jobs.add, 1, 2))
    assert zasync.wait_for(marker, timeout=TIMEOUT).result == 3
    assert viewer.get(mail_job).status == zasync.PENDING
    assert jobs.calls[name] == 0
    with zasync.Dispatcher(db, threads=1, queues=("mail",), poll_interval=0.05):
        done = zasync.wait_for(mail_job, timeout=TIMEOUT)
    assert done.result == name
    assert jobs.calls[name] == 1
    assert done.dispatcher_id != dispatcher.id


def test_a_dispatcher_on_an_unknown_queue_raises_at_start(db):
    dispatcher = zasync.Dispatcher(db, threads=1, queues=("", "nope"))
    with pytest.raises(zasync.UnknownQueueError, match="nope"):
        dispatcher.start()
    assert not dispatcher.running


def test_two_dispatchers_on_one_database_never_run_a_job_twice(db, producer, viewer):
    name = unique("twice")
    count = 200
    first = zasync.Dispatcher(db, threads=2, poll_interval=0.02)
    second = zasync.Dispatcher(db, threads=2, poll_interval=0.02)
    with first, second:
        put = [producer.put(zasync.Job(jobs.count_by_job_id, name))
               for _ in range(count)]
        done = viewer.wait_completed(put, timeout=60)
    ids = [job.id for job in put]
    assert len(set(ids)) == count
    assert all(job.succeeded for job in done), [
        (job.id, job.status, job.failure) for job in done if not job.succeeded]
    assert [job.result for job in done] == ids
    assert [jobs.calls[job_id] for job_id in ids] == [1] * count
    assert sorted(jobs.records[name]) == sorted(ids)
    assert {job.attempt_count for job in done} == {1}
    ran_on = {job.dispatcher_id for job in done}
    assert ran_on <= {first.id, second.id}
