"""Opening a database, installing the queues in it, finding them again,
and waiting for a job from outside."""

import logging
import os
import socket
import threading
import time
import urllib.parse
import weakref

import transaction
import ZODB
import ZODB.FileStorage
import zc.lockfile
import zodburi
from ZEO.ClientStorage import ClientStorage
from ZEO.Exceptions import ClientDisconnected
from ZODB.Connection import Connection

from zasync.interfaces import (
    COMPLETED, ConfigurationError, DatabaseUnavailableError, NotInstalledError,
    WaitTimeoutError)
from zasync.job.jobset import JobSet
from zasync.job.key import give_lanes
from zasync.queue.queue import Queues

logger = logging.getLogger(__name__)

#: The key of the `Queues` container in the database root.
ROOT_KEY = "zasync"

#: Dispatchers keep a connection per thread and one for claims; a larger
#: pool than ZODB's default of 7 keeps them from being reported as too many.
DEFAULT_POOL_SIZE = 32
#: Objects each connection of a FileStorage path keeps in memory, as
#: zodburi gives a URI's; ZODB's default, 400, is less than a queue's own
#: structures (256 inbox lanes, the pending tree's buckets): a producer
#: reloaded an inbox lane at every second put.
DEFAULT_CACHE_SIZE = 10_000
#: What zasync asks of PostgreSQL for the connections RelStorage opens
#: (libpq's PGOPTIONS): probe a client that stopped talking after 5 s, and
#: drop it after 3 probes 2 s apart unanswered (or data unacknowledged for
#: 10 s).  By default PostgreSQL waits two hours, and a client gone between
#: a commit's vote and its finish (a host cut off, a machine dead) keeps
#: its rows locked all that time: every other process's commit to them
#: fails.  A slow client is not dropped: its kernel answers the probes.
POSTGRES_OPTIONS = ("-c tcp_keepalives_idle=5 -c tcp_keepalives_interval=2 "
                    "-c tcp_keepalives_count=3 -c tcp_user_timeout=10000")


def open_db(target, **db_kwargs):
    """Open a ZODB database from a FileStorage path or any zodburi URI
    (``file://``, ``zeo://``, ``memory://``, RelStorage's ``postgres://``).

    A path's folder is created if missing.  Keyword arguments go to
    `ZODB.DB` and win over those the URI sets.  A ``postgres://`` URI adds
    `POSTGRES_OPTIONS` to this process's PGOPTIONS (unless it sets
    keepalives already), so that PostgreSQL drops a vanished client.
    """
    if not isinstance(target, (str, os.PathLike)):
        raise ConfigurationError(
            f"database {target!r}: expected a FileStorage path or a URI "
            f"such as zeo://127.0.0.1:8100")
    target = os.fspath(target)
    if "://" in target:
        scheme = target.partition("://")[0]
        known = _schemes()
        if scheme not in known:
            raise ConfigurationError(
                f"database URI {target!r}: unknown scheme {scheme!r}; known: "
                + ", ".join(sorted(known)))
        try:
            factory, dbkw = zodburi.resolve_uri(target)
        except Exception as error:
            raise ConfigurationError(
                f"database URI {target!r}: {type(error).__name__}: {error}") from None
        if scheme == "postgres":
            _postgres_drops_vanished_clients()
        dbkw = dict(dbkw)
        if "pool_size" not in target.partition("?")[2]:
            dbkw["pool_size"] = DEFAULT_POOL_SIZE
        dbkw.update(db_kwargs)
        return forget_oids_on_reconnect(ZODB.DB(_open_storage(target, factory), **dbkw))
    if not target or target.endswith(os.sep):
        raise ConfigurationError(
            f"database path {target!r}: expected a file name such as var/Data.fs")
    folder = os.path.dirname(os.path.abspath(target))
    os.makedirs(folder, exist_ok=True)
    db_kwargs.setdefault("pool_size", DEFAULT_POOL_SIZE)
    db_kwargs.setdefault("cache_size", DEFAULT_CACHE_SIZE)
    # FileStorage makes its lock, index and temporary files before it finds
    # that a file is no FileStorage (or is locked): take back what it made.
    made = [target + suffix for suffix in ("", ".lock", ".tmp", ".index")
            if not os.path.exists(target + suffix)]
    try:
        storage = ZODB.FileStorage.FileStorage(target)
    except BaseException as error:
        for path in made:
            try:
                os.remove(path)
            except OSError:
                pass
        if isinstance(error, zc.lockfile.LockError):
            raise DatabaseUnavailableError(
                f"database {target!r} is open in another process (it holds "
                f"{target + '.lock'!r}): a FileStorage file is opened by one "
                f"process at a time; to share it, serve it with a ZEO server "
                f"(runzeo -a 127.0.0.1:8100 -f {target}) and open "
                f"zeo://127.0.0.1:8100 in every process") from None
        raise
    return ZODB.DB(storage, **db_kwargs)


