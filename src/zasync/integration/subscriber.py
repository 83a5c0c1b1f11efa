"""Start-up: install the queues and start a dispatcher when the application
opens its database.

Zope (and any application that follows it) notifies
``zope.processlifetime.DatabaseOpenedWithRoot(db)`` once its database is
open; a `Setup` subscribed to that event installs zasync's queues and
starts this process's dispatcher.  ZCML subscribes one with the
``<zasync:dispatcher>`` directive (see meta.zcml) or by including a policy:

- ``basic_dispatcher_policy.zcml``: the queues in the main database, one
  worker thread;
- ``multidb_dispatcher_policy.zcml``: the queues and the jobs in the
  database named 'async' of a multi-database, beside the application's
  main database, so that the job traffic (puts, claims, heartbeats,
  history) never grows or packs the main one.  Jobs still read and write
  the main database's objects: ZODB loads cross-database references
  through the same transaction.

An application without ZCML makes the same set-up with one call::

    zasync.integration.subscriber.configure(db, threads=2, database_name="async")

With ``threads=0`` the queues are installed but no dispatcher starts: a web
process that only puts jobs, while ``zasync worker`` processes run them.

The dispatcher it starts keeps a stable id in the instance's id file, and
a script (``zconsole run``) starts none unless ``ZASYNC_DISPATCHER=on``
(`zasync.queue.instance`); it stops before its database closes, and SIGTERM
unwinds the process so that it does (`zasync.worker.shutdown`).
"""

import atexit
import logging
import threading

# Imported for its effect: it hands zope.event's events to the subscribers
# registered in the component registry (by ZCML or provideHandler).
import zope.component.event  # noqa: F401
import zope.component.zcml
import zope.configuration.fields
import zope.schema
from zope.interface import Interface
from zope.processlifetime import IDatabaseOpenedWithRoot

from zasync.queue import instance

from zasync.worker import shutdown
from zasync.queue.database import install, set_root_database
from zasync.worker.dispatcher import Dispatcher
from zasync.interfaces import ConfigurationError

logger = logging.getLogger(__name__)

#: Seconds `stop` (and the stop before the database closes, or at the end
#: of the process) gives running jobs to finish; those still running are
#: recovered by another dispatcher, or by this one's next run.
STOP_TIMEOUT = shutdown.STOP_TIMEOUT

_lock = threading.Lock()
_started = {}              # id(queues database) -> (database, dispatcher)
_atexit_registered = False


def queues_database(db, database_name=None):
    """The database of `db`'s multi-database that holds the queues:
    `db` itself, or the one named `database_name`."""
    if database_name is None or database_name == db.database_name:
        return db
    if not isinstance(database_name, str):
        raise ConfigurationError(f"database_name={database_name!r}: expected a str")
    databases = getattr(db, "databases", {})
    found = databases.get(database_name)
    if found is None:
        raise ConfigurationError(
            f"database_name={database_name!r}: the multi-database of "
            f"{db.database_name!r} has no such database; it has "
            + ", ".join(repr(name) for name in sorted(databases))
            + " (open them with ZODB.DB(storage, databases=shared_dict, "
              "database_name=...))")
    return found


def configure(db, threads=1, queues=("",), database_name=None, id_file=None,
              **dispatcher_kwargs):
    """Install the `queues` in `db` (or in the database `database_name` of
    its multi-database) and start a dispatcher of `threads` threads on them;
    return the dispatcher, or None when `threads` is 0.

    Other keyword arguments (``agents``, ``id``, ``poll_interval``,
    ``ping_interval``, ...) go to `zasync.Dispatcher`.  Without ``id``, the
    dispatcher keeps a stable id in the instance's id file (`id_file`, or
    see `zasync.queue.instance`).  Called again for a database already served in
    this process, it returns the running dispatcher.  The dispatcher is
    stopped by `stop`, before its database closes, or at the end of the
    process.

    The queues count as served by this process's configuration even with
    ``threads=0``: a put into another queue of the multi-database is
    warned about (see `zasync.queue.instance`).
    """
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
        raise ConfigurationError(
            f"threads={threads!r}: expected an int of 0 (no dispatcher) or more")
    target = queues_database(db, database_name)
    if isinstance(queues, str):
        queues = (queues,)
    if target is not db:
        # The event's database is the application's root, the queues'
        # another: zasync opens its connections in the root, whatever
        # order the databases were opened in.
        set_root_database(db)
    install(target, queues)
    instance.serve(target, queues)
    if threads == 0 and "agents" not in dispatcher_kwargs:
        logger.info("zasync queues installed in %r; no dispatcher in this "
                    "process (threads=0)", target.database_name)
        return None
    with _lock:
        found = _started.get(id(target))
        if found is not None and found[1].running:
            logger.info("zasync: dispatcher %s already serves %r", found[1].id,
                        target.database_name)
            return found[1]
        if "agents" not in dispatcher_kwargs:
            dispatcher_kwargs["threads"] = threads
        if dispatcher_kwargs.get("id") is None:
            dispatcher_kwargs["id"] = instance.dispatcher_id(target, id_file)
        dispatcher = Dispatcher(target, queues=tuple(queues), **dispatcher_kwargs)
        dispatcher.start()
        _started[id(target)] = (target, dispatcher)
        _register_atexit()
        # SIGTERM would end the process with no stop at all: make it unwind
        # the process as Ctrl-C does (unless the application handles it).
        shutdown.handle_sigterm()
    logger.info("zasync: dispatcher %s started on database %r", dispatcher.id,
                target.database_name)
    return dispatcher


