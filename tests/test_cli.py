"""The `zasync` command line, run as a real command (``python -m zasync``):
help, version, bad input, and `zasync worker` against a real ZEO server."""

import os
import signal
import subprocess
import sys
import time

import pytest
import transaction

import zasync
from zasync.cli import examples
from zasync.interfaces import ACTIVE, NotInstalledError

COMMAND_TIMEOUT = 60


def _env():
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "COLUMNS"):
        env.pop(name, None)
    return env


def run_zasync(*args, timeout=COMMAND_TIMEOUT, cwd=None):
    """Run ``python -m zasync ARGS`` to its end; return the completed process."""
    return subprocess.run([sys.executable, "-m", "zasync", *args], env=_env(),
                          capture_output=True, text=True, timeout=timeout, cwd=cwd)


def assert_usage_error(result, *expected):
    """Exit status 2, one Error line holding every `expected` text, no traceback."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    for text in expected:
        assert text in errors[0], errors[0]
    return errors[0]


def wait_until(predicate, timeout=30.0, what="condition"):
    """Poll `predicate` until it is true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


class Worker:
    """A `zasync worker` subprocess, its log in a file, killed by its pid."""

    def __init__(self, tmp_path, *args):
        self.log_path = tmp_path / "worker.log"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "zasync", "worker", *args],
                stdout=log, stderr=subprocess.STDOUT, env=_env(),
                cwd=tmp_path)   # where it keeps its id file

    @property
    def log(self):
        return self.log_path.read_text()

    def terminate(self, signum=signal.SIGTERM, timeout=20.0):
        """Send `signum`; return the exit status and the seconds it took."""
        began = time.monotonic()
        os.kill(self.process.pid, signum)
        status = self.process.wait(timeout)
        return status, time.monotonic() - began

    def kill(self):
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()


def _put(db, callable, *args, queue="", **kwargs):
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    with tm:
        job = zasync.get_queue(conn, queue).put(zasync.Job(callable, *args, **kwargs))
    return job, conn


def _status(db, oid):
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    try:
        return conn.get(oid).status
    finally:
        tm.abort()
        conn.close()


# -- help and version -------------------------------------------------------

