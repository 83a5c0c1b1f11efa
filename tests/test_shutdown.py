"""Shutdown in order: an application process whose dispatcher was started
by the ZCML policy stops it -- its jobs finished, their results stored, its
stop recorded -- before its databases close, however the process ends:
SIGINT or SIGTERM with a server's ``finally: db.close()`` (as ``runwsgi``
does), a signal with no close at all, the script's own ``db.close()``, or
the end of the script.  Each case is a real process (tests/shutdown_app.py)
on a real FileStorage, a multi-database of two, or a ZEO server, stopped in
the middle of its job or after it."""

import os
import signal
import subprocess
import sys
import time

import pytest

import zasync
from zasync import testing
from zasync.interfaces import COMPLETED

from process_jobs import process_env

TIMEOUT = 60

#: Lines that say something went wrong at the stop.
BAD = ("could not", "Traceback", "Exception ignored", "ERROR")


def start(folder, layout, style, phase):
    log = open(os.path.join(folder, "log"), "ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "shutdown_app", str(folder), layout, style, phase],
        stdout=log, stderr=subprocess.STDOUT, env=process_env(), cwd=str(folder))
    log.close()
    return process


def finish(process):
    try:
        return process.wait(TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def wait_until(condition, what, process):
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"the process ended ({process.returncode}) "
                                 f"before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {TIMEOUT} s for {what}")
        time.sleep(0.01)


def read(folder, name):
    path = os.path.join(folder, name)
    if not os.path.exists(path):
        return ""
    with open(path) as f:
        return f.read()


def job_ids(folder):
    return [line.split()[1] for line in read(folder, "log").splitlines()
            if line.startswith("put ")]


def stored_state(folder, layout):
    """The jobs and dispatcher records as the database has them now."""
    if layout == "single":
        db = zasync.open_db(os.path.join(folder, "Data.fs"))
    elif layout == "zeo":
        db = zasync.open_db(read(folder, "zeo-uri"))
    else:
        db = testing.open_multidb(folder)
    try:
        with db.transaction() as conn:
            if layout == "multi":
                conn = conn.get_connection("async")
            container = zasync.get_queues(conn)
            jobs = {}
            for job_id in job_ids(folder):
                job = container.find_job(job_id)
                jobs[job_id] = (job.status, job.result)
            records = {record_id: (record.stopped_at is not None, list(record.jobs.ids()))
                       for record_id, record in container.dispatchers.items()}
        return jobs, records
    finally:
        if layout == "multi":
            testing.close_multidb(db)
        else:
            db.close()


def run_once(folder, layout, style, phase, signum=None):
    process = start(folder, layout, style, phase)
    try:
        if signum is not None:
            done = len(read(folder, "runs").splitlines())
            if phase == "mid":
                wait_until(lambda: os.path.exists(os.path.join(folder, "started")),
                           "the job started", process)
            else:
                wait_until(lambda: len(read(folder, "runs").splitlines()) > done,
                           "the job's work was done", process)
            process.send_signal(signum)
        return finish(process)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def assert_clean_stop(folder, layout, returncode, runs=1):
    log = read(folder, "log")
    assert returncode == 0, log
    assert not [line for line in log.splitlines() if any(bad in line for bad in BAD)], log
    # the job's work was done once, and its result is stored: it will
    # not run again
    assert read(folder, "runs").splitlines() == ["ran"] * runs, log
    jobs, records = stored_state(folder, layout)
    assert len(jobs) == runs
    assert set(jobs.values()) == {(COMPLETED, "done")}, log
    # the dispatcher recorded its stop and holds nothing
    assert records and all(stopped and not held for stopped, held in records.values()), (
        records, log)
    return records


CASES = [
    # layout, style, signal, phase
    ("single", "serve", signal.SIGINT, "mid"),
    ("single", "serve", signal.SIGINT, "after"),
    ("single", "serve", signal.SIGTERM, "mid"),
    ("single", "serve", signal.SIGTERM, "after"),
    ("single", "wait", signal.SIGTERM, "mid"),
    ("single", "wait", signal.SIGINT, "after"),
    ("single", "close", None, "mid"),
    ("single", "close", None, "after"),
    ("single", "end", None, "mid"),
    ("single", "end", None, "after"),
    ("multi", "serve", signal.SIGINT, "mid"),
    ("multi", "serve", signal.SIGINT, "after"),
    ("multi", "serve", signal.SIGTERM, "mid"),
    ("multi", "serve", signal.SIGTERM, "after"),
    ("multi", "wait", signal.SIGTERM, "after"),
    ("multi", "close", None, "mid"),
    ("multi", "close", None, "after"),
    ("multi", "end", None, "after"),
    ("zeo", "serve", signal.SIGTERM, "mid"),
    ("zeo", "serve", signal.SIGINT, "after"),
    ("zeo", "close", None, "mid"),
]


@pytest.mark.parametrize(
    "layout, style, signum, phase", CASES,
    ids=[f"{layout}-{style}-{signal.Signals(signum).name if signum else 'self'}-{phase}"
         for layout, style, signum, phase in CASES])
