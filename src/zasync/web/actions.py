"""The four things an operator may do to a job, and removing a schedule,
each in its own transaction, retried on ConflictError by the transaction
manager.

Only these names are ever acted on: no request names a callable to run.
"""

import logging
import pickle

import transaction
import zodbpickle.pickle
from ZODB.POSException import ConflictError

from zasync.queue.database import close_connection, get_queues, open_connection
from zasync.interfaces import COMPLETED, PENDING, ZasyncError
from zasync.web.present import CANCELLABLE

logger = logging.getLogger(__name__)

ACTIONS = ("cancel", "retry", "dismiss", "remove")
ATTEMPTS = 5

# ZODB pickles with zodbpickle, whose errors are not the standard library's.
PICKLING_ERRORS = (pickle.PicklingError, zodbpickle.pickle.PicklingError)


class ActionError(ZasyncError):
    """Raised when an action cannot be done; `status` is the HTTP status."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


def _cancel(job):
    if job.status not in CANCELLABLE:
        raise ActionError(409, f"job {job.id} is {job.status}: only a pending or "
                               f"running job can be cancelled")
    was = job.status
    job.cancel()
    if was in (PENDING, "new"):
        return f"job {job.id} cancelled"
    return (f"job {job.id}: cancellation requested; it stops at its next "
            f"progress report or cancellation check")


def _retry(job):
    if not job.failed:
        raise ActionError(409, f"job {job.id} is {job.status}"
                               + (" and succeeded" if job.succeeded else "")
                               + ": only a failed job can be retried")
    if job.queue is None:
        raise ActionError(409, f"job {job.id} is in no queue")
    job.queue.retry(job)
    return f"job {job.id} put back in its queue"


def _dismiss(job):
    if job.status != COMPLETED or job.failure is None:
        raise ActionError(409, f"job {job.id} is {job.status} and did not fail: "
                               f"only a failed job can be dismissed")
    if job.dismissed:
        return f"job {job.id} was already dismissed"
    if job.queue is None:
        raise ActionError(409, f"job {job.id} is in no queue")
    job.queue.dismiss(job)
    return f"job {job.id} dismissed"


def _remove(job):
    if job.status != PENDING or job.queue is None:
        raise ActionError(409, f"job {job.id} is {job.status}: only a pending "
                               f"job can be removed")
    job.queue.remove(job)
    return f"job {job.id} removed from its queue"


#: What a bulk request may do to many jobs at once (see `zasync.web.bulk`).
BULK_ACTIONS = ("dismiss", "retry", "cancel")
#: At most this many jobs are acted on by one "all matching" request.
BULK_LIMIT = 1000

DO = {"cancel": _cancel, "retry": _retry, "dismiss": _dismiss, "remove": _remove}


def perform(db, job_id, action):
    """Do `action` to the job `job_id` in a transaction of its own; return
    a message saying what was done, or raise `ActionError`."""
    do = DO.get(action)
    if do is None:
        raise ActionError(404, f"no action {action!r}; expected one of {', '.join(ACTIONS)}")

    def change(conn):
        job = get_queues(conn).find_job(job_id)
        if job is None:
            raise ActionError(404, f"no job {job_id}")
        return do(job)
    return in_transaction(db, action, f"job {job_id}", change)


def unschedule(db, queue_name, name):
    """Remove the schedule `name` of the queue `queue_name` (and cancel
    its pending run) in a transaction of its own; return a message, or
    raise `ActionError`."""
    def change(conn):
        queue = get_queues(conn).get(queue_name)
        if queue is None or name not in queue.schedules:
            raise ActionError(404, f"no schedule {name!r} in queue {queue_name!r}")
        queue.unschedule(name)
        return f"schedule {name!r} removed; its pending run is cancelled"
    return in_transaction(db, "remove", f"schedule {name!r}", change)


def in_transaction(db, action, what, change):
    """Return `change(conn)` committed, retried on ConflictError; its
    errors, and the database's, as `ActionError`."""
    tm = transaction.TransactionManager()
    conn = open_connection(db, tm)
    try:
        for attempt in tm.attempts(ATTEMPTS):
            with attempt:
                message = change(conn)
                tm.get().note(f"zasync web: {action} {what}")
    except ActionError:
        raise
    except ConflictError:
        logger.warning("web: %s of %s still conflicted after %d attempts",
                       action, what, ATTEMPTS)
        raise ActionError(503, f"the database was too busy to {action} {what}; "
                               f"try again") from None
    except ZasyncError as error:
        raise ActionError(409, str(error)) from None
    except PICKLING_ERRORS as error:
        # Changing a job stores it again, with its callable and arguments:
        # that needs the code they come from, as a worker does.
        logger.warning("web: %s of %s: cannot store it: %s", action, what, error)
        raise ActionError(500, f"could not store {what} after the change "
                               f"({error}): run the web view where the jobs' code "
                               f"can be imported, as workers do") from None
    finally:
        tm.abort()
        close_connection(conn)
    logger.info("web: %s %s: %s", action, what, message)
    return message
