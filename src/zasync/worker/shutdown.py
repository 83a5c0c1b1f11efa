"""Shutdown in order: a dispatcher stops before its databases close.

A dispatcher's last acts -- storing the results it was handed, recording
its stop, handing back the jobs it took but did not start -- are commits,
so they must come before the database closes.  Whoever closes it decides
when that is: ``runwsgi`` closes Zope's databases in a ``finally`` once its
server loop ends, a script calls ``db.close()``, or nobody does and the
process simply ends.  An ``atexit`` hook alone comes too late in the first
two cases (atexit runs after the ``finally``), so zasync hooks the closing
itself: `before_close` replaces the ``close`` method of each database of a
multi-database (ZODB's ``DB.close`` already replaces itself on the
instance, by a no-op, once it ran) with one that first calls the functions
registered for that multi-database -- all of its databases, since a
dispatcher on 'async' also opens 'main' through its connections -- and then
closes.  We rejected a ``zope.processlifetime``-style event: Zope sends none
at shutdown, and neither does a script.

SIGTERM by default ends a process at once, running no ``finally`` and no
atexit hook.  `handle_sigterm` (used by `zasync.integration.subscriber` when it starts
a dispatcher and nobody set a SIGTERM handler) turns it into a
``SystemExit`` in the main thread, so the process unwinds as on Ctrl-C: a
server's ``finally`` closes the databases, which stops the dispatchers
first.  A second SIGTERM ends the process at once, as before.
"""

import logging
import signal
import threading

logger = logging.getLogger(__name__)

#: Seconds a dispatcher stopped because its database closes gives its
#: running jobs to finish; those still running then are handed back (their
#: retry policy decides), as the database cannot store their outcome.
STOP_TIMEOUT = 30.0

_lock = threading.RLock()
_groups = {}    # id(databases mapping) -> _Group


class _Group:
    """The functions to call before a database of one multi-database
    closes."""

    def __init__(self, databases):
        self.databases = databases    # kept: its id is the key
        self.functions = []


def _group_of(db):
    """The mapping shared by the databases of `db`'s multi-database (a
    database opened alone has its own, holding itself)."""
    databases = getattr(db, "databases", None)
    if not isinstance(databases, dict) or not databases:
        return {getattr(db, "database_name", "unnamed"): db}
    return databases


def before_close(db, function):
    """Call `function()` before `db`, or another database of its
    multi-database, is closed (once, by the first close).  Return a handle
    for `cancel`."""
    databases = _group_of(db)
    with _lock:
        group = _groups.get(id(databases))
        if group is None:
            group = _groups[id(databases)] = _Group(databases)
        for member in list(databases.values()) + [db]:
            _hook(member, group)
        group.functions.append(function)
    return (id(databases), function)


def cancel(handle):
    """Forget a function registered by `before_close`."""
    if handle is None:
        return
    key, function = handle
    with _lock:
        group = _groups.get(key)
        if group is not None and function in group.functions:
            group.functions.remove(function)
            if not group.functions:
                del _groups[key]


def _hook(db, group):
    close = db.close
    if getattr(close, "zasync_group", None) is group:
        return

    def close_after_zasync():
        _run(group)
        close()
    close_after_zasync.zasync_group = group
    db.close = close_after_zasync


def _run(group):
    """Call the group's functions, the latest registered first; each once."""
    while True:
        with _lock:
            if not group.functions:
                if _groups.get(id(group.databases)) is group:
                    del _groups[id(group.databases)]
                return
            function = group.functions.pop()
        try:
            function()
        except Exception:
            logger.exception("zasync: %r failed before its database closed", function)


# -- SIGTERM ------------------------------------------------------------------

_sigterm_installed = False


def _on_sigterm(signum, frame):
    global _sigterm_installed
    # A second SIGTERM ends the process at once.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _sigterm_installed = False
    logger.info("zasync: SIGTERM: the process ends (a second SIGTERM ends it "
                "at once)")
    raise SystemExit(128 + signum)


def handle_sigterm():
    """Make SIGTERM end the process through ``SystemExit`` in the main
    thread, if this is the main thread and no other handler is set; return
    whether it did."""
    global _sigterm_installed
    if threading.current_thread() is not threading.main_thread():
        return False
    with _lock:
        if _sigterm_installed:
            return True
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return False
        signal.signal(signal.SIGTERM, _on_sigterm)
        _sigterm_installed = True
    return True


def release_sigterm():
    """Undo `handle_sigterm` (in the main thread, if still ours)."""
    global _sigterm_installed
    if threading.current_thread() is not threading.main_thread():
        return
    with _lock:
        if _sigterm_installed and signal.getsignal(signal.SIGTERM) is _on_sigterm:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
        _sigterm_installed = False
