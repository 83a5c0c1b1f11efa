"""Jobs, a filter and commands for the tests whose workers are processes.

A worker started as ``python -m zasync worker`` imports a job's callable by
its module and name, so the callables live here, and the tests start their
workers with this folder on PYTHONPATH (`process_env`).  A test and the
jobs running in other processes meet through files: a job waits for a file
that the test writes, and appends what it did to a file of its own thread.
Every wait has a timeout: a job that is never released fails, it does not
hang its worker.

Run as a script, the module is also what the tests start as processes::

    python -m process_jobs produce URI COUNT LOG_DIR INDEX SUMMARY
    python -m process_jobs serve HOST:PORT DATA_FS COUNTS_FILE

`produce` puts COUNT jobs, one transaction each, and writes a JSON summary
(the ids committed and the errors counted by type); `serve` runs a ZEO
server that appends a line to COUNTS_FILE each time one of zasync's
conflict resolvers merges two transactions (or refuses to).
"""

import collections
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import transaction

import zasync
from zasync.testing import free_port

#: The longest a job or a helper waits for anything.
TIMEOUT = 60.0

HERE = os.path.dirname(os.path.abspath(__file__))


def process_env(**extra):
    """The environment of a process the tests start: this folder first on
    PYTHONPATH (so that workers import these jobs), unbuffered output."""
    path = os.pathsep.join(p for p in (HERE, *sys.path) if p)
    env = dict(os.environ, PYTHONPATH=path, PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def wait_for_file(path, timeout=TIMEOUT):
    """Wait until `path` exists; raise RuntimeError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{path} did not appear in {timeout} s")
        time.sleep(0.005)


def wait_until(predicate, timeout=TIMEOUT, interval=0.01, what=None):
    """Call `predicate` until it returns true; return its value, or raise
    AssertionError after `timeout` seconds (naming `what`, if given)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"still waiting after {timeout} s for {what or predicate!r}")
        time.sleep(interval)


def _append(folder, stem, line):
    """Append `line` to a file of this process and thread in `folder`."""
    name = f"{stem}-{os.getpid()}-{threading.get_ident()}.log"
    with open(os.path.join(folder, name), "a") as log:
        log.write(line + "\n")


def read_lines(folder, stem):
    """Every line the jobs appended under `stem` in `folder`, all files."""
    lines = []
    for name in sorted(os.listdir(folder)):
        if name.startswith(stem + "-") and name.endswith(".log"):
            with open(os.path.join(folder, name)) as log:
                lines.extend(log.read().splitlines())
    return lines


# -- jobs -----------------------------------------------------------------------

def record_run(value, log_dir):
    """Append the running job's id to this thread's run log; return `value`."""
    _append(log_dir, "runs", zasync.current_job().id)
    return value


def hold(folder, label, tag=None):
    """Say it arrived (file LABEL.arrived), wait for the file `release`,
    return `label`.  `tag` is for the `tagged` filter."""
    open(os.path.join(folder, f"{label}.arrived"), "w").close()
    wait_for_file(os.path.join(folder, "release"))
    return label


def gather(folder, label, count, tag=None):
    """Say it arrived, then wait until `count` jobs of `folder` arrived, so
    that it completes only if that many run at once; return `label`."""
    open(os.path.join(folder, f"{label}.arrived"), "w").close()
    deadline = time.monotonic() + TIMEOUT
    while arrived(folder) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{label}: fewer than {count} jobs ran at once")
        time.sleep(0.005)
    return label


def arrived(folder):
    """How many `hold` or `gather` jobs arrived in `folder`."""
    return sum(1 for name in os.listdir(folder) if name.endswith(".arrived"))


def interval(log_dir, label, seconds, tag=None):
    """Work for `seconds`; append "label start end" (time.time()) to this
    thread's interval log; return `label`."""
    start = time.time()
    time.sleep(seconds)    # the job's work, not a synchronisation
    end = time.time()
    _append(log_dir, "intervals", f"{label} {start!r} {end!r}")
    return label


def report(name):
    return f"report {name}"


def chore(name):
    return f"chore {name}"


def quick(label):
    return label


# -- filters (``--filter process_jobs:NAME``) --------------------------------------

def only_reports(job):
    """Take only `report` jobs."""
    return job.callable_name == "process_jobs.report"


