"""Per-job time limits (``queue.put(..., timeout=SECONDS)``) on real
``zasync worker`` processes over a real ZEO server: a job in a worker
thread is stopped at its next ``zasync.progress`` or
``zasync.check_cancelled`` after its time is up; a job in a process agent's
child that never looks is terminated.  Either fails with
`JobTimeoutError`, its callbacks see that failure and its database changes
are aborted.
"""

import os
import time

import pytest

import zasync

import recovery_jobs as jobs
from recovery_jobs import (
    Counter, describe_outcome, start_registered, started_pid)

LIMIT = 1.0
#: How far past its limit a job may end: the worker notices it at the job's
#: next look (every 50 ms) or its next poll of the child (every 100 ms),
#: then commits the failure; a loaded CI machine is slow at each.
SLACK = 5.0
#: For a job in a process agent, the callbacks then run in a new child: a
#: new interpreter, slow to start on a loaded machine.
CHILD_SLACK = 10.0


def assert_timed_out(done, worker):
    assert done.failed and not done.cancelled
    assert done.failure.check(zasync.JobTimeoutError)
    assert f"time limit of {LIMIT:g} s" in done.failure.message
    assert done.attempt_count == 1 and done.attempts == ()
    assert done.dispatcher_id == worker.id
    [callback] = done.callbacks
    assert callback.succeeded
    assert callback.result.startswith("failed: zasync.interfaces.JobTimeoutError: ")


@pytest.mark.parametrize("how", ["progress", "check_cancelled"])
def test_a_thread_job_that_looks_fails_with_a_timeout_once_its_time_is_up(
        client, workers, folder, how):
    worker = start_registered(client, workers, "worker")
    # `wait_for_cancel` increments its counter, then looks every 50 ms for
    # up to a minute.
    job = client.put(jobs.wait_for_cancel, folder, "job", Counter(), how,
                     timeout=LIMIT, callbacks={"failure": describe_outcome})
    started_pid(folder, "job")
    began = time.monotonic()
    done = zasync.wait_for(job, timeout=jobs.TIMEOUT)

    assert time.monotonic() - began < LIMIT + SLACK
    assert_timed_out(done, worker)
    assert done.duration >= LIMIT
    assert done.args[2].value == 0          # its increment was aborted
    assert jobs.runs_of(folder, "job") == [(1, worker.pid)]
    assert worker.alive()


@pytest.mark.slow(reason="the worker and the job's child each import an application "
                         "that takes 3 s to import (slow_start)", seconds=20)
def test_a_process_job_that_never_looks_is_terminated_once_its_time_is_up(
        client, workers, folder, monkeypatch):
    # Each child imports the application first, for slow_start.SECONDS (3 s,
    # longer than the limit): a limit counted from the start of the child's
    # process would end it before its job began.
    monkeypatch.setenv("ZASYNC_APP", "slow_start")
    worker = start_registered(client, workers, "worker", "--processes", "--grace", "1")
    job = client.put(jobs.spin, folder, "job", 30.0, timeout=LIMIT,
                     callbacks={"failure": describe_outcome})
    child = started_pid(folder, "job")
    began = time.monotonic()
    done = zasync.wait_for(job, timeout=jobs.TIMEOUT)

    assert time.monotonic() - began < LIMIT + CHILD_SLACK
    assert_timed_out(done, worker)
    assert "its process was terminated" in done.failure.message
    assert jobs.runs_of(folder, "job", "finished") == []
    # The limit counts from the start of the job, not of its process: the
    # job ran, for its limit but for the moments between the child's signal
    # that it begins and the job's first line (0.26 s of 1 s seen at a load
    # average of 15, 0.6 s at 8: a bound on what it ran failed under load).
    with open(os.path.join(folder, "job.ran.1")) as ran:
        assert 0 < float(ran.read()) < LIMIT + CHILD_SLACK
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)
    worker.wait_log(f"job {done.id} ran past its time limit; terminating child {child}")
    assert worker.alive()