def _postgres_drops_vanished_clients():
    """Add `POSTGRES_OPTIONS` to this process's PGOPTIONS, which libpq
    sends to the server at each connection, unless PGOPTIONS already sets
    keepalives or a user timeout (the user's choice)."""
    given = os.environ.get("PGOPTIONS", "")
    if "tcp_keepalives" in given or "tcp_user_timeout" in given:
        return
    os.environ["PGOPTIONS"] = f"{given} {POSTGRES_OPTIONS}".strip()


def zeo_address(uri):
    """The address of the ZEO server a ``zeo://`` URI names, as
    "HOST:PORT" or a Unix socket's path; None for other URIs."""
    if not uri.startswith("zeo://"):
        return None
    parts = urllib.parse.urlsplit("http://" + uri[len("zeo://"):])
    if parts.netloc:
        try:
            port = parts.port or 9991      # zodburi's default
        except ValueError:
            return None                    # zodburi says what is wrong
        return f"{parts.hostname or ''}:{port}"
    return os.path.normpath(parts.path)


def zeo_unanswered(address, timeout=2.0):
    """Why nobody answers at a ZEO `address` ("HOST:PORT" or a socket's
    path) now, e.g. "connection refused"; None when something listens
    there.  Only a connection is tried, no ZEO handshake."""
    try:
        if ":" in address and not address.startswith(os.sep):
            host, _, port = address.rpartition(":")
            sock = socket.create_connection((host, int(port)), timeout=timeout)
        else:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            try:
                sock.connect(address)
            except BaseException:
                sock.close()
                raise
    except socket.timeout:
        return f"no answer in {timeout:g} s"
    except OSError as error:
        return (error.strerror or str(error)).lower()
    sock.close()
    return None


def _open_storage(target, factory):
    """The storage of a URI; for ``zeo://``, say in the log at once when
    no server answers (ZEO waits for one, 30 s unless ``wait_timeout=``
    says otherwise), and raise `DatabaseUnavailableError` when none did."""
    address = zeo_address(target)
    if address is None:
        return factory()
    query = urllib.parse.parse_qs(target.partition("?")[2])
    wait = query.get("wait_timeout", ["30"])[-1]
    why = zeo_unanswered(address)
    if why is not None:
        logger.warning("no ZEO server answers at %s yet (%s); waiting up to %s s "
                       "for one to start", address, why, wait)
    try:
        return factory()
    except ClientDisconnected:
        raise DatabaseUnavailableError(
            f"no ZEO server answered at {address} in {wait} s (database "
            f"{target!r}): start the server, or check its address") from None


