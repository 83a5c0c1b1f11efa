"""What the start-up subscriber knows of the application instance it runs
in: where its dispatcher keeps a stable id, and whether this process (a
server, or a script that loaded the same ZCML) should run a dispatcher.

A stable id lets a restarted process recover the jobs its earlier run left
at once, instead of after the death interval (zc.async kept it in a
``uuid.txt``).  The id lives in a file of the instance's own folder, so two
instances sharing a database never share an id, and one instance keeps its
id across restarts.  The file is, the first found of:

1. the ``id_file`` given to `zasync.integration.subscriber.configure` (the ZCML
   ``id_file`` attribute);
2. the ``ZASYNC_ID_FILE`` environment variable;
3. ``zasync-dispatcher.id`` in ``$CLIENT_HOME`` (Zope sets it to the
   instance's ``var`` folder when it reads zope.conf), or else in
   ``$INSTANCE_HOME/var``;
4. ``zasync-dispatcher.id`` beside the FileStorage of the database that
   keeps the queues.

Otherwise (say, a database over ZEO outside Zope) each run gets a new id,
and the jobs a killed run left are recovered after the death interval.

A script is not a server: ``zconsole run script.py`` loads the same ZCML
and opens the same database as the instance, and a dispatcher started there
would claim jobs only to be stopped when the script ends (or, in ZEO, run
beside the instance's own).  The environment variable
``ZASYNC_DISPATCHER`` decides: ``on`` starts one, ``off`` starts none,
``auto`` (the default) starts one except under Zope's ``zconsole`` (``run``
and ``debug``).  Zope's zope.conf can set it in an ``<environment>``
section; other scripts that load the ZCML set it to ``off``.

Last, the queues this process's configuration serves (`serve`, called by
`zasync.integration.subscriber.configure`): the ``IQueue`` adapters look in their
database first, and a put into another queue of the same multi-database
is warned about (`UnservedQueueWarning`, and a logged warning), since no
dispatcher configured here runs it -- the put of an application whose
queues once lived in 'main' while its dispatcher now serves 'async'.  A
warning and not an error: ``zasync worker`` processes may serve queues
the application's own configuration does not list.
"""

import logging
import os
import sys
import threading
import uuid
import warnings

import ZODB.FileStorage

from zasync.interfaces import ConfigurationError, UnservedQueueWarning

logger = logging.getLogger(__name__)

#: The name of the id file in an instance's folder.
ID_FILE_NAME = "zasync-dispatcher.id"

#: The environment variable naming the id file.
ID_FILE_VARIABLE = "ZASYNC_ID_FILE"

#: The environment variable saying whether the subscriber starts a dispatcher.
DISPATCHER_VARIABLE = "ZASYNC_DISPATCHER"

_ON = ("on", "1", "true", "yes")
_OFF = ("off", "0", "false", "no")


def id_file(db, id_file=None):
    """The path of the id file for a dispatcher on `db`, or None."""
    if id_file is not None:
        if not isinstance(id_file, (str, os.PathLike)) or not os.fspath(id_file):
            raise ConfigurationError(
                f"id_file={id_file!r}: expected the path of a file")
        return os.fspath(id_file)
    from_env = os.environ.get(ID_FILE_VARIABLE)
    if from_env:
        return from_env
    client_home = os.environ.get("CLIENT_HOME")
    if client_home:
        return os.path.join(client_home, ID_FILE_NAME)
    instance_home = os.environ.get("INSTANCE_HOME")
    if instance_home:
        return os.path.join(instance_home, "var", ID_FILE_NAME)
    storage = getattr(db, "storage", None)
    if isinstance(storage, ZODB.FileStorage.FileStorage):
        return os.path.join(os.path.dirname(os.path.abspath(storage.getName())),
                            ID_FILE_NAME)
    return None