def tagged(job):
    """Take jobs tagged with this process's PROCESS_JOBS_TAG, and untagged ones."""
    tag = job.kwargs.get("tag")
    return tag is None or tag == os.environ.get("PROCESS_JOBS_TAG")


# -- commands -------------------------------------------------------------------

def produce(uri, count, log_dir, index, summary_path):
    """Put `count` `record_run` jobs, one transaction each, counting every
    exception a commit raises (none is retried); write a JSON summary."""
    db = zasync.open_db(uri)
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    committed = []
    errors = collections.Counter()
    try:
        for number in range(count):
            try:
                tm.begin()
                job = zasync.get_queue(conn).put(
                    record_run, f"{index}:{number}", log_dir)
                tm.commit()
            except Exception as error:
                tm.abort()
                errors[type(error).__name__] += 1
            else:
                committed.append(job.id)
    finally:
        tm.abort()
        conn.close()
        db.close()
    with open(summary_path, "w") as summary:
        json.dump({"ids": committed, "errors": errors}, summary)


def serve(address, path, counts_path):
    """Run a ZEO server whose zasync conflict resolvers each append
    "CLASS merged" or "CLASS refused" to `counts_path`."""
    import BTrees.Length
    import ZEO.runzeo

    from zasync.job.job import LiveState
    from zasync.job.jobset import JobSet
    from zasync.queue.quota import HeldJobs

    fd = os.open(counts_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)

    def counting(cls):
        resolve = cls.__dict__["_p_resolveConflict"]

        def counted(self, old, saved, new):
            try:
                merged = resolve(self, old, saved, new)
            except Exception:
                os.write(fd, f"{cls.__name__} refused\n".encode())
                raise
            os.write(fd, f"{cls.__name__} merged\n".encode())
            return merged
        cls._p_resolveConflict = counted

    for cls in (JobSet, HeldJobs, LiveState, BTrees.Length.Length):
        counting(cls)
    ZEO.runzeo.main(["-a", address, "-f", path])


def start_counting_server(folder):
    """Start `serve` on a free loopback port in a child process; return
    (process, uri, counts file) once it accepts connections."""
    port = free_port()
    counts = os.path.join(folder, "resolutions.log")
    log = open(os.path.join(folder, "zeo.log"), "wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "process_jobs", "serve", f"127.0.0.1:{port}",
         os.path.join(folder, "Data.fs"), counts],
        stdout=log, stderr=subprocess.STDOUT, env=process_env())
    log.close()
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"ZEO server exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return process, f"zeo://127.0.0.1:{port}", counts
        except OSError:
            if time.monotonic() > deadline:
                stop(process)
                raise RuntimeError("ZEO server did not listen in 30 s") from None
            time.sleep(0.05)


def stop(process, timeout=20.0):
    """End a child process by its pid: SIGTERM, then SIGKILL."""
    if process.poll() is not None:
        return process.returncode
    os.kill(process.pid, signal.SIGTERM)
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        return process.wait()


class Worker:
    """A ``python -m zasync worker`` process with this folder on its
    PYTHONPATH, its output in a log file; `stop` ends it by its pid."""

    def __init__(self, log_path, uri, *options, env=None):
        self.log_path = log_path
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "zasync", "worker", "--db", uri, *options],
                stdout=log, stderr=subprocess.STDOUT, env=process_env(**(env or {})))

    @property
    def log(self):
        with open(self.log_path, errors="replace") as log:
            return log.read()

    def stop(self, timeout=30.0):
        """SIGTERM (SIGKILL after `timeout` s); return the exit status."""
        return stop(self.process, timeout)


class Workers(list):
    """`Worker` processes started with `start` (`Worker`'s arguments), all
    stopped by their pids on leaving the ``with`` block."""

    def start(self, *args, **kwargs):
        worker = Worker(*args, **kwargs)
        self.append(worker)
        return worker

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        for worker in self:
            worker.stop()


def main(argv):
    # Run as a script this module is __main__: use the importable one, so
    # that the jobs put name process_jobs.record_run, which workers import.
    import process_jobs
    command, *args = argv
    if command == "produce":
        uri, count, log_dir, index, summary = args
        process_jobs.produce(uri, int(count), log_dir, int(index), summary)
    elif command == "serve":
        process_jobs.serve(*args)
    else:
        raise SystemExit(f"unknown command {command!r}: expected produce or serve")


if __name__ == "__main__":
    main(sys.argv[1:])