def forget_oids_on_reconnect(db_or_storage):
    """Make the ZEO clients of a database drop the object ids they fetched
    ahead from their server whenever they lose or regain it; return the
    argument.

    A ZEO client (ZEO 5 and 6) asks its server for new object ids 100 at a
    time and keeps those it has not used yet across a reconnect, but a
    restarted server hands ids out again from the highest one committed:
    the kept ids go to other clients too, and new objects (a job put, a
    counter created) conflict, or fail with "A different object already
    has the same oid", until the kept ids run out.  `open_db`, `install`
    and `Dispatcher` do this for the databases zasync is given; an
    application that opens its own ClientStorage calls it once, with the
    storage or with the `ZODB.DB` (every database of a multi-database).
    Other storages are left alone; calling it again does nothing more.
    """
    if isinstance(db_or_storage, ZODB.DB):
        databases = getattr(db_or_storage, "databases", None) or {
            None: db_or_storage}
        storages = [database.storage for database in databases.values()]
    elif callable(getattr(db_or_storage, "new_oid", None)):
        storages = [db_or_storage]
    else:
        raise ConfigurationError(
            f"{db_or_storage!r}: expected a ZODB.DB or a storage (such as "
            f"ZEO.ClientStorage.ClientStorage)")
    for storage in storages:
        # zc.zlibstorage and other wrappers keep the storage they wrap as
        # `base`.
        for _ in range(8):
            if isinstance(storage, ClientStorage) or storage is None:
                break
            storage = getattr(storage, "base", None)
        if isinstance(storage, ClientStorage) and not getattr(
                storage, "_zasync_forgets_oids", False):
            _forget_oids_when_notified(storage, "notify_disconnected")
            _forget_oids_when_notified(storage, "notify_connected")
            storage._zasync_forgets_oids = True
    return db_or_storage


def _forget_oids_when_notified(storage, name):
    """Wrap the storage's method `name`, which ZEO's I/O thread calls, so
    that it first empties the list of ids fetched ahead (`new_oid` pops
    from it, and asks the server for more once it is empty).  Both ends of
    a connection count: ids fetched from a server that went away must not
    be used while it is away nor after it is back."""
    notify = getattr(storage, name)

    def forget_then_notify(*args, **kwargs):
        kept = len(storage._oids)
        del storage._oids[:]
        if kept:
            logger.info("%s: %s; dropped %d object ids fetched ahead from the "
                        "server", storage.__name__, name.replace("_", " "), kept)
        return notify(*args, **kwargs)

    setattr(storage, name, forget_then_notify)


def _schemes():
    try:
        from importlib.metadata import entry_points
        return {ep.name for ep in entry_points(group="zodburi.resolvers")}
    except Exception:  # pragma: no cover
        return {"file", "zeo", "memory", "zconfig"}


def open_databases(targets, **db_kwargs):
    """Open a multi-database: `targets` maps each database's name to a
    FileStorage path or a URI (``{"main": "zeo://...?storage=main",
    "async": "zeo://...?storage=async"}``), the application's main (root)
    database first.  Return the first; every one is in its ``databases``
    mapping.  Close them all with `close_databases`.

    The names are those the application opened its databases with
    (Zope's ``<zodb_db main>``, pyramid_zodbconn's ``''`` for the main
    one): references from one database to another are stored with them.
    Keyword arguments go to `ZODB.DB` for every database.
    """
    pairs = list(targets.items()) if hasattr(targets, "items") else list(targets)
    if not pairs:
        raise ConfigurationError(
            f"databases {targets!r}: expected at least one name and its "
            f"path or URI, the main database first")
    databases = {}
    try:
        for pair in pairs:
            if not (isinstance(pair, tuple) and len(pair) == 2
                    and isinstance(pair[0], str)):
                raise ConfigurationError(
                    f"database {pair!r}: expected a name (str) and its path or URI")
            name, target = pair
            if name in databases:
                raise ConfigurationError(f"database name {name!r} is given twice")
            open_db(target, databases=databases, database_name=name, **db_kwargs)
    except BaseException:
        close_databases(databases)
        raise
    return databases[pairs[0][0]]


