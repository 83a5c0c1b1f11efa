"""Workflows: a job that waits for other jobs without holding a worker, and
groups of jobs run one after another (`serial`) or side by side
(`parallel`).

How a job waits.  Rejected: a worker thread that blocks or polls until the
awaited job completes; it deadlocks a one-thread dispatcher as soon as a
job waits for a child of its own, and the wait is lost when the process
dies.  Instead:

1. The job's callable returns a job (`IJob`), or a group's step returns a
   `Wait` (`zasync.job.waiting.settle` follows what it returned).  In the
   transaction that stores the call's own work, the worker puts the
   awaited jobs not yet queued in the job's queue, records on the job what
   it waits for (`_waiting_for`, `_wait_mode`), gives each awaited job an
   internal callback (`_resume`), and drops the job from its dispatcher's
   record: the job stays `active`, but no thread and no dispatcher holds
   it, so recovery never takes it for an orphan.
2. When an awaited job completes, its worker runs `_resume` in a
   transaction of its own.  It writes the waiting job, so that two awaited
   jobs finishing at once conflict and one of them retries, then seeing the
   other's outcome (correct under snapshot isolation); once every awaited
   job has an outcome, it puts the waiting job back in its queue, marked
   `_resuming`.
3. The next claimer resumes it (`resume`), and counts no new attempt: a
   plain wait completes with the awaited job's outcome (the callable is not
   called again); a group's step is called again.  A step looks only at the
   states of its parts, so calling it again after a crash does no harm.

A job called directly (``job()``, and so the eager mode of
`zasync.testing`) cannot wait without blocking: it runs what it waits for
inline instead (`zasync.job.waiting.run_inline`).

What `Job` itself calls of the waiting (`settle`, `run_inline`) lives
below it, in `zasync.job.waiting`: this module builds jobs (the groups,
the callbacks of `begin_waiting`), so `Job` must not import it.  `_resume`
stays here, at the path stored callbacks name it by.
"""

import logging

from zasync.job import clock, local, storable
from zasync.job.failure import Failure
from zasync.job.job import Job
from zasync.job.waiting import OUTCOME, Failed, Wait, has_outcome
from zasync.interfaces import (
    NEW, PENDING, AlreadyQueuedError, Cancelled, ConfigurationError,
    GroupFailedError, IJob, UnstorableError)

logger = logging.getLogger(__name__)


# -- a job that waits ------------------------------------------------------------

def begin_waiting(job, awaited, mode):
    """Record on `job` (in its worker's transaction) that it waits, and ask
    each awaited job without an outcome to resume it."""
    job._waiting_for = tuple(awaited)
    job._wait_mode = mode
    job._waiting, job._resuming = True, False
    job._arrived = ()
    # No dispatcher holds it (its record drops it too): nothing may take it
    # for a job its worker left unfinished (recovery, a process agent).
    job.dispatcher_id = None
    if job.quotas and job._queue is not None:
        # Held while waiting, a quota of one would keep out the very job
        # waited for; the claim that resumes the job takes it again.
        job._queue._release_quotas(job)
    for each in awaited:
        if not has_outcome(each):
            each.add_callback(Job(_resume, job))
    names = ", ".join(each.id for each in awaited)
    job._live.progress_message = (
        f"waiting for job {names}" if len(awaited) == 1
        else f"waiting for {len(awaited)} jobs: {names}")


def _resume(outcome, waiting):
    """The callback of an awaited job: put `waiting` back in its queue once
    everything it waits for has an outcome.  Returns what it did."""
    awaited = local.current_job().parent
    # Not `_waiting` any more: another awaited job resumed it already (it
    # may even run again now, still holding its `_waiting_for`).
    if not waiting._waiting or all(each.id != awaited.id for each in waiting._waiting_for):
        return f"job {waiting.id} no longer waits for job {awaited.id}"
    # Written even when others are still awaited: see the module's docstring.
    waiting._arrived = waiting._arrived + (awaited.id,)
    left = [each.id for each in waiting._waiting_for if not has_outcome(each)]
    if left:
        return f"job {waiting.id} still waits for {len(left)} job(s)"
    waiting._waiting, waiting._resuming = False, True
    waiting._queue._requeue(waiting, clock.now())
    logger.info("job %s: job %s completed; job %s goes back to queue %r to resume",
                local.current_job().id, awaited.id, waiting.id, waiting._queue.name)
    return f"resumed job {waiting.id}"


def resume(job):
    """Clear a resumed job's wait; return the job whose outcome it takes,
    or None if its callable is to be called again."""
    awaited, mode = job._waiting_for, job._wait_mode
    job._waiting_for, job._wait_mode, job._arrived = (), None, ()
    job._waiting = job._resuming = False
    return awaited[0] if mode == OUTCOME and awaited else None


# -- groups ----------------------------------------------------------------------

