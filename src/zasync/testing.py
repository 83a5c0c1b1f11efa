"""Helpers for test suites (zasync's own and applications'): a real ZEO
server on a free loopback port, a database with zasync installed, eager
mode, a dispatcher for the time of a test, and the wait helpers
(`wait_for`, `wait_for_idle`)."""

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import transaction
import zope.event

from zasync.job import clock, context, events
from zasync.queue import wake
from zasync.queue.database import (
    close_connection, get_queues, install, open_connection, open_db, wait_for)
from zasync.worker.dispatcher import Dispatcher
from zasync.interfaces import PENDING, IJobPut, WaitTimeoutError

__all__ = [
    "ZEOServer", "close_multidb", "eager", "free_port", "installed_db",
    "open_multidb", "running_dispatcher", "wait_for", "wait_for_idle",
]


def free_port(host="127.0.0.1"):
    """A TCP port on `host` that nobody listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class ZEOServer:
    """A ZEO server in a child process, serving a FileStorage, or several
    named ones::

        ZEOServer(path)                               # storage '1' at path
        ZEOServer(folder=d, storages=("main", "async"))   # d/main.fs, d/async.fs

    ``start()`` waits until it accepts connections; ``stop()`` ends it by
    its pid (SIGTERM, then SIGKILL), ``kill()`` with SIGKILL at once.
    ``uri`` is the URI of the first storage, ``uri_for(name)`` that of any (``zeo://HOST:PORT?storage=NAME``)
    and ``uris`` maps each name to its URI, as `zasync.open_databases`
    takes them.  The server resolves conflicts with the classes it can
    import, so it runs with this process's Python and path.
    """

    def __init__(self, path=None, host="127.0.0.1", port=None, storages=None,
                 folder=None):
        if storages is not None:
            if path is not None:
                raise ValueError("give path= (one storage) or storages=, not both")
            if isinstance(storages, str) or not storages or not all(
                    isinstance(name, str) and name and name.isidentifier()
                    for name in storages):
                raise ValueError(
                    f"storages={storages!r}: expected storage names such as "
                    f"('main', 'async')")
            if len(set(storages)) != len(storages):
                raise ValueError(f"storages={storages!r}: a name is given twice")
        if folder is None:
            folder = (os.path.dirname(os.path.abspath(path)) if path is not None
                      else tempfile.mkdtemp(prefix="zasync-zeo-"))
        if path is None and storages is None:
            path = os.path.join(folder, "Data.fs")
        self.folder = folder
        self.path = path
        self.storages = tuple(storages) if storages is not None else None
        self.host = host
        self.port = port or free_port(host)
        self.process = None

    @property
    def address(self):
        return (self.host, self.port)

    @property
    def uri(self):
        if self.storages is None:
            return f"zeo://{self.host}:{self.port}"
        return self.uri_for(self.storages[0])

    def uri_for(self, name):
        """The URI of the storage `name`."""
        if self.storages is None:
            if name != "1":
                raise KeyError(f"this server serves one storage, '1', not {name!r}")
            return f"zeo://{self.host}:{self.port}"
        if name not in self.storages:
            raise KeyError(f"no storage {name!r}; this server serves "
                           + ", ".join(map(repr, self.storages)))
        return f"zeo://{self.host}:{self.port}?storage={name}"

    @property
    def uris(self):
        """Each storage's name and URI, in order (a dict)."""
        return {name: self.uri_for(name) for name in (self.storages or ("1",))}

    def _command(self):
        if self.storages is None:
            return ["-a", f"{self.host}:{self.port}", "-f", self.path]
        sections = "".join(
            f"<filestorage {name}>\n  path {os.path.join(self.folder, name + '.fs')}\n"
            f"</filestorage>\n" for name in self.storages)
        config = os.path.join(self.folder, "zeo.conf")
        with open(config, "w", encoding="utf-8") as f:
            f.write(f"<zeo>\n  address {self.host}:{self.port}\n</zeo>\n{sections}")
        return ["-C", config]

    def start(self, timeout=30.0):
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError(f"ZEO server pid {self.process.pid} already runs")
        self.log_path = os.path.join(
            self.folder, "zeo.log") if self.path is None else self.path + ".zeo.log"
        log = open(self.log_path, "ab")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            p for p in sys.path if p))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ZEO.runzeo", *self._command()],
            stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"ZEO server exited with {self.process.returncode}; "
                    f"see {self.log_path}")
            with contextlib.suppress(OSError):
                with socket.create_connection(self.address, timeout=0.5):
                    return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"ZEO server did not listen on {self.uri} in {timeout} s")

    def stop(self, timeout=10.0):
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()

    def kill(self):
        """End the server at once with SIGKILL (a crash: no index saved, no
        goodbye to its clients), by its pid."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.kill(process.pid, signal.SIGKILL)
        process.wait()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()


class PostgresDatabase:
    """A database of its own on a PostgreSQL server (trust authentication,
    as on a test machine), for RelStorage: `create()` makes it, `drop()`
    ends what is still connected to it and removes it; `uri()` names it
    for `zasync.open_db`, through another address if given (a relay)."""

    def __init__(self, prefix, host="127.0.0.1", port=5432, user="postgres"):
        self.host, self.port, self.user = host, port, user
        self.name = f"{prefix}_{os.getpid()}_{secrets.token_hex(4)}"

    def admin(self, *statements):
        """Run `statements` on the server's maintenance database."""
        import psycopg2
        conn = psycopg2.connect(host=self.host, port=self.port, user=self.user,
                                dbname="postgres", connect_timeout=5)
        try:
            conn.autocommit = True
            with conn.cursor() as cursor:
                for statement in statements:
                    cursor.execute(statement)
        finally:
            conn.close()

    def unreachable(self):
        """Why the server cannot be used, or None if it can."""
        try:
            self.admin("SELECT 1")
        except Exception as error:
            return (f"PostgreSQL is unreachable at {self.host}:{self.port} as "
                    f"{self.user} ({type(error).__name__}: {str(error).strip()})")
        return None

    def create(self):
        self.admin(f"CREATE DATABASE {self.name}")
        return self

    def drop(self):
        # DROP DATABASE ... WITH (FORCE) needs PostgreSQL 13: end the
        # connections left (a worker of an interrupted run) first.
        self.admin(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                   f"WHERE datname = '{self.name}' AND pid <> pg_backend_pid()",
                   f"DROP DATABASE IF EXISTS {self.name}")

    def uri(self, keep_history=False, host=None, port=None):
        return (f"postgres://{self.user}@{host or self.host}:{port or self.port}/"
                f"{self.name}?keep_history={str(bool(keep_history)).lower()}")


