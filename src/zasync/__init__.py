"""zasync: deferred work for ZODB applications.

A transaction puts a job into a persistent queue; workers claim it, run it
and record its result in the same database.  See README.rst and docs/.
"""

from zasync.agent import Agent
from zasync.database import (
    close_databases, forget_oids_on_reconnect, get_queue, get_queues, install,
    open_databases, open_db, wait_for)
from zasync.dispatcher import Dispatcher
from zasync.failure import Failure
from zasync.interfaces import (
    ACTIVE, ASSIGNED, CALLBACKS, COMPLETED, NEW, PENDING, STATUSES,
    AlreadyCompletedError, AlreadyQueuedError, Cancelled, ConfigurationError,
    DatabaseUnavailableError,
    DuplicateScheduleError, GroupFailedError, InterruptedJobError, JobStateError,
    JobTimeoutError, MissingCodeError, NaiveDatetimeError, NotInJobError, NotInstalledError,
    NotPendingError, UnknownQueueError, UnknownScheduleError, UnstorableError,
    UnstorableResultError, WaitTimeoutError, ZasyncError)
from zasync.job import Job
from zasync.local import check_cancelled, current_job, progress
from zasync.retry import Backoff, NeverRetry, RetryTransient
from zasync.workflow import parallel, serial

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
