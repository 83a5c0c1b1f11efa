"""Lifecycle events, sent with zope.event after the commit that made them
true, so a subscriber never sees state that was rolled back.  A failing
subscriber is logged, never raised into the worker or the producer."""

import collections
import itertools
import logging
import threading

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
    a subscriber raises.  Each subscriber is called on its own, so one that
    fails does not keep the event from those after it."""
    for subscriber in list(zope.event.subscribers):
        try:
            subscriber(event)
        except Exception:
            logger.exception("a subscriber failed on %r", event)


# -- sending a job's events in order ------------------------------------------
#
# A job's events are made true by transactions of different threads: the
# producer's put, the dispatcher's claim, the worker's outcome.  Each is
# sent by an after-commit hook in the thread that committed, and a claim can
# commit (woken by the put's invalidation) before the producer's thread has
# run its hooks: without care, JobStarted would overtake JobPut.  So each
# job event takes a ticket when its transaction starts to commit (a later
# event of a job always starts to commit after the commit of the one
# before), and is sent only once the job's events of lower tickets were
# sent, or dropped with their failed commit.  A transaction still open has
# no ticket, so it holds up nobody: another transaction of the same thread
# that commits first sends its events at once.  A thread sending events may
# send others from its subscribers (a nested commit) without waiting for
# itself.
# Rejected: one lock around all sending, which orders nothing across threads;
# tickets taken when the event is registered, which made a commit wait
# ORDER_TIMEOUT for an earlier transaction left open in its own thread.

#: Seconds an event waits for its job's earlier events before it is sent
#: anyway (a subscriber that blocks, a transaction never ended); the stale
#: earlier tickets are then forgotten, so that the stall happens once.
ORDER_TIMEOUT = 10.0

_order = threading.Condition()
_tickets = itertools.count()
_undelivered = {}                    # job id -> tickets registered, not yet settled
_sending = threading.local()         # .tickets: those this thread is sending
_sent_once = collections.OrderedDict()   # `once` keys of events already sent
_SENT_ONCE_KEPT = 10000


def _tickets_sent_here():
    tickets = getattr(_sending, "tickets", None)
    if tickets is None:
        tickets = _sending.tickets = set()
    return tickets


def _take_ticket(key, slot):
    """Before-commit hook: the event's place in its job's order."""
    slot.append(next(_tickets))
    with _order:
        _undelivered.setdefault(key, set()).add(slot[0])


def _settle(key, slot):
    if not slot:            # its commit never started
        return
    ticket = slot[0]
    with _order:
        tickets = _undelivered.get(key)
        if tickets is not None:
            tickets.discard(ticket)
            if not tickets:
                del _undelivered[key]
        _order.notify_all()


def _first_time(once):
    if once is None:
        return True
    with _order:
        if once in _sent_once:
            return False
        _sent_once[once] = True
        while len(_sent_once) > _SENT_ONCE_KEPT:
            _sent_once.popitem(last=False)
    return True


def _deliver(committed, event, key, slot, once):
    if not committed:
        _settle(key, slot)
        return
    ticket = slot[0]
    here = _tickets_sent_here()

    def earlier():
        return [t for t in _undelivered.get(key, ()) if t < ticket and t not in here]
    with _order:
        if not _order.wait_for(lambda: not earlier(), ORDER_TIMEOUT):
            stale = earlier()
            logger.warning("%r waited %s s for earlier events of its job; sent "
                           "without them (%d dropped from the order)", event,
                           ORDER_TIMEOUT, len(stale))
            for t in stale:
                _undelivered[key].discard(t)
    here.add(ticket)
    try:
        if _first_time(once):
            notify(event)
    finally:
        here.discard(ticket)
        _settle(key, slot)


def _notify_if_committed(committed, event):
    if committed:
        notify(event)


def wanted():
    """Whether an event sent now would reach a subscriber (else making it
    can be spared)."""
    return bool(zope.event.subscribers)


def notify_after_commit(txn, event, once=None):
    """Send `event` once `txn` has committed; never if it aborts.

    The events of one job are sent in the order of the transactions that
    made them true, whichever threads committed those.  Of the events given
    the same `once` key, only the first committed is sent (two transactions
    that may both record one fact, such as a job's start).
    """
    if not zope.event.subscribers:
        return
    key = getattr(getattr(event, "job", None), "id", None)
    if key is None:
        txn.addAfterCommitHook(_notify_if_committed, (event,))
        return
    slot = []                   # its ticket, once its commit starts
    txn.addBeforeCommitHook(_take_ticket, (key, slot))
    txn.addAfterCommitHook(_deliver, (event, key, slot, once))
    txn.addAfterAbortHook(_settle, (key, slot))