def close_databases(db_or_databases):
    """Close every database of a multi-database (a database of it, or its
    ``databases`` mapping)."""
    databases = getattr(db_or_databases, "databases", db_or_databases)
    for each in list(databases.values()):
        each.close()


# -- connections -------------------------------------------------------------
#
# Every connection zasync opens goes through `open_connection`.  In a
# multi-database, ZODB keeps the connections of one transaction together
# as a *group*: a primary connection, opened with ``DB.open()``, and the
# secondary ones it reaches with ``get_connection(name)``, which it takes
# from the other databases' pools and keeps for good (closing the primary
# closes them without handing them back).  A primary connection that goes
# back to its pool carries its group along.  So if zasync opened the
# 'async' database directly, each of its closed connections would sit in
# the async pool with its own 'main' connection; an application request
# (a primary 'main' connection) reaching 'async' would take one of them
# and with it a second 'main' connection, which replaces the request's own
# in the group: storing a reference to an object the request loaded then
# raises InvalidObjectReference ("a separate connection to the same
# database").  zasync therefore opens the primary connection in the same
# database the application does, the first one of the multi-database (the
# root), and reaches the one it needs with get_connection, as the
# application does; the secondary connections of the async pool are then
# never anyone's primary.  Rejected: keeping zasync's connections out of
# the pools (ZODB has no way to open a connection outside them) and a pool
# of zasync's own (it would still hand its groups to whoever shares the
# database).  In a single database, this is ``db.open()``.


_declared_roots = weakref.WeakSet()


def set_root_database(db):
    """Declare `db` the root of its multi-database: the database the
    application opens its own connections in, through which zasync opens
    its connections too.  Needed only when it was not opened first."""
    for other in getattr(db, "databases", {}).values():
        _declared_roots.discard(other)
    _declared_roots.add(db)


def root_database(db):
    """The database of `db`'s multi-database through which zasync opens
    its connections: the one `set_root_database` declared, else the first
    one opened (Zope's main database, pyramid_zodbconn's ``''``, the first
    of `open_databases`), the one an application opens its own connections
    in.  `db` itself when it is alone."""
    databases = getattr(db, "databases", None)
    if not databases or len(databases) == 1:
        return db
    if _declared_roots:
        for each in databases.values():
            if each in _declared_roots:
                return each
    return next(iter(databases.values()))


def open_connection(db, transaction_manager=None):
    """Open a connection to `db` as part of a connection group whose
    primary connection is in the root database of its multi-database
    (see `root_database`); close it with `close_connection`."""
    root = root_database(db)
    conn = root.open(transaction_manager=transaction_manager)
    if root is db:
        return conn
    try:
        return conn.get_connection(db.database_name)
    except BaseException:
        conn.close()
        raise


def close_connection(conn):
    """Close a connection `open_connection` opened, with its group."""
    primary = conn.connections.get(root_database(conn.db()).database_name, conn)
    primary.close()


def _check_names(queues):
    if isinstance(queues, str):
        queues = (queues,)
    try:
        names = tuple(queues)
    except TypeError:
        raise ConfigurationError(
            f"queues={queues!r}: expected queue names (strings)") from None
    for name in names:
        if not isinstance(name, str):
            raise ConfigurationError(
                f"queue name {name!r}: expected a str ('' is the default queue)")
    return names


def install(db, queues=("",)):
    """Create the queues container and the named queues (the default queue
    is ''); idempotent, and safe to run from several processes at once.
    Return the installed queue names."""
    names = _check_names(queues)
    forget_oids_on_reconnect(db)
    tm = transaction.TransactionManager()
    conn = open_connection(db, tm)
    try:
        for attempt in tm.attempts(5):
            with attempt:
                root = conn.root()
                container = root.get(ROOT_KEY)
                if container is None:
                    container = root[ROOT_KEY] = Queues()
                for name in names:
                    if name not in container:
                        container.add(name)
                for queue in container.values():
                    if queue._taken_out is None:    # a queue made before it
                        queue._taken_out = JobSet()
                    give_lanes(queue)               # keys of a queue made before
                    queue.history.index_failures()  # failures of a history made before
                installed = container.keys()
    finally:
        close_connection(conn)
    logger.info("zasync queues installed: %s", ", ".join(map(repr, installed)))
    return installed


