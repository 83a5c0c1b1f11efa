"""What every part of the bench shares: statistics, a scratch folder that is
removed at the end, the child processes it starts (stopped by their pid),
and reading jobs back from the database to see when they completed and
whether each ran exactly once."""

import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import transaction
from ZODB.POSException import ConflictError

from zasync import ACTIVE, COMPLETED

HERE = os.path.dirname(os.path.realpath(__file__))
REPO = os.path.dirname(HERE)


def say(message):
    """A progress line on stderr (stdout carries only the figures)."""
    print(f"# {message}", file=sys.stderr, flush=True)


# -- statistics -----------------------------------------------------------

def median(values):
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    middle = len(values) // 2
    if len(values) % 2:
        return values[middle]
    return (values[middle - 1] + values[middle]) / 2


def percentile(sorted_values, p):
    """Linear interpolation between the closest ranks (as numpy and the
    peers' benchlib do), so that the latencies compare."""
    k = (len(sorted_values) - 1) * p / 100.0
    low = math.floor(k)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (k - low)


def rate(count, seconds):
    return count / seconds if seconds > 0 else None


# -- interruption ---------------------------------------------------------

class Interrupted(BaseException):
    """Raised in the main thread on SIGTERM, so that cleanup runs as on Ctrl-C."""


def _interrupt(signum, frame):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Interrupted(f"received {signal.Signals(signum).name}")


def install_signal_handlers():
    signal.signal(signal.SIGTERM, _interrupt)


# -- scratch space and children -------------------------------------------

def disk_usage(path):
    """Bytes used by the files under `path` (allocated blocks, as du says)."""
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_blocks * 512
            except OSError:
                pass
    return total


class Scratch:
    """A temporary folder for databases and logs, and every process the
    bench starts; `close()` stops the processes by pid and removes it."""

    def __init__(self, keep=False):
        self.root = tempfile.mkdtemp(prefix="zasync-bench-")
        self.keep = keep
        self.children = []       # (description, Popen)
        self.servers = []        # ZEOServer
        self._count = 0

    def folder(self, name):
        self._count += 1
        path = os.path.join(self.root, f"{self._count:02d}-{name}")
        os.makedirs(path)
        return path

    def zeo_server(self, name):
        """Start a ZEO server on a free loopback port, serving a fresh
        FileStorage (zasync.testing.ZEOServer: a child process)."""
        from zasync.testing import ZEOServer
        server = ZEOServer(os.path.join(self.folder(name), "Data.fs"))
        self.servers.append(server)
        server.start()
        return server

    def stop_server(self, server):
        server.stop()
        if server in self.servers:
            self.servers.remove(server)

    def spawn(self, description, argv, log_path):
        """Start a child in its own process group, output to `log_path`."""
        env = dict(os.environ)
        path = [os.path.join(REPO, "src")] + [
            p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(path))
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, env=env,
                                    start_new_session=True)
        self.children.append((description, proc))
        return proc

    def stop(self, proc, timeout=15.0):
        """SIGTERM to the child's pid, SIGKILL to its group after `timeout`;
        return its exit status."""
        if proc.poll() is None:
            try:
                os.kill(proc.pid, signal.SIGTERM)
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                say(f"pid {proc.pid} ignored SIGTERM for {timeout:.0f} s: SIGKILL")
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            except ProcessLookupError:
                pass
        self.children = [(d, p) for d, p in self.children if p is not proc]
        return proc.returncode

    def close(self):
        for description, proc in list(self.children):
            if proc.poll() is None:
                say(f"stopping {description} (pid {proc.pid})")
            self.stop(proc)
        for server in list(self.servers):
            self.stop_server(server)
        if self.keep:
            say(f"scratch folder kept: {self.root}")
        else:
            shutil.rmtree(self.root, ignore_errors=True)


# -- the producer's side --------------------------------------------------

class Producer:
    """A connection of its own that puts jobs, one per transaction, and
    counts the ConflictErrors its commits raise (the queue exists so that
    there are none)."""

    def __init__(self, db):
        import zasync
        self.db = db
        self.tm = transaction.TransactionManager()
        self.conn = db.open(transaction_manager=self.tm)
        self.tm.begin()
        self.queue = zasync.get_queue(self.conn)
        self.conflicts = 0

    def put(self, func, *args):
        """Put func(*args) and commit; return the job's oid."""
        while True:
            try:
                job = self.queue.put(func, *args)
                self.tm.commit()
                return job._p_oid
            except ConflictError:
                self.conflicts += 1
                self.tm.abort()

    def fresh(self):
        """Start a new transaction, to see what others committed since."""
        self.tm.begin()
        return self.conn

    def close(self):
        self.tm.abort()
        self.conn.close()


def completed_flags(conn, oids):
    """Whether each job of `oids` completed, as a client of zasync reads it
    (``job.status``), in the transaction `conn` is in.  The jobs, then the
    live states that the status of an assigned job consults, are asked for
    at once: over ZEO one request for each, as the peers pipeline their
    reads of Redis, not one round trip per job."""
    jobs = [conn.get(oid) for oid in oids]
    conn.prefetch([job for job in jobs if job._p_changed is None])
    lives = [job.annotations for job in jobs]
    conn.prefetch([live for live in lives if live._p_changed is None])
    return [job.status == COMPLETED for job in jobs]


def wait_completed(producer, oids, what, timeout=600.0, poll_s=0.005,
                   window=64, alive=None):
    """Poll as the peers' benchlib does: every `poll_s` one fresh
    transaction reads the `window` oldest jobs not seen completed (a full
    window is followed by the next at once).  Return, per oid, the
    perf_counter time of the poll that saw it completed."""
    n = len(oids)
    done_at = [None] * n
    pending = list(range(n))
    deadline = time.perf_counter() + timeout
    conn = producer.conn
    while pending:
        producer.fresh()
        head = pending[:window]
        flags = completed_flags(conn, [oids[i] for i in head])
        now = time.perf_counter()
        missing = [i for i, ok in zip(head, flags) if not ok]
        for i, ok in zip(head, flags):
            if ok:
                done_at[i] = now
        pending = missing + pending[len(head):]
        if not missing:
            continue
        if alive is not None:
            alive()
        if now > deadline:
            raise TimeoutError(f"{what}: {n - len(pending)}/{n} jobs completed "
                               f"after {timeout:.0f} s")
        time.sleep(poll_s)
    producer.tm.abort()
    return done_at


def audit(producer, oids, expected=None):
    """Read every job back: how many are lost (not completed), ran more than
    once (attempt_count > 1 or more than one start recorded), failed, or
    returned something else than `expected[i]` (when given)."""
    conn = producer.fresh()
    lost = twice = failed = wrong = 0
    for index, oid in enumerate(oids):
        job = conn.get(oid)
        if job.status != COMPLETED:
            lost += 1
            continue
        starts = sum(1 for status, *_ in job.status_history if status == ACTIVE)
        if job.attempt_count != 1 or starts != 1:
            twice += 1
        if job.failure is not None:
            failed += 1
        elif expected is not None and job.result != expected[index]:
            wrong += 1
        if index % 1000 == 999:
            conn.cacheGC()
    producer.tm.abort()
    return {"jobs": len(oids), "lost": lost, "run_twice": twice,
            "failed": failed, "wrong_result": wrong}
