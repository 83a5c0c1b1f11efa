"""Lifecycle events, sent with zope.event after the commit that made them
true, so a subscriber never sees state that was rolled back.  A failing
subscriber is logged, never raised into the worker or the producer."""

import logging

import zope.event
from zope.interface import implementer

from zasync.interfaces import (
    Cancelled, IDispatcherDied, IDispatcherStarted, IDispatcherStopped, IJobCancelled,
    IJobFailed, IJobPut, IJobRetried, IJobStarted, IJobSucceeded)

logger = logging.getLogger(__name__)


class _JobEvent:
    def __init__(self, job):
        self.job = job

    def __repr__(self):
        return f"<{type(self).__name__} {getattr(self.job, 'id', '?')}>"


@implementer(IJobPut)
class JobPut(_JobEvent):
    """See `IJobPut`."""


@implementer(IJobStarted)
class JobStarted(_JobEvent):
    """See `IJobStarted`."""


@implementer(IJobSucceeded)
class JobSucceeded(_JobEvent):
    """See `IJobSucceeded`."""


@implementer(IJobFailed)
class JobFailed(_JobEvent):
    """See `IJobFailed`."""


@implementer(IJobCancelled)
class JobCancelled(JobFailed):
    """See `IJobCancelled`."""


@implementer(IJobRetried)
class JobRetried(_JobEvent):
    """See `IJobRetried`."""

    def __init__(self, job, failure):
        super().__init__(job)
        self.failure = failure


class _DispatcherEvent:
    def __init__(self, dispatcher):
        self.dispatcher = dispatcher

    def __repr__(self):
        return f"<{type(self).__name__} {getattr(self.dispatcher, 'id', '?')}>"


@implementer(IDispatcherStarted)
class DispatcherStarted(_DispatcherEvent):
    """See `IDispatcherStarted`."""


@implementer(IDispatcherStopped)
class DispatcherStopped(_DispatcherEvent):
    """See `IDispatcherStopped`."""


@implementer(IDispatcherDied)
class DispatcherDied(_DispatcherEvent):
    """See `IDispatcherDied`; `dispatcher` is the dead one's id."""


def completed_event(job):
    """The event saying how `job` completed."""
    failure = job.failure
    if failure is None:
        return JobSucceeded(job)
    if failure.check(Cancelled):
        return JobCancelled(job)
    return JobFailed(job)


def notify(event):
    """Send `event` to the zope.event subscribers; log, never raise, what
    a subscriber raises."""
    try:
        zope.event.notify(event)
    except Exception:
        logger.exception("a subscriber failed on %r", event)


def _notify_if_committed(committed, event):
    if committed:
        notify(event)


def notify_after_commit(txn, event):
    """Send `event` once `txn` has committed; never if it aborts."""
    if zope.event.subscribers:
        txn.addAfterCommitHook(_notify_if_committed, (event,))