def test_the_dispatcher_stops_before_the_database_closes(request, tmp_path, layout,
                                                         style, signum, phase):
    if layout == "zeo":
        (tmp_path / "zeo-uri").write_text(request.getfixturevalue("zeo_server").uri)
    returncode = run_once(tmp_path, layout, style, phase, signum)
    assert_clean_stop(tmp_path, layout, returncode)


@pytest.mark.slow(reason="starts one instance ten times as processes, each stopped by a signal "
                         "in the middle of a job or after it, then restarted on the same files")
def test_ten_stops_of_one_instance_lose_nothing_and_keep_one_id(tmp_path):
    """Ten runs of one instance (the multi-database layout, as in Zope),
    stopped by SIGINT and SIGTERM in turn, in the middle of a job or after
    it: ten jobs done once each, ten results stored, one dispatcher id."""
    for run in range(10):
        signum = signal.SIGINT if run % 2 == 0 else signal.SIGTERM
        phase = "mid" if run % 4 < 2 else "after"
        for name in ("started",):
            if os.path.exists(tmp_path / name):
                os.remove(tmp_path / name)
        returncode = run_once(tmp_path, "multi", "serve", phase, signum)
        assert returncode == 0, read(tmp_path, "log")
    records = assert_clean_stop(tmp_path, "multi", 0, runs=10)
    assert len(records) == 1, records


# -- in this process ------------------------------------------------------------

def test_closing_the_database_stops_any_dispatcher_on_it_first(tmp_path):
    """Not only the subscriber's: a dispatcher an application started
    itself is stopped (its handed results stored, its stop recorded) by a
    ``db.close()`` of any database of its multi-database."""
    import zope_jobs
    db = testing.open_multidb(tmp_path)
    async_db = db.databases["async"]
    zasync.install(async_db)
    dispatcher = zasync.Dispatcher(async_db, threads=1, poll_interval=0.05)
    dispatcher.start()
    with async_db.transaction() as conn:
        job = zasync.get_queue(conn).put(zasync.Job(zope_jobs.add, 2, 3))
    assert zasync.wait_for(job, timeout=TIMEOUT).result == 5
    db.close()             # the main database, as Zope closes it
    assert not dispatcher.running
    with async_db.transaction() as conn:
        record = zasync.get_queues(conn).dispatchers[dispatcher.id]
        assert record.stopped_at is not None
    async_db.close()


def test_a_job_still_running_when_the_database_closes_is_handed_back(tmp_path,
                                                                    monkeypatch):
    """The stop before a close waits `STOP_TIMEOUT` for running jobs; one
    still running then is handed back with the record of the stop, to run
    again (its outcome could not be stored once the database is closed)."""
    import zope_jobs
    from zasync.worker import shutdown
    from zasync.interfaces import PENDING
    monkeypatch.setattr(shutdown, "STOP_TIMEOUT", 0.2)
    path = str(tmp_path / "Data.fs")
    db = testing.installed_db(path)
    dispatcher = zasync.Dispatcher(db, threads=1, poll_interval=0.05)
    dispatcher.start()
    with db.transaction() as conn:
        job = zasync.get_queue(conn).put(zasync.Job(zope_jobs.wait_at_gate, "close"))
        job_id = job.id
    try:
        assert zope_jobs.arrived("close").wait(TIMEOUT)
        db.close()
        assert not dispatcher.running
    finally:
        zope_jobs.gate("close").set()
    for agent in dispatcher.agents:
        assert agent.wait_idle(TIMEOUT)
    db = zasync.open_db(path)
    try:
        with db.transaction() as conn:
            container = zasync.get_queues(conn)
            assert container.find_job(job_id).status == PENDING
            record = container.dispatchers[dispatcher.id]
            assert record.stopped_at is not None and not list(record.jobs.ids())
    finally:
        db.close()


def test_a_killed_instance_recovers_its_own_job_at_once_on_restart(tmp_path):
    """SIGKILL runs nothing: the job it ran is left active.  The restarted
    instance runs under the id of its id file and recovers that job at
    once, not after the death interval (three minutes by default)."""
    process = start(tmp_path, "multi", "wait", "mid")
    try:
        wait_until(lambda: os.path.exists(tmp_path / "started"), "the job started",
                   process)
        process.kill()
        process.wait(TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert read(tmp_path, "runs") == ""
    began = time.monotonic()
    process = start(tmp_path, "multi", "serve", "after")
    try:
        wait_until(lambda: len(read(tmp_path, "runs").splitlines()) == 2,
                   "the recovered job and the new one ran", process)
        process.send_signal(signal.SIGINT)
        returncode = finish(process)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    log = read(tmp_path, "log")
    assert "recovered 1 job(s) of its earlier run" in log, log
    assert time.monotonic() - began < 60
    # the killed run's job and the new run's job, each done once
    records = assert_clean_stop(tmp_path, "multi", returncode, runs=2)
    assert len(records) == 1