def _register_atexit():
    global _atexit_registered
    if not _atexit_registered:
        atexit.register(stop, timeout=STOP_TIMEOUT)
        _atexit_registered = True


def dispatchers():
    """The dispatchers `configure` started and that still run."""
    with _lock:
        return [dispatcher for _, dispatcher in _started.values() if dispatcher.running]


def get_dispatcher(db, database_name=None):
    """The dispatcher `configure` started on `db` (or on its database
    `database_name`), or None."""
    target = queues_database(db, database_name)
    with _lock:
        found = _started.get(id(target))
    return None if found is None else found[1]


def stop(db=None, database_name=None, timeout=STOP_TIMEOUT):
    """Stop the dispatcher `configure` started on `db` (all of them when
    `db` is None), waiting up to `timeout` seconds for running jobs.
    Return True if every job finished."""
    with _lock:
        if db is None:
            found = list(_started.values())
            _started.clear()
            instance.forget()
        else:
            target = queues_database(db, database_name)
            one = _started.pop(id(target), None)
            found = [] if one is None else [one]
            instance.forget(target)
        if not _started:
            shutdown.release_sigterm()
    finished = True
    for _, dispatcher in found:
        finished = dispatcher.stop(timeout=timeout) and finished
    return finished


class Setup:
    """A subscriber to `IDatabaseOpenedWithRoot` that calls `configure`
    with the event's database and its own arguments."""

    def __init__(self, threads=1, queues=("",), database_name=None, id_file=None,
                 **dispatcher_kwargs):
        if isinstance(queues, str):
            queues = (queues,)
        self.threads = threads
        self.queues = tuple(queues)
        self.database_name = database_name
        self.id_file = id_file
        self.dispatcher_kwargs = dispatcher_kwargs

    def __call__(self, event):
        threads, kwargs = self.threads, dict(self.dispatcher_kwargs)
        wanted, why = instance.dispatcher_wanted()
        if not wanted and (threads or "agents" in kwargs):
            logger.info("zasync: no dispatcher in this process: %s", why)
            threads = 0
            kwargs.pop("agents", None)
        return configure(event.database, threads=threads, queues=self.queues,
                         database_name=self.database_name, id_file=self.id_file,
                         **kwargs)

    def __repr__(self):
        return (f"<zasync.integration.subscriber.Setup threads={self.threads} queues="
                f"{self.queues!r} database_name={self.database_name!r}>")


#: The basic policy: queues in the main database, one worker thread.
basic = Setup()

#: The multi-database policy: queues and jobs in the 'async' database.
multidb = Setup(database_name="async")


# -- the <zasync:dispatcher> ZCML directive ----------------------------------

class IDispatcherDirective(Interface):
    """Install zasync's queues and start a dispatcher when the database
    opens (on `IDatabaseOpenedWithRoot`)."""

    threads = zope.schema.Int(
        title="Worker threads",
        description="Threads of the dispatcher; 0 installs the queues and "
                    "starts no dispatcher (a process that only puts jobs).",
        required=False, default=1, min=0)

    queues = zope.configuration.fields.Tokens(
        title="Queue names",
        description="The queues to install and serve, separated by spaces; "
                    "'' is the default queue.",
        value_type=zope.schema.TextLine(), required=False)

    database = zope.schema.TextLine(
        title="Database name",
        description="The database of the multi-database that keeps the "
                    "queues and the jobs, e.g. 'async'; the main one when "
                    "not given.",
        required=False)

    id = zope.schema.TextLine(
        title="Dispatcher id",
        description="A fixed id, instead of the one kept in the id file.",
        required=False)

    id_file = zope.configuration.fields.Path(
        title="Dispatcher id file",
        description="The file that keeps this instance's dispatcher id, so "
                    "that a restarted process recovers the jobs of its "
                    "previous run at once; by default $ZASYNC_ID_FILE, or "
                    "zasync-dispatcher.id in the instance's var folder "
                    "($CLIENT_HOME) or beside the FileStorage.",
        required=False)

    poll_interval = zope.schema.Float(
        title="Poll interval",
        description="Seconds between two looks for jobs put by other processes.",
        required=False, min=0.001)


def _queue_names(tokens):
    if not tokens:
        return ("",)
    return tuple("" if token in ("''", '""') else token for token in tokens)


def dispatcher_directive(_context, threads=1, queues=None, database=None, id=None,
                         id_file=None, poll_interval=None):
    """The handler of ``<zasync:dispatcher>``."""
    kwargs = {"id_file": id_file}
    if id is not None:
        kwargs["id"] = id
    if poll_interval is not None:
        kwargs["poll_interval"] = poll_interval
    handler = Setup(threads=threads, queues=_queue_names(queues),
                    database_name=database, **kwargs)
    zope.component.zcml.subscriber(
        _context, for_=(IDatabaseOpenedWithRoot,), handler=handler)
