"""Jobs and helpers for the tests whose workers are real processes: crash
recovery, ZEO server faults, cancellation, time limits, RelStorage and the
embedded server.

A ``python -m zasync worker`` imports a job's callable by its module and
name, so the callables live here and the workers run with this folder on
their PYTHONPATH (`worker_env`).  A test and the jobs running in other
processes meet through files in a folder the test owns:

- a job says it started by writing ``NAME.started.ATTEMPT`` (holding the
  pid of the process that runs it) and waits for ``NAME.release``;
- every run appends a line to a log file of its own process and thread
  (``runs-PID-THREAD.log``), so that a test counts runs even of attempts
  whose transaction was lost with a killed process.

Every wait has a timeout: a job that is never released fails, it does not
hang its worker, and a test fails rather than hangs.
"""

import os
import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest
import transaction

import zasync
import zasync.cli.examples

import process_jobs

#: The persistent counter a job increments in its own transaction: its
#: value says how often the job's work was committed.
Counter = zasync.cli.examples.Counter

#: The longest a job or a helper waits for anything.
TIMEOUT = 60.0

HERE = os.path.dirname(os.path.abspath(__file__))


def worker_env(**extra):
    """The environment of a process the tests start: this folder first on
    PYTHONPATH (so that workers import these jobs), unbuffered output."""
    path = os.pathsep.join(p for p in (HERE, *sys.path) if p)
    env = dict(os.environ, PYTHONPATH=path, PYTHONUNBUFFERED="1")
    for name in ("FORCE_COLOR", "COLUMNS"):
        env.pop(name, None)
    env.update(extra)
    return env


# -- waiting -----------------------------------------------------------------

def wait_until(predicate, timeout=TIMEOUT, what=None, interval=0.02):
    """`process_jobs.wait_until`, polling every 20 ms."""
    return process_jobs.wait_until(predicate, timeout, interval, what)


