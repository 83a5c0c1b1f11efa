"""What a job's callable returned, followed: a value, a failure, or jobs
to wait for (`settle`), and the two ways to wait for them, a worker's
(`put_awaited`) and a direct call's (`run_inline`).

`Job` calls `settle` when it is called directly, and `zasync.job.workflow`
builds jobs (its groups, the callback that resumes a waiting job), so what
`Job` needs of the waiting lives here, below both; `zasync.job.workflow`
says how a job waits and holds the rest.  This module makes no job.
"""

from zasync.interfaces import CALLBACKS, COMPLETED, NEW, PENDING, IJob, JobStateError

OUTCOME = "outcome"   # a plain wait: complete with the awaited job's outcome
CALL = "call"         # a group's step: call the callable again


class Wait:
    """What a step returns to be called again once `jobs` completed.

    Never stored: the worker turns it into the waiting job's state.
    """

    def __init__(self, jobs):
        self.jobs = tuple(jobs)


class Failed:
    """What a step returns to fail its job with `failure` (an `IFailure`)
    yet commit what it did (a serial group cancels the parts it will not
    run); an exception raised would roll that back."""

    def __init__(self, failure):
        self.failure = failure


def has_outcome(job):
    """Whether `job` has its result or failure (its callbacks may still run)."""
    return job.status in (CALLBACKS, COMPLETED)


def settle(job, value, on_wait):
    """Follow what `job`'s callable returned.

    Return ("value", result), ("failure", failure) or ("wait", (jobs, mode))
    when the jobs awaited have no outcome yet.  `on_wait(job, jobs)` is
    called first with those jobs: it puts them in a queue (`put_awaited`,
    for a worker) or runs them (`run_inline`, for a direct call), and
    returns whether they all have an outcome now.
    """
    while True:
        if IJob.providedBy(value):
            if value is job:
                raise JobStateError(f"job {job.id} returned itself: it cannot wait for itself")
            awaited, mode = (value,), OUTCOME
        elif isinstance(value, Wait):
            awaited, mode = value.jobs, CALL
        elif isinstance(value, Failed):
            return "failure", value.failure
        else:
            return "value", value
        if not all(has_outcome(each) for each in awaited) and not on_wait(job, awaited):
            return "wait", (awaited, mode)
        if mode == CALL:
            value = job._invoke()
            continue
        done = awaited[0]
        if done.failure is not None:
            return "failure", done.failure
        return "value", done.result


def _put(job, awaited):
    """Put `awaited` in `job`'s queue if it was in none, at `job`'s priority."""
    if awaited.status == NEW and awaited._queue is None and awaited._parent is None:
        job._queue.put(awaited, priority=job.priority)


def put_awaited(job, awaited):
    """For a worker: put the awaited jobs not yet queued; they are waited for."""
    for each in awaited:
        _put(job, each)
    return False


def run_inline(job, awaited):
    """For a direct call: run the awaited jobs here and now."""
    for each in awaited:
        if has_outcome(each):
            continue
        if each.status not in (NEW, PENDING) or each._parent is not None:
            raise JobStateError(
                f"job {job.id}, called directly, waits for job {each.id}, which is "
                f"{each.status}" + (" (a callback)" if each._parent is not None else "")
                + "; a direct call can only run new or pending jobs inline")
        if job._queue is not None:
            _put(job, each)     # filed in the queue, as from a worker
        each()
    return True