def test_version():
    result = run_zasync("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"zasync {_installed_version()}"


def _installed_version():
    from importlib.metadata import version
    return version("zasync")


def test_top_level_help_lists_commands_with_an_example():
    result = run_zasync("--help")
    assert result.returncode == 0
    for text in ("deferred work for ZODB", "demo", "worker", "Examples:",
                 "zasync worker --db zeo://"):
        assert text in result.stdout


@pytest.mark.parametrize("command, texts", [
    ("demo", ("--dir", "--threads", "--once", "Data.fs", "Ctrl-C", "Examples:",
              "zasync demo --once")),
    ("worker", ("--db", "--threads", "--queue", "--poll-interval", "--grace",
                "--log-level", "SIGTERM", "Examples:", "zasync worker --db zeo://")),
])
def test_subcommand_help_explains_itself(command, texts):
    result = run_zasync(command, "--help")
    assert result.returncode == 0
    for text in texts:
        assert text in result.stdout, text


def test_python_dash_m_and_no_command_shows_usage():
    result = run_zasync()
    assert result.returncode in (0, 2)
    assert "Usage:" in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


# -- bad input ----------------------------------------------------------------

def test_worker_without_db():
    assert_usage_error(run_zasync("worker"), "--db")


@pytest.mark.parametrize("option, value, expected", [
    ("--threads", "0", "0 is not in the range x>=1"),
    ("--threads", "many", "'many' is not a valid integer"),
    ("--poll-interval", "0", "0.0 is not in the range x>0"),
    ("--grace", "-1", "-1.0 is not in the range x>=0"),
    ("--log-level", "loud", "'loud' is not one of"),
    ("--batch", "0", "0 is not in the range x>=1"),
])
def test_worker_bad_option_values(tmp_path, option, value, expected):
    result = run_zasync("worker", "--db", str(tmp_path / "Data.fs"), option, value)
    assert_usage_error(result, option, expected)
    assert not (tmp_path / "Data.fs").exists()   # nothing was opened


def test_worker_refuses_a_batch_for_child_processes(tmp_path):
    result = run_zasync("worker", "--db", "zeo://127.0.0.1:1", "--processes",
                        "--batch", "4", cwd=tmp_path)
    assert_usage_error(result, "--batch does not go with --processes")
    assert list(tmp_path.iterdir()) == []      # no id file, nothing opened


@pytest.mark.parametrize("spec, expected", [
    ("nomodule", "expected MODULE:FUNCTION"),
    ("os:nothing", "cannot import it (AttributeError"),
    ("nosuchmodule:check", "cannot import it (ModuleNotFoundError"),
    ("os:sep", "'os:sep' is not callable"),
])
def test_worker_bad_filter(tmp_path, spec, expected):
    result = run_zasync("worker", "--db", str(tmp_path / "Data.fs"), "--filter", spec,
                        cwd=tmp_path)
    assert_usage_error(result, "'--filter'", expected)
    assert list(tmp_path.iterdir()) == []       # no database, no id file


def test_worker_unknown_uri_scheme(tmp_path):
    assert_usage_error(run_zasync("worker", "--db", "bogus://somewhere", cwd=tmp_path),
                       "'--db'", "bogus://somewhere", "zeo")
    # refused before it ran: no worker id file was made in its folder
    assert list(tmp_path.iterdir()) == []


def test_worker_file_that_is_not_a_filestorage(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not a database\n")
    assert_usage_error(run_zasync("worker", "--db", str(path), cwd=tmp_path),
                       "'--db'", str(path), "FileStorage")
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_worker_path_under_a_file(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert_usage_error(run_zasync("worker", "--db", str(blocker / "Data.fs"), cwd=tmp_path),
                       "'--db'", str(blocker / "Data.fs"))


def test_worker_filestorage_locked_by_another_process(db, tmp_path):
    # The `db` fixture holds tmp_path/Data.fs open, and so locked.
    assert_usage_error(run_zasync("worker", "--db", str(tmp_path / "Data.fs"), cwd=tmp_path),
                       "'--db'", "another process", "ZEO")


def test_worker_unknown_queue_without_install(zeo_db, zeo_server, tmp_path):
    folder = tmp_path / "cwd"
    folder.mkdir()
    result = run_zasync("worker", "--db", zeo_server.uri, "--no-install",
                        "--queue", "mial", cwd=folder)
    assert_usage_error(result, "'--queue'", "'mial'", "'mail'")
    assert list(folder.iterdir()) == []     # no worker id file


def test_worker_not_installed_without_install(zeo_server, tmp_path):
    result = run_zasync("worker", "--db", zeo_server.uri, "--no-install", cwd=tmp_path)
    assert_usage_error(result, "'--db'", "not installed", zeo_server.uri)


def test_demo_bad_threads_and_dir(tmp_path):
    assert_usage_error(run_zasync("demo", "--threads", "0", "--dir", str(tmp_path)),
                       "--threads", "0 is not in the range x>=1")
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert_usage_error(run_zasync("demo", "--once", "--dir", str(blocker)),
                       "--dir", str(blocker), "is a file")


def test_demo_dir_in_use(db, tmp_path):
    # The `db` fixture holds tmp_path/Data.fs open, as a running demo would.
    assert_usage_error(run_zasync("demo", "--once", "--dir", str(tmp_path)),
                       "'--dir'", "in use by another process")


# -- worker over ZEO ------------------------------------------------------------

def test_worker_runs_a_job_and_stops_on_sigterm(zeo_db, zeo_server, tmp_path):
    job, conn = _put(zeo_db, examples.add, 2, 3)
    worker = Worker(tmp_path, "--db", zeo_server.uri, "--threads", "2",
                    "--poll-interval", "0.1")
    try:
        done = zasync.wait_for(job, timeout=COMMAND_TIMEOUT)
        assert done.succeeded and done.result == 5
        status, seconds = worker.terminate(signal.SIGTERM)
        assert status == 0, worker.log
        assert seconds < 10, worker.log
    finally:
        worker.kill()
        conn.close()
    log = worker.log
    assert "Traceback" not in log
    assert "with 2 thread(s)" in log
    assert "SIGTERM received" in log
    assert f"job {job.id} (zasync.cli.examples.add) succeeded" in log
    assert "worker: stopped" in log


def test_worker_lets_a_running_job_finish_on_sigint(zeo_db, zeo_server, tmp_path):
    job, conn = _put(zeo_db, examples.send_report, "Q1", parts=10, pause=0.1)
    worker = Worker(tmp_path, "--db", zeo_server.uri, "--poll-interval", "0.1",
                    "--grace", "30")
    try:
        wait_until(lambda: _status(zeo_db, job._p_oid) == ACTIVE,
                   COMMAND_TIMEOUT, "the job to start")
        status, _ = worker.terminate(signal.SIGINT)
        assert status == 0, worker.log
        done = zasync.wait_for(job, timeout=0)
        assert done.succeeded, done.failure
        assert done.result == "report Q1 sent"
    finally:
        worker.kill()
        conn.close()
    assert "SIGINT received" in worker.log


def test_worker_installs_missing_queues(zeo_server, tmp_path):
    db = zasync.open_db(zeo_server.uri)
    worker = Worker(tmp_path, "--db", zeo_server.uri, "--queue", "", "--queue", "mail",
                    "--poll-interval", "0.1", "--log-level", "debug")
    conn = None
    try:
        def installed():
            tm = transaction.TransactionManager()
            c = db.open(transaction_manager=tm)
            try:
                return "mail" in zasync.get_queues(c)
            except NotInstalledError:
                return False
            finally:
                tm.abort()
                c.close()
        wait_until(installed, COMMAND_TIMEOUT, "the worker to install 'mail'")
        job, conn = _put(db, examples.add, 20, 22, queue="mail")
        assert zasync.wait_for(job, timeout=COMMAND_TIMEOUT).result == 42
        status, _ = worker.terminate()
        assert status == 0, worker.log
    finally:
        worker.kill()
        if conn is not None:
            conn.close()
        db.close()
    assert "serving '', 'mail'" in worker.log


def test_a_second_worker_in_the_same_folder_is_told_how_to_run_beside_the_first(
        zeo_db, zeo_server, tmp_path):
    first = Worker(tmp_path, "--db", zeo_server.uri, "--poll-interval", "0.1")
    try:
        wait_until(lambda: "dispatcher" in first.log and "serving" in first.log,
                   COMMAND_TIMEOUT, "the first worker to start")
        second = run_zasync("worker", "--db", zeo_server.uri, cwd=tmp_path)
        assert first.process.poll() is None, first.log
    finally:
        first.kill()
    assert second.returncode == 1, (second.stdout, second.stderr)
    assert "Traceback" not in second.stderr
    errors = [line for line in second.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, second.stderr
    assert f"live process {first.process.pid}" in errors[0]
    assert "zasync-worker.uuid" in errors[0]
    assert "--uuid-file" in errors[0] and "--id" in errors[0]


def test_readme_says_how_to_run_two_workers_from_one_folder():
    readme = open(os.path.join(os.path.dirname(__file__), "..", "README.rst"),
                  encoding="utf-8").read()
    section = readme[readme.index("zasync worker"):]
    assert "--uuid-file" in section and "--id" in section


# -- finding the user's code ------------------------------------------------------

#: The installed command, as a user runs it: unlike ``python -m zasync``,
#: its sys.path does not start with the current folder.
ZASYNC_SCRIPT = os.path.join(os.path.dirname(sys.executable), "zasync")

MYJOBS = '''
import os

def greet(name, punctuation="!"):
    return f"hello {name}{punctuation}"

with open(os.path.join(os.path.dirname(__file__), "imported.log"), "a") as log:
    log.write(f"{os.getpid()}\\n")
'''


def run_script(*args, cwd, **env):
    return subprocess.run([ZASYNC_SCRIPT, *args], env=dict(_env(), **env),
                          capture_output=True, text=True, timeout=COMMAND_TIMEOUT,
                          cwd=cwd)


def test_put_and_worker_find_a_module_in_the_current_folder(zeo_db, zeo_server, tmp_path):
    (tmp_path / "myjobs.py").write_text(MYJOBS)
    put = run_script("put", "myjobs:greet", "bob", "punctuation=?", "--db",
                     zeo_server.uri, cwd=tmp_path)
    assert put.returncode == 0, put.stderr
    job_id = put.stdout.strip()
    worker = subprocess.Popen(
        [ZASYNC_SCRIPT, "worker", "--db", zeo_server.uri, "--poll-interval", "0.1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env(), cwd=tmp_path)
    try:
        waited = run_script("wait", job_id, "--db", zeo_server.uri, "--timeout", "60",
                            cwd=tmp_path)
    finally:
        os.kill(worker.pid, signal.SIGTERM)
        worker.wait(20)
    assert waited.returncode == 0, (waited.stdout, waited.stderr)
    assert "'hello bob?'" in waited.stdout


def test_app_option_and_environment_import_modules_at_start(zeo_db, zeo_server, tmp_path):
    app = tmp_path / "app"
    app.mkdir()
    (app / "myjobs.py").write_text(MYJOBS)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    path = {"PYTHONPATH": str(app)}
    for how in (("-A", "myjobs"), ("--app", "myjobs")):
        result = run_script(*how, "status", "--db", zeo_server.uri, cwd=elsewhere, **path)
        assert result.returncode == 0, result.stderr
    result = run_script("status", "--db", zeo_server.uri, cwd=elsewhere,
                        ZASYNC_APP="myjobs", **path)
    assert result.returncode == 0, result.stderr
    assert len((app / "imported.log").read_text().split()) == 3


def test_a_module_that_cannot_be_imported_says_what_to_do(zeo_db, zeo_server, tmp_path):
    hints = ("current folder", str(tmp_path), "--app", "PYTHONPATH", "pip install")
    cases = [
        (("--app", "nosuchmod", "status", "--db", zeo_server.uri), "'--app'"),
        (("status", "--db", zeo_server.uri), "ZASYNC_APP"),
        (("put", "nosuchmod:greet", "--db", zeo_server.uri), "'MODULE:FUNCTION'"),
        (("worker", "--db", zeo_server.uri, "--filter", "nosuchmod:only"), "'--filter'"),
    ]
    for args, named in cases:
        env = {"ZASYNC_APP": "nosuchmod"} if named == "ZASYNC_APP" else {}
        result = run_script(*args, cwd=tmp_path, **env)
        error = assert_usage_error(result, named, "'nosuchmod'", *hints)
        assert "No module named 'nosuchmod'" in error
    assert not (tmp_path / "zasync-worker.uuid").exists()


def test_a_worker_that_cannot_import_a_job_says_so_and_runs_the_others(
        zeo_db, zeo_server, tmp_path):
    app = tmp_path / "app"
    app.mkdir()
    (app / "myjobs.py").write_text(MYJOBS)
    put = run_script("put", "myjobs:greet", "bob", "--db", zeo_server.uri, cwd=app)
    assert put.returncode == 0, put.stderr
    greet_id = put.stdout.strip()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    log_path = elsewhere / "worker.log"
    with open(log_path, "wb") as log:
        worker = subprocess.Popen(
            [ZASYNC_SCRIPT, "worker", "--db", zeo_server.uri, "--poll-interval", "0.1"],
            stdout=log, stderr=subprocess.STDOUT, env=_env(), cwd=elsewhere)
    try:
        job, conn = _put(zeo_db, examples.add, 1, 2)
        try:
            assert zasync.wait_for(job, timeout=COMMAND_TIMEOUT).result == 3
        finally:
            conn.close()
        wait_until(lambda: greet_id in log_path.read_text(), COMMAND_TIMEOUT,
                   "the worker to log the job it cannot import")
        status = run_script("job", greet_id, "--db", zeo_server.uri, "--json",
                            cwd=elsewhere)
    finally:
        os.kill(worker.pid, signal.SIGTERM)
        worker.wait(20)
    text = log_path.read_text()
    assert "claim failed" not in text and "Traceback" not in text, text
    lines = [line for line in text.splitlines() if greet_id in line]
    assert len(lines) == 1, text              # said once, not at every claim
    # Its attempt failed, naming what is missing; it is retried later (by
    # this worker or one that can import it), not at every claim.
    for part in ("cannot import myjobs.greet", "No module named 'myjobs'", "retrying in",
                 "PYTHONPATH", str(elsewhere)):
        assert part in lines[0], part
    assert '"status": "pending"' in status.stdout


def test_app_modules_are_imported_in_a_process_workers_children_too(
        zeo_db, zeo_server, tmp_path):
    (tmp_path / "myjobs.py").write_text(MYJOBS)
    worker = subprocess.Popen(
        [ZASYNC_SCRIPT, "-A", "myjobs", "worker", "--db", zeo_server.uri, "--processes",
         "--threads", "1", "--poll-interval", "0.1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env(), cwd=tmp_path)
    try:
        job, conn = _put(zeo_db, examples.add, 2, 3)    # needs nothing of myjobs
        try:
            assert zasync.wait_for(job, timeout=COMMAND_TIMEOUT).result == 5
        finally:
            conn.close()
    finally:
        os.kill(worker.pid, signal.SIGTERM)
        worker.wait(20)
    pids = (tmp_path / "imported.log").read_text().split()
    assert len(pids) == 2 and str(worker.pid) in pids     # the worker, its child