def serial(*jobs, postprocess=None):
    """A job that runs `jobs` (jobs or storable callables) one after another
    in its own queue, each put when the one before completed; see the API
    documentation."""
    return _group(_serial_step, "serial", jobs, postprocess)


def parallel(*jobs, postprocess=None):
    """A job that puts `jobs` (jobs or storable callables) in its own queue
    all at once, run by whichever workers are free; see the API
    documentation."""
    return _group(_parallel_step, "parallel", jobs, postprocess)


def _group(step, kind, jobs, postprocess):
    """The group's job; each part records it (`IJob.group`), so that the
    web view links a part to its group without searching the queue."""
    parts = _check_parts(kind, jobs)
    group = Job(step, parts, _check_postprocess(kind, postprocess))
    for part in parts:
        part._group = group
    return group


def group_kind(job):
    """'serial' or 'parallel' for a group's job, else None."""
    named = (getattr(job, "_callable_name", None) is not None
             or getattr(job, "_callable_ref", None) is not None)
    if named and not job.callable_name.endswith(("._serial_step", "._parallel_step")):
        # named in the job's record: its call (maybe huge) stays unloaded,
        # its callable unimported
        return None
    return {_serial_step: "serial", _parallel_step: "parallel"}.get(job.callable)


def group_parts(job):
    """A group's parts, in order (empty for any other job)."""
    return tuple(job.args[0]) if group_kind(job) is not None else ()


def _check_parts(kind, parts):
    if not parts:
        raise ConfigurationError(
            f"{kind}() needs at least one part: a zasync.Job or a storable callable")
    checked = []
    for number, part in enumerate(parts, 1):
        if IJob.providedBy(part):
            if part.status != NEW or part._queue is not None or part._parent is not None:
                where = (f"a callback of job {part._parent.id}" if part._parent is not None
                         else part.status + (f" in queue {part._queue.name!r}"
                                             if part._queue is not None else ""))
                raise AlreadyQueuedError(
                    f"{kind}(): part {number}, job {part.id} ({part.callable_name}), "
                    f"is already {where}; a part is a new job, not yet put, or a callable")
            if any(part is seen for seen in checked):
                raise ConfigurationError(
                    f"{kind}(): part {number}, job {part.id}, was given twice")
        else:
            try:
                part = Job(part)
            except UnstorableError as error:
                raise UnstorableError(f"{kind}(): part {number}: {error}") from None
        checked.append(part)
    return tuple(checked)


def _check_postprocess(kind, postprocess):
    if postprocess is not None:
        try:
            storable.check_callable(postprocess)
        except UnstorableError as error:
            raise UnstorableError(f"{kind}(): postprocess: {error}") from None
    return postprocess


def _serial_step(parts, postprocess):
    """The step of a serial group: wait for the first part without an
    outcome; after a failed part, cancel the parts not yet run."""
    group = local.current_job()
    for index, part in enumerate(parts):
        if not has_outcome(part):
            return Wait((part,))
        if part.failure is not None:
            for later in parts[index + 1:]:
                if later.status in (NEW, PENDING):
                    later._cancel(
                        f"job {later.id} was not run: part {index + 1} (job "
                        f"{part.id}) of serial group {group.id} failed",
                        file_in=group._queue)
            break
    return _finish(group, "serial", parts, postprocess)


def _parallel_step(parts, postprocess):
    """The step of a parallel group: wait for every part without an outcome."""
    group = local.current_job()
    left = [part for part in parts if not has_outcome(part)]
    if left:
        return Wait(left)
    return _finish(group, "parallel", parts, postprocess)


def cancel_parts(job):
    """For a group cancelled while it waited: cancel its parts not yet run
    (a serial group's later parts), so that none is left new for ever."""
    if job.callable not in (_serial_step, _parallel_step):
        return
    for part in job.args[0]:
        if part.status in (NEW, PENDING):
            part._cancel(f"job {part.id} was not run: its group {job.id} was cancelled",
                         file_in=job._queue)


def _finish(group, kind, parts, postprocess):
    """The group's result: what `postprocess` returns (it may return a job
    to wait for), else the parts' results, else a `GroupFailedError`
    (returned as `Failed`, to keep the cancellations of the parts not run)."""
    if postprocess is not None:
        return postprocess(list(parts))
    failed = [(number, part) for number, part in enumerate(parts, 1)
              if part.failure is not None]
    if not failed:
        return [part.result for part in parts]
    run = [(n, p) for n, p in failed if not _not_run(p)]
    skipped = [str(n) for n, p in failed if _not_run(p)]
    text = "; ".join(f"part {n} (job {p.id}, {p.callable_name}): {p.failure}" for n, p in run)
    if skipped:
        text += f"; part{'s' if len(skipped) > 1 else ''} {', '.join(skipped)} not run"
    return Failed(Failure.from_exception(GroupFailedError(
        f"{kind} group {group.id}: {len(run)} of {len(parts)} parts failed: {text}")))


def _not_run(part):
    return part.attempt_count == 0 and part.failure.check(Cancelled) is not None
