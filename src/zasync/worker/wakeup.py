"""Waking a dispatcher when another process commits a job.

A ZEO client hears of every commit on the server at once (the server sends
the changed object ids, to invalidate the client's cache); so does every
connection of a FileStorage in this process.  A dispatcher that listens for
the ids of its queues' inbox lanes can start a job a few milliseconds after
its put committed anywhere, and poll only as a fallback.

ZODB offers no public hook for this.  The database's MVCC adapter is the
object storages call with those ids (`invalidate`, and `_invalidate_finish`
for commits in this process); we wrap those two methods on the adapter
instance, calling ours after ZODB's own, so that a woken dispatcher's next
transaction already sees the commit.  Storages that do their own MVCC
(RelStorage) have no such adapter and are polled.
"""

import logging
import threading
import weakref

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_watches = weakref.WeakKeyDictionary()   # adapter -> list of Watch


class Watch:
    """Calls `callback()` after a commit that changed one of `oids`."""

    def __init__(self, callback, adapter=None):
        self.callback = callback
        self.oids = frozenset()
        # Kept for `unwatch`: a closed database no longer has its adapter.
        self.adapter = adapter

    def notice(self, oids):
        if oids is None or not self.oids.isdisjoint(oids):
            try:
                self.callback()
            except Exception:   # never break ZODB's invalidation
                logger.exception("wake-up callback failed")


def _adapter(db):
    adapter = getattr(db, "_mvcc_storage", None)
    if adapter is None or not hasattr(adapter, "_invalidate_finish") or not hasattr(
            adapter, "invalidate"):
        return None
    return adapter


def _install(adapter):
    original_invalidate = adapter.invalidate
    original_finish = adapter._invalidate_finish

    def invalidate(tid, oids, *args, **kwargs):
        result = original_invalidate(tid, oids, *args, **kwargs)
        _notify(adapter, oids)
        return result

    def invalidate_finish(tid, oids, *args, **kwargs):
        result = original_finish(tid, oids, *args, **kwargs)
        _notify(adapter, oids)
        return result

    adapter.invalidate = invalidate
    adapter._invalidate_finish = invalidate_finish


def _notify(adapter, oids):
    with _lock:
        watches = list(_watches.get(adapter, ()))
    for watch in watches:
        watch.notice(oids)


def watch(db, callback):
    """Start calling `callback` after commits; return a `Watch` whose
    `oids` say which objects matter, or None if this storage cannot tell
    (then poll)."""
    adapter = _adapter(db)
    if adapter is None:
        return None
    new = Watch(callback, adapter)
    with _lock:
        watches = _watches.get(adapter)
        if watches is None:
            watches = _watches[adapter] = []
            try:
                _install(adapter)
            except Exception:
                logger.exception("cannot listen for commits; polling instead")
                del _watches[adapter]
                return None
        watches.append(new)
    return new


def unwatch(db, handle):
    """Stop a `Watch` returned by `watch` (also once `db` is closed)."""
    if handle is None:
        return
    adapter = handle.adapter
    if adapter is None:
        return
    with _lock:
        watches = _watches.get(adapter, [])
        if handle in watches:
            watches.remove(handle)