def installed_db(target, queues=("",), **db_kwargs):
    """Open a database (path or URI) and install zasync's queues in it."""
    db = open_db(target, **db_kwargs)
    install(db, queues)
    return db


# -- helpers for applications' test suites ----------------------------------
#
# Run jobs eagerly, run a dispatcher for the time of a test, wait until the
# queues are idle, and open a multi-database.


class eager:
    """Run every job inline, in the committing thread, as soon as the
    transaction that put it commits: when ``commit()`` returns, the job has
    completed (and with it the jobs it put, and its callbacks).  For the
    test suites of applications that put jobs and want their effect at
    once, without worker threads::

        with zasync.testing.eager() as ran:
            ...   # code that puts jobs and commits
        assert ran.job_ids == [...]

    Each job runs in a transaction and connection of its own, with its
    contexts (`zasync.job.context`), once: its begin_after is not waited for and
    its retry policy is not asked.  The runs of a schedule are the
    exception: they stay pending until due (each run puts the next).  Its events are sent as from a worker
    (JobStarted, then JobSucceeded or JobFailed), after its commit and after
    every subscriber has seen the JobPut of the commit that put it.  Do not
    run a dispatcher on the same queues meanwhile.

    The producer's connection keeps the snapshot it took at its commit,
    from before the job ran: read what the job did in a new transaction
    (``transaction.begin()``) or another connection.
    """

    #: Attempts at committing a job's outcome when it conflicts.
    attempts = 5

    def __init__(self):
        self.job_ids = []
        self._pending = threading.local()
        self._active = False

    def __enter__(self):
        if self._active:
            raise RuntimeError("this eager mode is already on")
        self._active = True
        zope.event.subscribers.append(self._on_event)
        # A commit that put a job wakes this process's dispatchers after
        # its JobPut events were sent; eager mode is woken the same way, so
        # that it runs the job only once every subscriber has seen the put.
        wake.register(self)
        return self

    def __exit__(self, *exc_info):
        self.stop()

    def stop(self, timeout=None):
        """Leave eager mode (as leaving the ``with`` block does)."""
        if not self._active:
            return True
        self._active = False
        wake.unregister(self)
        if self._on_event in zope.event.subscribers:
            zope.event.subscribers.remove(self._on_event)
        return True

    def _on_event(self, event):
        if not IJobPut.providedBy(event):
            return
        job = event.job
        pending = getattr(self._pending, "jobs", None)
        if pending is None:
            pending = self._pending.jobs = []
        pending.append((job._p_jar.db(), job._p_oid))

    def wake(self):
        """Run the jobs whose put this thread's last commit made true."""
        pending = getattr(self._pending, "jobs", None)
        while pending:
            db, oid = pending.pop(0)
            self._run(db, oid)

    def _run(self, db, oid):
        tm = transaction.TransactionManager()
        conn = open_connection(db, tm)
        try:
            for attempt in tm.attempts(self.attempts):
                with attempt:
                    job = conn.get(oid)
                    if job.status != PENDING:
                        return
                    if (getattr(job, "schedule", None) is not None
                            and job.begin_after > clock.now()):
                        # A schedule's run, not yet due: run at once, it
                        # would put the next, and that the next, for ever.
                        return
                    job_id = job.id
                    txn = tm.get()
                    events.notify_after_commit(txn, events.JobStarted(job))
                    with context.applied(job):
                        job()
            self.job_ids.append(job_id)
        finally:
            close_connection(conn)


