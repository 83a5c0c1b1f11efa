"""The mistakes of a first hour with zasync, each answered by a message
that says what is wrong: no ZEO server at the address given, a FileStorage
another process has open, a misspelt URI scheme, a URL that is not UTF-8;
and waiting for a job put in a transaction that has ended."""

import os
import subprocess
import sys
import time

import pytest

import zasync
from zasync.cli.commands import ZEO_WAIT
from zasync.testing import ZEOServer, free_port

from recovery_jobs import wait_until, worker_env


def run_zasync(*args, timeout=60):
    """Run ``python -m zasync ARGS``; return (result, seconds it took)."""
    began = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "zasync", *args], env=worker_env(),
                            capture_output=True, text=True, timeout=timeout,
                            stdin=subprocess.DEVNULL)
    return result, time.monotonic() - began


def error_line(result):
    """The one "Error:" line of a command that failed as a usage error."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


# -- no ZEO server at the address ------------------------------------------------

@pytest.mark.parametrize("command", [("status",), ("jobs",), ("job", "0" * 20),
                                     ("put", "zasync.cli.examples:add", "1", "2")])
def test_a_command_says_at_once_that_no_zeo_server_answers(command):
    port = free_port()
    result, took = run_zasync(*command, "--db", f"zeo://127.0.0.1:{port}")
    error = error_line(result)
    assert f"no ZEO server answers at 127.0.0.1:{port}" in error
    assert "connection refused" in error
    assert "expected a FileStorage path" not in error
    # Said from the connection refused, not after waiting in vain for the
    # command's wait_timeout (a loaded machine may take seconds to start
    # Python: no tighter bound).
    assert took < ZEO_WAIT, took


def test_open_db_says_no_zeo_server_answered_after_its_wait(caplog):
    port = free_port()
    uri = f"zeo://127.0.0.1:{port}?wait_timeout=1"
    with pytest.raises(zasync.DatabaseUnavailableError) as raised:
        zasync.open_db(uri)
    assert str(raised.value).startswith(
        f"no ZEO server answered at 127.0.0.1:{port} in 1 s")
    # it said so in the log before it waited
    assert [record.getMessage() for record in caplog.records
            if record.name == "zasync.queue.database"] == [
        f"no ZEO server answers at 127.0.0.1:{port} yet (connection refused); "
        f"waiting up to 1 s for one to start"]


def test_a_worker_waits_for_a_zeo_server_that_starts_and_says_so(tmp_path):
    server = ZEOServer(str(tmp_path / "Data.fs"))
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "zasync", "worker", "--db", server.uri,
             "--uuid-file", str(tmp_path / "worker.uuid")],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=worker_env(), cwd=tmp_path)
    try:
        waiting = f"no ZEO server answers at {server.host}:{server.port} yet"
        wait_until(lambda: waiting in log_path.read_text(), 30, "the worker to wait")
        server.start()
        wait_until(lambda: "worker: pid" in log_path.read_text()
                   or worker.poll() is not None, 60, "the worker to serve")
        assert "worker: pid" in log_path.read_text(), log_path.read_text()
        assert worker.poll() is None
        db = zasync.open_db(server.uri)
        try:
            assert zasync.install(db) == [""]      # the worker installed it
        finally:
            db.close()
    finally:
        if worker.poll() is None:
            worker.terminate()
        worker.wait(30)
        server.stop()


def test_a_worker_gives_up_naming_the_address_not_the_uri(tmp_path):
    port = free_port()
    result, took = run_zasync("worker", "--db", f"zeo://127.0.0.1:{port}?wait_timeout=1",
                              "--uuid-file", str(tmp_path / "worker.uuid"))
    error = error_line(result)
    assert f"no ZEO server answered at 127.0.0.1:{port} in 1 s" in error
    assert "expected a FileStorage path" not in error
    assert f"no ZEO server answers at 127.0.0.1:{port} yet" in result.stderr
    assert not os.path.exists(tmp_path / "worker.uuid")


# -- a FileStorage open in another process ----------------------------------------

LOCKER = """
import sys, time, ZODB.FileStorage
storage = ZODB.FileStorage.FileStorage(sys.argv[1])
print("open", flush=True)
sys.stdin.read()
storage.close()
"""


@pytest.fixture
def locked(tmp_path):
    """A Data.fs another process holds open (until the test ends)."""
    path = str(tmp_path / "Data.fs")
    holder = subprocess.Popen([sys.executable, "-c", LOCKER, path], env=worker_env(),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "open\n"
        yield path
    finally:
        holder.stdin.close()
        holder.wait(30)


def test_open_db_on_a_filestorage_another_process_has_open(locked):
    with pytest.raises(zasync.DatabaseUnavailableError) as raised:
        zasync.open_db(locked)
    message = str(raised.value)
    assert message.startswith(f"database {locked!r} is open in another process")
    assert f"runzeo -a 127.0.0.1:8100 -f {locked}" in message
    assert "zeo://" in message


@pytest.mark.parametrize("command", [("worker",), ("status",)])
def test_the_cli_says_another_process_has_the_filestorage_open(locked, command):
    result, took = run_zasync(*command, "--db", locked)
    error = error_line(result)
    assert "is open in another process" in error
    assert "runzeo" in error
    assert "expected a FileStorage path" not in error


# -- a misspelt scheme ---------------------------------------------------------------

def test_an_unknown_scheme_is_named_with_the_known_ones():
    with pytest.raises(zasync.ConfigurationError) as raised:
        zasync.open_db("zoe://127.0.0.1:8100")
    message = str(raised.value)
    assert message.startswith(
        "database URI 'zoe://127.0.0.1:8100': unknown scheme 'zoe'; known: ")
    known = message.partition("known: ")[2].split(", ")
    assert {"file", "memory", "zeo", "zconfig"} <= set(known)
    assert "No resolver" not in message


def test_the_cli_names_an_unknown_scheme():
    result, took = run_zasync("status", "--db", "zoe://127.0.0.1:8100")
    error = error_line(result)
    assert "unknown scheme 'zoe'" in error
    assert "zeo" in error.partition("known: ")[2]


# -- URLs that are not UTF-8 -----------------------------------------------------------

@pytest.mark.parametrize("url, api", [
    ("/jobs/%ff%fe", False),
    ("/api/jobs/%ff%fe", True),
    ("/jobs?callable=%ff%fe", False),
    ("/api/jobs?callable=%ff%fe", True),
])
def test_a_url_that_is_not_utf8_is_a_bad_request(db, caplog, url, api):
    import webtest
    from zasync.web import make_app
    app = webtest.TestApp(make_app(db, token="t0ken"))
    response = app.get(url, status=400)
    part = "query string" if "?" in url else "path"
    message = f"the URL's {part} is not UTF-8 text once its %-escapes are decoded"
    if api:
        assert response.json == {"result": "fail", "message": message}
    else:
        assert response.text == f"400 Bad Request: {message}\n"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert [record for record in caplog.records if record.levelname == "ERROR"] == []
    # the same pages with UTF-8 text answer as usual
    app.get(url.replace("%ff%fe", "%C3%A9"), status=404 if "?" not in url else 200)


# -- waiting for a job put in a transaction that has ended ---------------------------

def test_wait_for_takes_a_job_id_or_a_job_whose_connection_closed(db):
    from ZODB.POSException import ConnectionStateError
    from zasync.cli import examples
    with db.transaction() as conn:
        job = zasync.get_queue(conn).put(examples.add, 1, 2)
        job_id = job.id
    # The connection that put it is closed: its objects may lose their
    # state at any time (here at once), and then cannot be read.
    job._p_invalidate()
    with pytest.raises(ConnectionStateError):
        job.id
    with zasync.Dispatcher(db, threads=1, poll_interval=0.05):
        done = zasync.wait_for(job_id, db=db, timeout=30)
        assert (done.id, done.result) == (job_id, 3)
        assert zasync.wait_for(job, timeout=30).result == 3


def test_wait_for_a_job_id_needs_its_database_and_a_known_id(db):
    with pytest.raises(zasync.ConfigurationError, match=r"give the database"):
        zasync.wait_for("0" * 20)
    with pytest.raises(zasync.ConfigurationError,
                       match=r"job id '00000000000000000000': no such job"):
        zasync.wait_for("0" * 20, db=db)
    with pytest.raises(zasync.ConfigurationError, match=r"db='var/Data.fs': expected a ZODB.DB"):
        zasync.wait_for("0" * 20, db="var/Data.fs")
