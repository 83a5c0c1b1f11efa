"""Cancelling jobs run by real ``zasync worker`` processes over a real ZEO
server: a pending job, a running job in a worker thread (which sees the
cancellation at its next ``zasync.progress`` or ``zasync.check_cancelled``)
and a running job in a process agent's child that never looks (the child
is terminated); and a child killed from outside, which counts as an
interruption of its job.
"""

import datetime
import os
import signal
import time

import pytest

import zasync
from zasync.job import clock

import recovery_jobs as jobs
from recovery_jobs import (
    STARTUP, Counter, describe_outcome, hold, start_registered, started_pid, touch,
    wait_until)

#: Seconds a process agent's child gets between SIGTERM and SIGKILL.
GRACE = 1.0
#: What a cancellation may take beyond what the test asks for: the worker
#: polls the cancel request every 0.1 s, then a commit or two.
SLACK = 5.0
#: For a job in a process agent, the callbacks then run in a new child: a
#: new interpreter, slow to start on a loaded machine.
CHILD_SLACK = 10.0


def cancel(client, job):
    """Cancel `job` in a transaction of the test's own; return when that
    committed (time.monotonic())."""
    for attempt in client.tm.attempts(5):
        with attempt:
            assert client.conn.get(job._p_oid).cancel() is True
    return time.monotonic()


def gone(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def assert_cancelled(done, callback_dispatcher):
    assert done.status == zasync.COMPLETED and done.cancelled
    assert done.failure.check(zasync.Cancelled)
    [callback] = done.callbacks
    assert callback.succeeded and not callback.skipped
    assert callback.result.startswith("failed: zasync.interfaces.Cancelled: ")
    assert callback.dispatcher_id == callback_dispatcher


def test_cancelling_a_pending_job_takes_it_out_and_completes_it_as_cancelled(
        client, workers, folder):
    worker = start_registered(client, workers, "worker")
    later = clock.now() + datetime.timedelta(hours=1)
    job = client.put(hold, folder, "job", Counter(), begin_after=later,
                     callbacks={"failure": describe_outcome})
    # Wait until the worker has moved it from the inbox into the queue's
    # ordered pending jobs, where it waits for its time.
    wait_until(lambda: zasync.get_queue(client.queues()).pending_count() == 1,
               STARTUP, "the job to be filed as pending")

    cancel(client, job)
    done = zasync.wait_for(job, timeout=jobs.TIMEOUT)

    assert_cancelled(done, worker.id)   # the worker ran the callback
    assert "before it started" in done.failure.message
    assert done.attempt_count == 0
    assert done.args[2].value == 0
    queue = zasync.get_queue(client.queues())
    assert len(queue) == 0 and list(queue) == []
    assert queue.pending_count() == 0
    assert jobs.runs(folder) == []


@pytest.mark.parametrize("how", ["progress", "check_cancelled"])
def test_a_running_job_in_a_thread_sees_the_cancellation_at_its_next_look(
        client, workers, folder, how):
    worker = start_registered(client, workers, "worker")
    job = client.put(jobs.wait_for_cancel, folder, "job", Counter(), how,
                     callbacks={"failure": describe_outcome})
    started_pid(folder, "job")

    cancelled = cancel(client, job)
    done = zasync.wait_for(job, timeout=jobs.TIMEOUT)

    assert time.monotonic() - cancelled < SLACK
    assert_cancelled(done, worker.id)
    assert "cancelled while it ran" in done.failure.message
    assert done.dispatcher_id == worker.id
    assert done.attempt_count == 1 and done.attempts == ()
    # the job had incremented its counter: that change was aborted
    assert done.args[2].value == 0
    assert jobs.runs_of(folder, "job") == [(1, worker.pid)]
    assert worker.alive()


@pytest.mark.parametrize("function", [jobs.spin, jobs.stubborn_spin],
                         ids=["stops-on-sigterm", "ignores-sigterm"])
def test_a_running_job_in_a_child_process_that_never_looks_is_terminated(
        client, workers, folder, function):
    worker = start_registered(client, workers, "worker", "--processes",
                              "--grace", str(GRACE))
    job = client.put(function, folder, "job", 30.0,
                     callbacks={"failure": describe_outcome})
    child = started_pid(folder, "job")
    assert child != worker.pid

    cancelled = cancel(client, job)
    done = zasync.wait_for(job, timeout=jobs.TIMEOUT)
    elapsed = time.monotonic() - cancelled

    assert_cancelled(done, worker.id)
    assert "its process was terminated" in done.failure.message
    assert gone(child)
    if function is jobs.stubborn_spin:
        assert GRACE <= elapsed < GRACE + CHILD_SLACK, elapsed  # SIGKILL after the grace
    else:
        assert elapsed < CHILD_SLACK, elapsed
    assert jobs.runs_of(folder, "job", "finished") == []
    worker.wait_log(f"job {done.id} was cancelled; terminating child {child}")
    assert worker.alive()


def test_a_child_process_killed_from_outside_counts_as_an_interruption(
        client, workers, folder):
    worker = start_registered(client, workers, "worker", "--processes")
    job = client.put(hold, folder, "job", Counter())
    first_child = started_pid(folder, "job")
    assert first_child != worker.pid

    os.kill(first_child, signal.SIGKILL)
    touch(folder, "job.release")
    done = zasync.wait_for(job, timeout=jobs.TIMEOUT)

    assert done.succeeded, done.failure
    assert done.attempt_count == 2
    [interrupted] = done.attempts
    assert interrupted.check(zasync.InterruptedJobError)
    assert f"status {-signal.SIGKILL}" in interrupted.message
    second_child = done.result["pid"]
    assert second_child not in (first_child, worker.pid)
    assert jobs.runs_of(folder, "job") == [(1, first_child), (2, second_child)]
    assert done.args[2].value == 1
    assert done.dispatcher_id == worker.id
    assert worker.alive()
