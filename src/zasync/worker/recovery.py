"""Recovering the jobs of a dispatcher that is gone.

A dispatcher's record lists the jobs it holds.  When the dispatcher dies
(its heartbeat is older than the death interval), restarts under the same
id, or finds it holds a job none of its threads runs, each job is handed on
according to where it was:

- assigned and never started: back to its queue, as it was;
- running: its retry policy's `interrupted` says whether it runs again (at
  once: back in its place; or after a delay) or fails with
  `InterruptedJobError`;
- running its callbacks: handed to the next claimer, which runs the
  callbacks not yet completed.

Every change here is a write to the job, so a dispatcher wrongly declared
dead (a long pause) cannot commit a result over the job's new owner: its
commit conflicts, and its next look at the job shows it is no longer its.
"""

import datetime
import logging

from zasync.job import clock, events
from zasync.job.failure import Failure
from zasync.interfaces import (
    ACTIVE, ASSIGNED, CALLBACKS, InterruptedJobError)

logger = logging.getLogger(__name__)

ZERO = datetime.timedelta(0)


def _policy(job):
    from zasync.job.job import DEFAULT_RETRY_POLICY
    return job.retry_policy if job.retry_policy is not None else DEFAULT_RETRY_POLICY


def recover_job(job, owner_id, why, txn=None, now=None):
    """Hand on one job that `owner_id` held; return what was done:
    'requeued', 'retried', 'failed', 'callbacks' or None (not held)."""
    now = now or clock.now()
    status = job.status
    queue = job._queue
    if job.dispatcher_id != owner_id or queue is None:
        return None
    if status == ASSIGNED:
        queue._requeue(job, job.begin_after)
        logger.info("job %s: put back in queue %r (%s)", job.id, queue.name, why)
        return "requeued"
    if status == ACTIVE:
        if job._status == ASSIGNED:     # started from a worker's backlog
            job._ensure_started(owner_id, job._started_ahead() or now)
        attempt = job.attempt_count
        error = InterruptedJobError(
            f"job {job.id} was interrupted on attempt {attempt}: {why}")
        failure = Failure.from_exception(error)
        try:
            delay = _policy(job).interrupted(job, attempt)
        except Exception:
            logger.exception("job %s: retry policy failed; failing the job", job.id)
            delay = None
        if delay is None:
            more = job._complete(failure=failure, dispatcher_id=owner_id)
            if more:
                queue._put_completed(job, notify=False)
            else:
                queue.history.add(job)
                if txn is not None:
                    events.notify_after_commit(txn, events.completed_event(job))
            logger.warning("job %s failed: %s", job.id, failure)
            return "failed"
        job._record_attempt(failure)
        # Again at once: in its place (its priority, then its first due
        # time), not behind every job due since.
        queue._requeue(job, job.begin_after if delay <= ZERO else now + delay)
        if txn is not None:
            events.notify_after_commit(txn, events.JobRetried(job, failure))
        logger.info("job %s: interrupted (%s); runs again (attempt %d)",
                    job.id, why, attempt + 1)
        return "retried"
    if status == CALLBACKS:
        queue._put_completed(job, notify=False)
        logger.info("job %s: its callbacks are handed on (%s)", job.id, why)
        return "callbacks"
    return None


def recover_record(record, why, txn=None, only=None, now=None):
    """Hand on the jobs `record` holds (those whose ids are in `only`, if
    given); return {job id: what was done}."""
    done = {}
    for job in record.jobs:
        if only is not None and job.id not in only:
            continue
        done[job.id] = recover_job(job, record.id, why, txn, now)
        record.jobs.discard(job.id)
    return done


def dead_records(container, death_interval, now, exclude=()):
    """The records of dispatchers not stopped whose last heartbeat is older
    than `death_interval` seconds."""
    found = []
    for record in container.dispatchers.values():
        if record.id in exclude or record.stopped_at is not None:
            continue
        if (now - record.last_ping).total_seconds() > death_interval:
            found.append(record)
    return found
