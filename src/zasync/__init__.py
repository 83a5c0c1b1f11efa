"""zasync: deferred work for ZODB applications.

A transaction puts a job into a persistent queue; workers claim it, run it
and record its result in the same database.  See README.rst and docs/.
"""

# First, so that the module paths of before the packages (zasync.failure,
# zasync.dispatcher...) import, for users and for pickles alike.
from zasync import compat as _compat
_compat.install()

from zasync.worker.agent import Agent
from zasync.queue.database import (
    close_databases, forget_oids_on_reconnect, get_queue, get_queues, install,
    open_databases, open_db, wait_for)
from zasync.worker.dispatcher import Dispatcher
from zasync.job.failure import Failure
from zasync.interfaces import (
    ACTIVE, ASSIGNED, CALLBACKS, COMPLETED, NEW, PENDING, STATUSES,
    AlreadyCompletedError, AlreadyQueuedError, Cancelled, ConfigurationError,
    DatabaseUnavailableError,
    DuplicateScheduleError, GroupFailedError, InterruptedJobError, JobStateError,
    JobTimeoutError, MissingCodeError, NaiveDatetimeError, NotInJobError, NotInstalledError,
    NotPendingError, UnknownQueueError, UnknownScheduleError, UnstorableError,
    UnstorableResultError, WaitTimeoutError, ZasyncError)
from zasync.job.job import Job
from zasync.job.local import check_cancelled, current_job, progress
from zasync.job.retry import Backoff, NeverRetry, RetryTransient
from zasync.job.workflow import parallel, serial

__all__ = [
    "Agent", "Backoff", "Dispatcher", "Failure", "Job", "NeverRetry",
    "RetryTransient", "check_cancelled", "close_databases", "current_job",
    "forget_oids_on_reconnect", "get_queue", "get_queues", "install",
    "open_databases", "open_db", "parallel", "progress", "serial", "wait_for",
    "NEW", "PENDING", "ASSIGNED", "ACTIVE", "CALLBACKS", "COMPLETED", "STATUSES",
    "ZasyncError", "AlreadyCompletedError", "AlreadyQueuedError", "Cancelled",
    "DatabaseUnavailableError",
    "ConfigurationError", "DuplicateScheduleError", "GroupFailedError",
    "InterruptedJobError", "JobStateError", "JobTimeoutError", "MissingCodeError",
    "NaiveDatetimeError",
    "NotInJobError",
    "NotInstalledError", "NotPendingError", "UnknownQueueError",
    "UnknownScheduleError", "UnstorableError", "UnstorableResultError",
    "WaitTimeoutError",
]