def wait_for_file(path, timeout=TIMEOUT):
    """Wait until `path` exists (from inside a job): raise RuntimeError
    after `timeout` seconds, which fails the job instead of hanging it."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{path} did not appear in {timeout} s")
        time.sleep(0.01)


def touch(folder, name, text=""):
    """Write the file `name` in `folder` at once (a temporary name, then a
    rename, so a reader never sees it half-written)."""
    path = os.path.join(folder, name)
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)
    return path


def started_pid(folder, name, attempt=1, timeout=TIMEOUT):
    """Wait until the job `name` started its attempt `attempt`; return the
    pid of the process that runs it."""
    path = os.path.join(folder, f"{name}.started.{attempt}")
    wait_until(lambda: os.path.exists(path), timeout, f"{name} attempt {attempt}")
    with open(path) as f:
        return int(f.read())


def runs(folder):
    """Every run line the jobs appended in `folder`, as tuples of words:
    (event, name, attempt, pid)."""
    lines = []
    for entry in sorted(os.listdir(folder)):
        if entry.startswith("runs-") and entry.endswith(".log"):
            with open(os.path.join(folder, entry)) as log:
                lines.extend(tuple(line.split()) for line in log if line.strip())
    return lines


def runs_of(folder, name, event="started"):
    """The (attempt, pid) of each run of job `name` that reached `event`,
    by attempt."""
    return sorted((int(attempt), int(pid)) for what, job, attempt, pid in runs(folder)
                  if job == name and what == event)


# -- jobs ----------------------------------------------------------------------

def _attempt():
    """The running job's attempt number (a job taken ahead of a free thread
    is counted as started only when its outcome is stored)."""
    job = zasync.current_job()
    return job.attempt_count + (1 if job._status == zasync.ASSIGNED else 0)


def _log_run(folder, event, name, attempt):
    entry = f"runs-{os.getpid()}-{threading.get_ident()}.log"
    with open(os.path.join(folder, entry), "a") as log:
        log.write(f"{event} {name} {attempt} {os.getpid()}\n")


def hold(folder, name, counter=None):
    """Say it started (``NAME.started.ATTEMPT``), wait for ``NAME.release``,
    increment the persistent `counter` (in the job's own transaction, so
    the increment commits with the job's outcome or not at all) and return
    what ran it: {"attempt": ..., "pid": ...}."""
    attempt = _attempt()
    _log_run(folder, "started", name, attempt)
    touch(folder, f"{name}.started.{attempt}", str(os.getpid()))
    wait_for_file(os.path.join(folder, f"{name}.release"))
    if counter is not None:
        counter.increment()
    _log_run(folder, "finished", name, attempt)
    return {"attempt": attempt, "pid": os.getpid()}


def work(folder, name, seconds, counter=None):
    """Log the run, work for `seconds` (the job's work, not a
    synchronisation), increment `counter` if given; return `name`."""
    attempt = _attempt()
    _log_run(folder, "started", name, attempt)
    time.sleep(seconds)
    if counter is not None:
        counter.increment()
    _log_run(folder, "finished", name, attempt)
    return name


def gather(folder, name, count):
    """Say it started, then wait until `count` jobs of `folder` started, so
    that it completes only if that many run at once; return `name`."""
    attempt = _attempt()
    _log_run(folder, "started", name, attempt)
    touch(folder, f"{name}.started.{attempt}", str(os.getpid()))
    wait_until(lambda: len([n for n in os.listdir(folder) if ".started." in n
                            and not n.endswith(".tmp")]) >= count,
               TIMEOUT, f"{count} jobs running at once")
    return name


def wait_for_cancel(folder, name, counter, how="progress"):
    """Change the database (increment `counter`), say it started, then
    look for a cancellation every 50 ms with ``zasync.progress`` or
    ``zasync.check_cancelled`` (`how`), which raise `zasync.Cancelled`."""
    counter.increment()
    attempt = _attempt()
    _log_run(folder, "started", name, attempt)
    touch(folder, f"{name}.started.{attempt}", str(os.getpid()))
    deadline = time.monotonic() + TIMEOUT
    step = 0
    while time.monotonic() < deadline:
        step += 1
        if how == "progress":
            zasync.progress(min(0.99, step / 1000), f"step {step}")
        else:
            zasync.check_cancelled()
        time.sleep(0.05)
    raise RuntimeError(f"{name}: not cancelled in {TIMEOUT} s")


def spin(folder, name, seconds):
    """Say it started, then busy-loop for `seconds` without ever looking at
    the job (what only a process agent can stop early).  However it ends,
    ``NAME.ran.ATTEMPT`` says how many seconds it ran (a SIGTERM ends a
    process agent's child with SystemExit, which passes through here)."""
    attempt = _attempt()
    touch(folder, f"{name}.started.{attempt}", str(os.getpid()))
    began = time.monotonic()
    try:
        while time.monotonic() < began + seconds:
            pass
    finally:
        touch(folder, f"{name}.ran.{attempt}", repr(time.monotonic() - began))
    _log_run(folder, "finished", name, attempt)
    return seconds


def stubborn_spin(folder, name, seconds):
    """Like `spin`, but ignore SIGTERM first (a job stuck where Python
    cannot interrupt it): only SIGKILL ends its process early."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    return spin(folder, name, seconds)


def describe_outcome(outcome):
    """A callback: what it received, as text ("failed: TYPE: message" or
    "succeeded: RESULT")."""
    if isinstance(outcome, zasync.Failure):
        return f"failed: {outcome.type}: {outcome.message}"
    return f"succeeded: {outcome!r}"


# -- the test's side of the database ---------------------------------------------

class Client:
    """A connection of the test's own, for putting jobs and looking at them
    in fresh transactions."""

    def __init__(self, db):
        self.db = db
        self.tm = transaction.TransactionManager()
        self.conn = db.open(transaction_manager=self.tm)

    def close(self):
        self.tm.abort()
        self.conn.close()

    def queues(self):
        """The queues container, seen from a new transaction."""
        self.tm.begin()
        return zasync.get_queues(self.conn)

    def put(self, callable, *args, queue="", callbacks=None, **put_kwargs):
        """Put one job in its own transaction; return the (committed) job.
        `callbacks` is a dict for ``job.add_callbacks``."""
        return self.put_many([(callable, args)], queue=queue, callbacks=callbacks,
                             **put_kwargs)[0]

    def put_many(self, calls, queue="", callbacks=None, **put_kwargs):
        """Put jobs ``[(callable, args), ...]`` in one transaction."""
        for attempt in self.tm.attempts(5):
            with attempt:
                target = zasync.get_queue(self.conn, queue)
                jobs = []
                for callable, args in calls:
                    job = callable if isinstance(callable, zasync.Job) else zasync.Job(
                        callable, *args)
                    if callbacks:
                        job.add_callbacks(**callbacks)
                    jobs.append(target.put(job, **put_kwargs))
        return jobs

    def job(self, job):
        """`job` as a new transaction sees it."""
        self.tm.begin()
        return self.conn.get(job._p_oid)

    def jobs(self, jobs):
        """`jobs` as one new transaction sees them."""
        self.tm.begin()
        return [self.conn.get(job._p_oid) for job in jobs]

    def history(self, job):
        """The job's status history as (status, dispatcher id) pairs."""
        return [(status, by) for status, _, by in self.job(job).status_history]

    def record(self, dispatcher_id):
        """The record of the dispatcher `dispatcher_id`, seen afresh."""
        return self.queues().dispatchers.get(dispatcher_id)

    def registered(self, worker):
        """Whether `worker` has registered its dispatcher (and runs)."""
        record = self.record(worker.id)
        return (record is not None and record.stopped_at is None
                and record.info.get("pid") == worker.pid)


# -- worker processes ---------------------------------------------------------------

class WorkerProcess:
    """A ``python -m zasync worker`` process, its output in ``NAME.log``
    under `folder`, its id kept in ``NAME.uuid`` there (written before it
    starts, so the test knows the id; a restart with the same name reuses
    it), started in a process group of its own so that the children of a
    process agent can be ended with it, by its pid.  `launcher` is put
    before the command (``ip netns exec NAME``, which execs it: the pid
    stays the worker's own)."""

    def __init__(self, folder, name, uri, *options, threads=2, ping=0.5,
                 death=3.0, poll=0.1, prefetch=0, uuid_file=None, dispatcher_id=None,
                 launcher=()):
        self.folder = str(folder)
        self.name = name
        self.uuid_file = uuid_file or os.path.join(self.folder, f"{name}.uuid")
        if dispatcher_id is None:
            if not os.path.exists(self.uuid_file):
                touch(os.path.dirname(self.uuid_file), os.path.basename(self.uuid_file),
                      f"{name}-{uuid.uuid4().hex[:12]}\n")
            with open(self.uuid_file) as f:
                dispatcher_id = f.read().strip()
            id_options = ["--uuid-file", self.uuid_file]
        else:
            id_options = ["--uuid-file", self.uuid_file, "--id", dispatcher_id]
        self.id = dispatcher_id
        self.log_path = os.path.join(self.folder, f"{name}.log")
        self.command = [
            *launcher, sys.executable, "-m", "zasync", "worker", "--db", uri,
            "--threads", str(threads), "--ping-interval", str(ping),
            "--death-interval", str(death), "--poll-interval", str(poll),
            "--prefetch", str(prefetch), *id_options, *options]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env=worker_env(), cwd=self.folder,
                start_new_session=True)
        self.pid = self.process.pid

    def __repr__(self):
        return f"<worker {self.name} pid {self.pid} id {self.id}>"

    @property
    def log(self):
        with open(self.log_path, errors="replace") as log:
            return log.read()

    def alive(self):
        return self.process.poll() is None

    def signal(self, signum):
        os.kill(self.pid, signum)

    def kill(self):
        """SIGKILL the worker (only it, not its children) and reap it, so
        that its pid is seen as gone."""
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
        self.process.wait(TIMEOUT)

    def terminate(self, timeout=TIMEOUT):
        """SIGTERM; return (exit status, seconds it took to exit)."""
        began = time.monotonic()
        os.kill(self.pid, signal.SIGTERM)
        status = self.process.wait(timeout)
        return status, time.monotonic() - began

    def wait_log(self, text, timeout=TIMEOUT):
        """Wait until the worker's output holds `text`."""
        return wait_until(lambda: text in self.log, timeout, f"{text!r} in {self.log_path}")

    def end(self):
        """Make sure it and what it started are gone: SIGCONT (it may be
        paused), then SIGKILL to its process group, whose id is its pid;
        reap it.  A worker already reaped is left alone: its pid may have
        been given to another process since."""
        if self.process.poll() is not None:
            return
        for signum in (signal.SIGCONT, signal.SIGKILL):
            try:
                os.killpg(self.pid, signum)
            except ProcessLookupError:
                pass
        self.process.wait(TIMEOUT)


class Workers:
    """The worker processes of one test; `end_all` (in a ``finally`` or a
    fixture's teardown) ends every one of them by its pid."""

    def __init__(self, folder, uri):
        self.folder = folder
        self.uri = uri
        self.started = []

    def start(self, name, *options, uri=None, **kwargs):
        worker = WorkerProcess(self.folder, name, uri or self.uri, *options, **kwargs)
        self.started.append(worker)
        return worker

    def end_all(self):
        for worker in self.started:
            worker.end()


#: Starting a worker process takes about a second; a loaded machine, more.
STARTUP = 20.0


def start_registered(client, workers, name, *options, **kwargs):
    """Start worker `name` (see `Workers.start`) and wait until its
    dispatcher has registered in the database."""
    worker = workers.start(name, *options, **kwargs)
    wait_until(lambda: client.registered(worker), STARTUP, f"{worker} to register")
    return worker


def fresh_postgres_database(prefix):
    """A `zasync.testing.PostgresDatabase`, created; if the server cannot
    be reached the test is skipped, saying why -- or fails, where
    ZASYNC_REQUIRE_POSTGRES=1 (CI) makes PostgreSQL required."""
    from zasync.testing import PostgresDatabase
    database = PostgresDatabase(prefix)
    why = database.unreachable()
    if why is not None:
        if os.environ.get("ZASYNC_REQUIRE_POSTGRES") == "1":
            pytest.fail(why + "; ZASYNC_REQUIRE_POSTGRES=1 requires it")
        pytest.skip(why + "; set ZASYNC_REQUIRE_POSTGRES=1 to fail instead")
    return database.create()