class running_dispatcher:
    """Start a dispatcher on `db` for the time of a ``with`` block (or of a
    pytest fixture that yields from it) and stop it after, failing if jobs
    still run `stop_timeout` seconds later::

        @pytest.fixture
        def dispatcher(db):
            with zasync.testing.running_dispatcher(db, threads=2) as running:
                yield running

    It polls every `poll_interval` seconds (short, for tests); other
    keyword arguments go to `zasync.Dispatcher`.
    """

    def __init__(self, db, threads=2, poll_interval=0.05, stop_timeout=30.0,
                 **dispatcher_kwargs):
        if "agents" not in dispatcher_kwargs:
            dispatcher_kwargs["threads"] = threads
        self.stop_timeout = stop_timeout
        self.dispatcher = Dispatcher(db, poll_interval=poll_interval, **dispatcher_kwargs)

    def __enter__(self):
        self.dispatcher.start()
        return self.dispatcher

    def __exit__(self, exc_type, exc, tb):
        finished = self.dispatcher.stop(timeout=self.stop_timeout)
        if not finished and exc_type is None:
            raise RuntimeError(
                f"dispatcher {self.dispatcher.id}: jobs still ran "
                f"{self.stop_timeout} s after the test asked it to stop")


def wait_for_idle(db, queues=None, timeout=30.0, poll_interval=0.01):
    """Wait until the `queues` of `db` (names; all when None) hold no
    pending job and no dispatcher holds a job, then return.  A job delayed
    by `begin_after` counts as pending.  Raises `WaitTimeoutError` after
    `timeout` seconds."""
    tm = transaction.TransactionManager()
    conn = open_connection(db, tm)
    deadline = time.monotonic() + timeout
    try:
        while True:
            tm.begin()
            container = get_queues(conn)
            names = container.keys() if queues is None else list(queues)
            pending = sum(len(container[name]) for name in names)
            held = sum(len(record.jobs) for record in container.dispatchers.values())
            tm.abort()
            if not pending and not held:
                return
            if time.monotonic() >= deadline:
                raise WaitTimeoutError(
                    f"after {timeout} s, {pending} job(s) still pending and "
                    f"{held} held by dispatchers")
            time.sleep(poll_interval)
    finally:
        tm.abort()
        close_connection(conn)


def open_multidb(folder, names=("main", "async"), **db_kwargs):
    """Open a multi-database of FileStorages ``<folder>/<name>.fs``, one
    per name, and return the first (the main one); the others are in its
    ``databases`` mapping.  Close them all with `close_multidb`."""
    if isinstance(names, str) or not names:
        raise ValueError(f"names={names!r}: expected database names, main first")
    databases = {}
    for name in names:
        open_db(os.path.join(os.fspath(folder), f"{name}.fs"),
                databases=databases, database_name=name, **db_kwargs)
    return databases[names[0]]


def close_multidb(db):
    """Close every database of `db`'s multi-database."""
    for each in list(db.databases.values()):
        each.close()