def dispatcher_id(db, path=None):
    """The stable id of this instance's dispatcher on `db`, read from its id
    file or written there the first time; None if there is no id file."""
    path = id_file(db, path)
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            found = f.read().strip()
    except FileNotFoundError:
        found = None
    except OSError as error:
        raise ConfigurationError(
            f"dispatcher id file {path!r}: cannot read it: {error}") from None
    if found is not None:
        if not found or any(c.isspace() for c in found):
            raise ConfigurationError(
                f"dispatcher id file {path!r} holds {found!r}: expected one id "
                f"on one line (delete the file for a new one)")
        return found
    new = uuid.uuid4().hex
    temporary = f"{path}.{os.getpid()}.tmp"
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(temporary, "w", encoding="utf-8") as f:
            f.write(new + "\n")
        # A whole file or none, and never over another process's: two
        # processes that start at once end up with the same id (the second
        # then refuses to run under it, as the id is in use).
        os.link(temporary, path)
    except FileExistsError:
        return dispatcher_id(db, path)
    except OSError as error:
        raise ConfigurationError(
            f"dispatcher id file {path!r}: cannot write it: {error} (choose "
            f"another with the id_file attribute or ${ID_FILE_VARIABLE})") from None
    finally:
        try:
            os.remove(temporary)
        except OSError:
            pass
    logger.info("zasync: dispatcher id %s written to %s", new, path)
    return new


def dispatcher_wanted():
    """Whether the start-up subscriber starts a dispatcher in this process
    (see the module's docstring); return (yes or no, why)."""
    value = os.environ.get(DISPATCHER_VARIABLE, "auto").strip().lower()
    if value in _ON:
        return True, f"${DISPATCHER_VARIABLE}={value}"
    if value in _OFF:
        return False, f"${DISPATCHER_VARIABLE}={value}"
    if value not in ("auto", ""):
        raise ConfigurationError(
            f"${DISPATCHER_VARIABLE}={os.environ[DISPATCHER_VARIABLE]!r}: expected "
            f"on, off or auto")
    if "Zope2.utilities.zconsole" in sys.modules:
        return False, f"a zconsole script (set ${DISPATCHER_VARIABLE}=on to start one)"
    return True, "a server process"


# -- the queues this process's configuration serves --------------------------

_served_lock = threading.Lock()
_served = {}      # id(databases mapping) -> (mapping, {(database name, queue name)})
_warned = set()


def _databases_of(db):
    databases = getattr(db, "databases", None)
    return databases if isinstance(databases, dict) and databases else None


def _entry(databases):
    """What `serve` recorded for `databases` (under `_served_lock`), or None;
    an id reused by another dict after the first was dropped is not it."""
    entry = None if databases is None else _served.get(id(databases))
    return entry if entry is not None and entry[0] is databases else None


def serve(db, queue_names):
    """Record that this process's configuration serves `queue_names` in
    `db` (whether its dispatcher runs here or in worker processes)."""
    databases = _databases_of(db)
    if databases is None:
        return
    with _served_lock:
        entry = _entry(databases)
        if entry is None:
            entry = _served[id(databases)] = (databases, set())
        entry[1].update((db.database_name, name) for name in queue_names)


def forget(db=None):
    """Forget what `serve` recorded for `db`'s multi-database (all, when
    None)."""
    with _served_lock:
        if db is None:
            _served.clear()
            _warned.clear()
            return
        databases = _databases_of(db)
        if databases is not None:
            _served.pop(id(databases), None)


def served_databases(db):
    """The names of the databases of `db`'s multi-database whose queues the
    configuration serves, in name order (empty if nothing is configured)."""
    databases = _databases_of(db)
    with _served_lock:
        entry = _entry(databases)
        if entry is None:
            return []
        return sorted({name for name, _ in entry[1]})


def check_put(queue):
    """Warn if a job put into `queue` goes where the configuration serves
    nothing (see the module's docstring)."""
    if not _served:
        return
    db = queue._p_jar.db()
    databases = _databases_of(db)
    if databases is None:
        return
    with _served_lock:
        entry = _entry(databases)
        if entry is None:
            return
        if (db.database_name, queue.name) in entry[1]:
            return
        served = sorted(entry[1])
        key = (id(databases), db.database_name, queue.name)
        first = key not in _warned
        _warned.add(key)
    message = (
        f"a job was put into queue {queue.name!r} of database "
        f"{db.database_name!r}, which this process's zasync configuration "
        f"does not serve (it serves "
        + ", ".join(f"queue {name!r} of database {database!r}"
                    for database, name in served)
        + "): no dispatcher configured here will run it.  Put it into a "
          "served queue (IQueue(obj) finds one), or serve this one "
          "(<zasync:dispatcher queues=... database=...>)")
    warnings.warn(message, UnservedQueueWarning, stacklevel=3)
    if first:
        logger.warning("zasync: %s", message)
