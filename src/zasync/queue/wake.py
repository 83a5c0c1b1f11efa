"""Waking the workers of this process when a commit gives them work.

The queue knows no workers: after a commit that put (or released) a job it
wakes whatever registered here, and a worker that wants to hear of it --
a dispatcher, or the eager mode of `zasync.testing` -- registers itself,
an object with a ``wake()`` method, and unregisters when it stops.

Rejected: the queue calling the dispatcher module (its first version).  It
made the queue import the worker, the one dependency that must point the
other way, and gave nothing a registry does not.
"""

import threading
import weakref

_lock = threading.Lock()
_waiters = weakref.WeakSet()


def register(waiter):
    """Have ``waiter.wake()`` called after each commit that gave work."""
    with _lock:
        _waiters.add(waiter)


def unregister(waiter):
    """Undo `register` (nothing if `waiter` was not registered)."""
    with _lock:
        _waiters.discard(waiter)


def waiting():
    """Whether a waiter is registered now (no lock: a glance)."""
    return bool(_waiters)


def waiters():
    """The waiters registered now, in a list."""
    with _lock:
        return list(_waiters)


def wake_all():
    """Call ``wake()`` of every registered waiter of this process."""
    for waiter in waiters():
        waiter.wake()


def after_commit(committed):
    """An after-commit hook (`transaction`'s ``addAfterCommitHook``) that
    wakes the waiters if the transaction committed."""
    if committed and waiting():
        wake_all()