def _connection_of(conn_or_object):
    if isinstance(conn_or_object, Connection):
        return conn_or_object
    jar = getattr(conn_or_object, "_p_jar", None)
    if isinstance(jar, Connection):
        return jar
    raise ConfigurationError(
        f"{conn_or_object!r}: expected a ZODB connection (or a persistent "
        f"object stored in one)")


def get_queues(conn):
    """The `Queues` container of the connection's database."""
    conn = _connection_of(conn)
    container = conn.root().get(ROOT_KEY)
    if container is None:
        raise NotInstalledError(
            "zasync is not installed in this database: call zasync.install(db)")
    return container


def get_queue(conn, name=""):
    """The queue `name` ('' is the default) of the connection's database."""
    if not isinstance(name, str):
        raise ConfigurationError(f"queue name {name!r}: expected a str")
    return get_queues(conn)[name]


_waiting = threading.local()


def _wait_connection(db):
    """This thread's connection for waiting on `db`: one, reused, so that
    waiting often does not open connection after connection."""
    connections = getattr(_waiting, "connections", None)
    if connections is None:
        connections = _waiting.connections = weakref.WeakKeyDictionary()
    found = connections.get(db)
    if found is None or found[1].opened is None:
        tm = transaction.TransactionManager()
        found = connections[db] = (tm, open_connection(db, tm))
    return found


def wait_for(job, timeout=30.0, poll_interval=0.005, db=None):
    """Wait until `job` completed and return it as seen from a fresh
    transaction, on a connection of this thread kept for waiting (the job
    returned stays readable until the next `wait_for` of this thread shows
    it anew).

    `job` is a committed job, from any connection, open or closed: only its
    database and object id are used, never its state, which a closed
    connection may have dropped.  Or it is a job's id (``job.id``, read
    while its transaction was open), with the `db` to find it in.  Raises
    `WaitTimeoutError` after `timeout` seconds (None waits for ever).
    """
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(
            timeout, (int, float)) or timeout < 0):
        raise ConfigurationError(f"timeout={timeout!r}: expected seconds (>= 0) or None")
    if db is not None and not isinstance(db, ZODB.DB):
        raise ConfigurationError(f"db={db!r}: expected a ZODB.DB")
    if isinstance(job, str):
        if db is None:
            raise ConfigurationError(
                f"job id {job!r}: give the database to find it in, as in "
                f"wait_for(job_id, db=db)")
        job_id = job
        tm, conn = _wait_connection(db)
        tm.begin()
        found = get_queues(conn).find_job(job_id)
        if found is None:
            tm.abort()
            raise ConfigurationError(
                f"job id {job_id!r}: no such job in this database's queues")
        oid = found._p_oid
    else:
        jar = getattr(job, "_p_jar", None)
        oid = getattr(job, "_p_oid", None)
        if jar is None or oid is None:
            raise ConfigurationError(
                f"{job!r} is not stored yet: commit the transaction that put it "
                f"before waiting for it")
        tm, conn = _wait_connection(db or jar.db())
    deadline = None if timeout is None else time.monotonic() + timeout
    delay = poll_interval
    while True:
        tm.begin()
        seen = conn.get(oid)
        if seen.status == COMPLETED:
            seen._p_activate()
            seen._live._p_activate()
            return seen
        if deadline is not None and time.monotonic() >= deadline:
            status, job_id = seen.status, seen.id
            tm.abort()
            raise WaitTimeoutError(
                f"job {job_id} is still {status} after {timeout} s")
        time.sleep(delay if deadline is None else
                   max(0.0, min(delay, deadline - time.monotonic())))
        delay = min(delay * 2, 0.1)
