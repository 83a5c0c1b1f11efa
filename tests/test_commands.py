"""The operators' commands (`zasync status`, `jobs`, `job`, `put`, `cancel`,
`retry`, `dismiss`, `remove`, `wait`), run as real commands
(``python -m zasync``) against a real ZEO server, with a `zasync worker`
process or an in-process dispatcher where jobs must run.

The test process holds the database open through ZEO too: a FileStorage
file can be opened by one process only.
"""

import datetime
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import transaction

import zasync
from zasync.cli import examples
from zasync.interfaces import ACTIVE
from zasync.testing import installed_db

TIMEOUT = 60
COMMANDS = ("status", "jobs", "job", "put", "cancel", "retry", "dismiss", "remove",
            "wait")
#: Text that rich would take for markup, and HTML: shown as written.
MARKUP = "[bold red]alarm[/] <b>bold</b>"


def _env(**extra):
    env = dict(os.environ, PYTHONUNBUFFERED="1", **extra)
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "COLUMNS", "NO_COLOR"):
        if name not in extra:
            env.pop(name, None)
    return env


def start(*args, **env):
    """Start ``python -m zasync ARGS``; return the process."""
    return subprocess.Popen([sys.executable, "-m", "zasync", *args], env=_env(**env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process):
    """Wait for a process of `start`; return it with .stdout and .stderr read."""
    try:
        stdout, stderr = process.communicate(timeout=TIMEOUT)
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def zasync_cmd(*args, **env):
    """Run ``python -m zasync ARGS`` to its end."""
    return finish(start(*args, **env))


def zasync_all(*commands):
    """Run several commands at once (each a tuple of arguments); return
    their results in order."""
    return [finish(process) for process in [start(*args) for args in commands]]


def as_json(result):
    assert result.returncode == 0, (result.stdout, result.stderr)
    return json.loads(result.stdout)


def assert_error(result, status, *expected):
    """Exit `status`, one Error line holding every `expected` text, no
    traceback (a failed job's own traceback is not printed on stderr)."""
    assert result.returncode == status, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    for text in expected:
        assert text in errors[0], errors[0]
    return errors[0]


def wait_until(predicate, what, timeout=TIMEOUT):
    deadline = time.monotonic() + timeout
    delay = 0.01
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def put(db, callable, *args, queue="", **kwargs):
    """Put a job from this process; return its id."""
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    try:
        with tm:
            job = zasync.get_queue(conn, queue).put(zasync.Job(callable, *args, **kwargs))
        return job.id
    finally:
        conn.close()


def status_of(db, job_id):
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    try:
        return zasync.get_queues(conn).find_job(job_id).status
    finally:
        tm.abort()
        conn.close()


class Worker:
    """A `zasync worker` process on the default and 'mail' queues, ended by
    its pid."""

    def __init__(self, uri, tmp_path):
        self.log_path = tmp_path / "worker.log"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "zasync", "worker", "--db", uri,
                 "--uuid-file", str(tmp_path / "worker.uuid"), "--queue", "",
                 "--queue", "mail", "--threads", "2", "--poll-interval", "0.1"],
                stdout=log, stderr=subprocess.STDOUT, env=_env())

    def stop(self):
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait()


@pytest.fixture
def uri(zeo_db, zeo_server):
    """The URI of a ZEO server with zasync installed (queues '' and 'mail')."""
    return zeo_server.uri


# -- help and bad input, no database needed ----------------------------------------

def test_help_of_each_command_explains_itself_with_examples():
    results = zasync_all(*[(name, "--help") for name in COMMANDS], ("--help",))
    for name, result in zip(COMMANDS, results):
        assert result.returncode == 0, result.stderr
        assert "Examples:" in result.stdout, name
        assert f"zasync {name} " in result.stdout, name
        assert "--db URI" in result.stdout, name
        assert "--json" in result.stdout, name
    for name in COMMANDS:
        assert name in results[-1].stdout
    put_help = results[COMMANDS.index("put")].stdout
    for text in ("JSON literal", "--in", "--at", "--queue", "--priority", "never called"):
        assert text in put_help, text
    assert "exit" in results[COMMANDS.index("wait")].stdout.lower()


def test_bad_input_is_refused_before_the_database_is_opened(tmp_path):
    missing = str(tmp_path / "missing" / "Data.fs")
    db = ("--db", missing)
    cases = [
        (("status",), "Missing option '--db'"),
        (("job", "not-an-id", *db), "'not-an-id'", "20 hex digits"),
        (("wait", "1A209CDF60F009C5B571", *db), "20 hex digits"),
        (("cancel", "1a209cdf60f009c5b57", *db), "20 hex digits"),
        (("jobs", "--status", "done", *db), "'done' is not one of", "pending",
         "success"),
        (("put", "zasync.cli.examples.add", *db), "'zasync.cli.examples.add'",
         "MODULE:FUNCTION"),
        (("put", "no_such_module_xyz:run", *db), "cannot import",
         "No module named 'no_such_module_xyz'"),
        (("put", "zasync.cli.examples:no_such_function", *db), "cannot import",
         "no_such_function"),
        (("put", "zasync.cli.examples:add", "1", "--in", "soon", *db), "'--in'",
         "'soon'", "10m"),
        (("put", "zasync.cli.examples:add", "--at", "2030-01-01T09:00:00", *db), "'--at'",
         "timezone"),
        (("put", "zasync.cli.examples:add", "--in", "1h", "--at", "2030-01-01T09:00:00Z",
          *db), "--in and --at"),
        (("status", *db), "'--db'", "no database", missing),
        (("wait", "1a209cdf60f009c5b571", "--timeout", "-1", *db), "--timeout"),
    ]
    results = zasync_all(*[case[0] for case in cases])
    for case, result in zip(cases, results):
        assert_error(result, 2, *case[1:])
    assert not os.path.exists(missing)    # never created


def test_put_refuses_a_callable_a_worker_cannot_find_again(tmp_path, uri):
    (tmp_path / "unstorable_jobs.py").write_text(
        "double = lambda x: 2 * x\n"
        "def _make():\n"
        "    def inner():\n"
        "        pass\n"
        "    return inner\n"
        "inner = _make()\n"
        "number = 42\n")
    path = {"PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    results = [finish(start("put", spec, "1", "--db", uri, **path)) for spec in (
        "unstorable_jobs:double", "unstorable_jobs:inner", "unstorable_jobs:number")]
    assert_error(results[0], 2, "'MODULE:FUNCTION'", "unstorable_jobs:double", "lambda",
                 "module-level function")
    assert_error(results[1], 2, "unstorable_jobs:inner", "defined inside a function")
    assert_error(results[2], 2, "unstorable_jobs:number", "42 is not callable")
    assert as_json(zasync_cmd("jobs", "--db", uri, "--json"))["total"] == 0


def test_unknown_queue_and_not_installed_database(zeo_server, tmp_path):
    result = zasync_cmd("status", "--db", zeo_server.uri)
    assert_error(result, 2, "'--db'", "not installed", zeo_server.uri)
    db = installed_db(zeo_server.uri, queues=("", "mail"))
    try:
        bad_queue = zasync_all(
            ("jobs", "--db", zeo_server.uri, "--queue", "mial"),
            ("put", "zasync.cli.examples:add", "1", "2", "--queue", "mial", "--db",
             zeo_server.uri))
        for result in bad_queue:
            assert_error(result, 2, "'--queue'", "'mial'", "'mail'")
    finally:
        db.close()


def test_a_filestorage_open_in_another_process_is_refused(db, tmp_path):
    # The `db` fixture holds tmp_path/Data.fs open, as a running worker would.
    result = zasync_cmd("status", "--db", str(tmp_path / "Data.fs"))
    assert_error(result, 2, "'--db'", "another process", "ZEO")


# -- with a worker process -------------------------------------------------------------

@pytest.mark.slow(reason="a worker process and 14 `zasync` commands, most one after "
                         "another, each a new interpreter that imports ZODB and ZEO")
def test_put_wait_status_jobs_and_job_with_a_worker(uri, tmp_path):
    worker = Worker(uri, tmp_path)
    try:
        added = zasync_cmd("put", "zasync.cli.examples:add", "2", "3", "--db", uri)
        assert added.returncode == 0, added.stderr
        add_id = added.stdout.strip()
        assert len(add_id) == 20 and "zasync.cli.examples.add(2, 3)" in added.stderr
        failing = zasync_cmd("put", "zasync.cli.examples:fail", MARKUP, "--queue", "mail",
                             "--db", uri, "--json")
        fail_id = as_json(failing)["id"]

        done, failed = zasync_all(("wait", add_id, "--db", uri),
                                  ("wait", fail_id, "--db", uri))
        assert done.returncode == 0, (done.stdout, done.stderr)
        assert f"job {add_id} succeeded" in done.stdout and ": 5" in done.stdout
        assert "100%" in done.stderr             # the bar, on stderr
        assert failed.returncode == 1, (failed.stdout, failed.stderr)
        assert f"job {fail_id} failed: ValueError: {MARKUP}" in failed.stdout
        assert "Traceback (most recent call last)" in failed.stdout
        assert 'raise ValueError(message)' in failed.stdout

        table, listing, detail, status_json = zasync_all(
            ("status", "--db", uri), ("jobs", "--db", uri),
            ("job", fail_id, "--db", uri), ("status", "--db", uri, "--json"))
        assert table.returncode == 0, table.stderr
        for text in ("Queues", "(default)", "mail", "Workers", "alive",
                     str(worker.process.pid), "0/2"):
            assert text in table.stdout, text
        assert listing.returncode == 0, listing.stderr
        assert listing.stdout.index(fail_id) < listing.stdout.index(add_id)  # newest first
        for text in ("success", "failure", "2 of 2 job(s)"):
            assert text in listing.stdout, text
        assert detail.returncode == 0, detail.stderr
        for text in (f"zasync.cli.examples.fail({MARKUP!r})", "completed (failure)",
                     "Status history", "assigned", f"ValueError: {MARKUP}",
                     "Traceback (most recent call last)", "raise ValueError(message)"):
            assert text in detail.stdout, text
        counts = {q["name"]: q for q in as_json(status_json)["queues"]}
        assert counts[""] == {"name": "", "pending": 0, "active": 0, "failed": 0,
                              "completed": 1}
        assert counts["mail"]["failed"] == 1 and counts["mail"]["completed"] == 1
        [record] = as_json(status_json)["workers"]
        assert record["pid"] == worker.process.pid and record["health"] == "alive"
        assert record["queues"] == ["", "mail"] and record["slots"] == 2

        # Failed, retried (it fails again), dismissed.
        retried = zasync_cmd("retry", fail_id, "--db", uri)
        assert retried.returncode == 0, retried.stderr
        assert "put back in queue mail" in retried.stdout
        assert zasync_cmd("wait", fail_id, "--db", uri).returncode == 1
        again = as_json(zasync_cmd("job", fail_id, "--db", uri, "--json"))
        assert again["attempt_count"] == 2 and len(again["attempts"]) == 1
        assert again["attempts"][0]["message"] == MARKUP
        dismissed = as_json(zasync_cmd("dismiss", fail_id, "--db", uri, "--json"))
        assert dismissed == {"task_id": fail_id, "result": "ok",
                             "message": f"job {fail_id} dismissed"}
        counts = {q["name"]: q for q in as_json(
            zasync_cmd("status", "--db", uri, "--json"))["queues"]}
        assert counts["mail"]["failed"] == 0
    finally:
        worker.stop()
    assert worker.process.returncode == 0, worker.log_path.read_text()


# -- with an in-process dispatcher -------------------------------------------------

def test_jobs_filters_and_json(uri, zeo_db):
    with zasync.Dispatcher(zeo_db, threads=2, poll_interval=0.05,
                           queues=("", "mail")) as dispatcher:
        ok = put(zeo_db, examples.add, 1, 2)
        bad = put(zeo_db, examples.fail, "no", queue="mail")
        for job_id in (ok, bad):
            wait_until(lambda: status_of(zeo_db, job_id) == "completed", "the jobs")
    later = put(zeo_db, examples.send_report, "Q4")    # nobody runs it now
    results = zasync_all(
        ("jobs", "--db", uri, "--json"),
        ("jobs", "--db", uri, "--json", "--status", "failure"),
        ("jobs", "--db", uri, "--json", "--status", "completed", "--limit", "1"),
        ("jobs", "--db", uri, "--json", "--status", "pending"),
        ("jobs", "--db", uri, "--json", "--queue", "mail"),
        ("jobs", "--db", uri, "--json", "--callable", "zasync.cli.examples:add"),
        ("jobs", "--db", uri, "--queue", "", "--limit", "1"),
        ("job", ok, "--db", uri, "--json"),
        ("status", "--db", uri))
    everything = as_json(results[0])
    assert [job["id"] for job in everything["jobs"]] == [later, bad, ok]
    assert everything["total"] == 3
    first = everything["jobs"][0]
    assert (first["status"], first["state"], first["progress"]) == (
        "pending", "pending", 0.0)
    assert [j["id"] for j in as_json(results[1])["jobs"]] == [bad]
    assert as_json(results[1])["jobs"][0]["message"] == "ValueError: no"
    limited = as_json(results[2])
    assert [j["id"] for j in limited["jobs"]] == [bad] and limited["total"] == 2
    assert [j["id"] for j in as_json(results[3])["jobs"]] == [later]
    assert [j["id"] for j in as_json(results[4])["jobs"]] == [bad]
    assert [j["id"] for j in as_json(results[5])["jobs"]] == [ok]
    assert results[6].returncode == 0
    assert later in results[6].stdout and ok not in results[6].stdout
    assert "1 of 2 job(s); --limit 0 shows all 2" in results[6].stdout
    detail = as_json(results[7])
    assert detail["result"] == "3" and detail["state"] == "success"
    assert detail["args"] == ["1", "2"] and detail["duration"] >= 0
    assert [h["status"] for h in detail["status_history"]] == [
        "new", "pending", "assigned", "active", "completed"]
    assert detail["status_history"][-1]["dispatcher_id"] == dispatcher.id
    assert "stopped" in results[8].stdout     # the dispatcher stopped cleanly


def test_put_parses_arguments_and_times_and_never_calls(uri, tmp_path):
    precious = tmp_path / "precious.txt"
    precious.write_text("kept")
    before = datetime.datetime.now(datetime.timezone.utc)
    results = zasync_all(
        ("put", "os:remove", str(precious), "--db", uri),
        ("put", "zasync.cli.examples:noop", "[1, 2]", "--db", uri, "--json",
         "--in", "1h30m", "--priority", "5", "--queue", "mail"),
        ("put", "zasync.cli.examples:add", '"42"', "hello", "--db", uri, "--json",
         "--at", "2030-01-01T09:00:00+01:00"),
        ("put", "os.path:join", '{"a": null}', "true", "--db", uri,
         "--json", "--", "-5"))
    assert results[0].returncode == 0, results[0].stderr
    assert precious.read_text() == "kept"    # put, not called: no worker runs
    first, second, third = [as_json(result) for result in results[1:]]
    assert first["args"] == ["[1, 2]"] and first["priority"] == 5
    assert first["queue"] == "mail" and first["status"] == "pending"
    due = datetime.datetime.fromisoformat(first["begin_after"])
    assert datetime.timedelta(minutes=89) < due - before < datetime.timedelta(minutes=92)
    assert second["args"] == ["'42'", "'hello'"]
    assert second["begin_after"] == "2030-01-01T08:00:00+00:00"
    assert third["args"] == ["{'a': None}", "True", "-5"]


def test_actions_and_their_errors(uri, zeo_db):
    with zasync.Dispatcher(zeo_db, threads=1, poll_interval=0.05):
        done = put(zeo_db, examples.add, 1, 1)
        wait_until(lambda: status_of(zeo_db, done) == "completed", "the job")
    pending = [put(zeo_db, examples.add, i, i) for i in range(3)]
    unknown = "0" * 16 + "abcd"
    results = zasync_all(
        ("remove", pending[0], "--db", uri),
        ("cancel", pending[1], "--db", uri, "--json"),
        ("dismiss", pending[2], "--db", uri),
        ("retry", done, "--db", uri),
        ("remove", done, "--db", uri, "--json"),
        ("dismiss", done, "--db", uri),
        ("job", unknown, "--db", uri),
        ("cancel", unknown, "--db", uri),
        ("retry", unknown, "--db", uri, "--json"),
        ("wait", unknown, "--db", uri))
    assert results[0].returncode == 0, results[0].stderr
    assert results[0].stdout.strip() == f"job {pending[0]} removed from queue (default)"
    assert as_json(results[1]) == {
        "task_id": pending[1], "result": "ok",
        "message": f"job {pending[1]} cancelled before it started"}
    assert_error(results[2], 1, pending[2], "only a failed job can be dismissed")
    assert_error(results[3], 1, done, "only a failed job of this queue can be retried")
    assert results[4].returncode == 1
    reply = json.loads(results[4].stdout)
    assert reply["result"] == "fail" and reply["task_id"] == done
    assert "only a pending job can be removed" in reply["message"]
    assert_error(results[5], 1, "only a failed job can be dismissed")
    for result in results[6:8]:
        assert_error(result, 1, f"no job {unknown}")
    assert results[8].returncode == 1
    assert json.loads(results[8].stdout)["result"] == "fail"
    assert_error(results[9], 2, f"no job {unknown}")

    after = zasync_all(
        ("job", pending[0], "--db", uri),          # removed: forgotten
        ("job", pending[1], "--db", uri, "--json"),
        ("cancel", pending[1], "--db", uri),
        ("jobs", "--db", uri, "--json", "--status", "failure"))
    assert_error(after[0], 1, f"no job {pending[0]}")
    cancelled = as_json(after[1])
    assert cancelled["state"] == "failure"
    assert cancelled["failure"]["type"] == "zasync.interfaces.Cancelled"
    assert_error(after[2], 1, "has already completed (failure)", "nothing to cancel")
    # A job cancelled while pending is listed before any worker files it.
    assert [j["id"] for j in as_json(after[3])["jobs"]] == [pending[1]]


def test_wait_shows_progress_times_out_and_cancel_stops_a_running_job(uri, zeo_db):
    with zasync.Dispatcher(zeo_db, threads=2, poll_interval=0.05):
        quick = put(zeo_db, examples.send_report, "Q1", parts=4, pause=0.05)
        slow = put(zeo_db, examples.send_report, "Q2", parts=600, pause=0.05)
        wait_until(lambda: status_of(zeo_db, slow) == ACTIVE, "the slow job to start")
        finished, timed_out = zasync_all(("wait", quick, "--db", uri),
                                         ("wait", slow, "--db", uri, "--timeout", "0.5"))
        assert finished.returncode == 0, (finished.stdout, finished.stderr)
        assert "'report Q1 sent'" in finished.stdout
        assert "part 4 of 4" in finished.stderr and "100%" in finished.stderr
        assert_error(timed_out, 2, f"job {slow} is still active after 0.5 s")
        assert "part " in timed_out.stderr          # the bar showed its message

        active = zasync_cmd("jobs", "--db", uri, "--status", "active")
        assert slow in active.stdout and "active " in active.stdout
        cancelled = zasync_cmd("cancel", slow, "--db", uri)
        assert cancelled.returncode == 0, cancelled.stderr
        assert "cancel requested" in cancelled.stdout
        ended = zasync_cmd("wait", slow, "--db", uri, "--json")
        assert ended.returncode == 1, ended.stderr
        reply = json.loads(ended.stdout)
        assert reply["state"] == "failure"
        assert reply["failure"]["type"] == "zasync.interfaces.Cancelled"
        assert "Traceback" in reply["failure"]["traceback"]


def test_wait_on_a_job_cancelled_midway_keeps_its_bar_and_says_so_in_one_line(
        uri, zeo_db):
    import scenario_jobs
    name = scenario_jobs.unique("cancelled-midway")
    meeting = scenario_jobs.rendezvous(name)
    with zasync.Dispatcher(zeo_db, threads=1, poll_interval=0.05):
        job_id = put(zeo_db, scenario_jobs.progress_then_pause, name,
                     (0.25, "part 5 of 20"), (0.3, "part 6 of 20"), (0.35, "part 7 of 20"))
        assert meeting.wait_arrived(label="start", timeout=TIMEOUT)
        meeting.release("start")
        assert meeting.wait_arrived(label=0, timeout=TIMEOUT)   # after part 5
        waiting = start("wait", job_id, "--db", uri)
        tm = transaction.TransactionManager()
        conn = zeo_db.open(transaction_manager=tm)
        try:
            with tm:
                zasync.get_queues(conn).find_job(job_id).cancel()
        finally:
            conn.close()
        meeting.release(0)      # its report of part 6 raises Cancelled
        ended = finish(waiting)
    assert ended.returncode == 1, (ended.stdout, ended.stderr)
    assert ended.stdout.splitlines() == [
        f"job {job_id} cancelled at 30 %: part 6 of 20"]
    assert "Traceback" not in ended.stdout + ended.stderr
    assert "30%" in ended.stderr and "100%" not in ended.stderr


def test_put_passes_name_equals_value_as_keyword_arguments(uri, zeo_db):
    reply = zasync_cmd("put", "zasync.cli.examples:send_report", "Q4", "parts=3",
                       'pause=0', "--db", uri, "--json")
    job_id = as_json(reply)["id"]
    looks_like_one = zasync_cmd("put", "unit_jobs:collect", '"a=b"', "1x=2",
                                'note="[1]"', "mode=fast", "--db", uri,
                                PYTHONPATH=os.path.dirname(__file__))
    assert looks_like_one.returncode == 0, looks_like_one.stderr
    assert "unit_jobs.collect('a=b', '1x=2', note='[1]', mode='fast')" in \
        looks_like_one.stderr
    twice = zasync_cmd("put", "zasync.cli.examples:add", "a=1", "a=2", "--db", uri)
    assert_error(twice, 2, "'a=2'", "a= is given twice")
    with zasync.Dispatcher(zeo_db, threads=1, poll_interval=0.05):
        tm = transaction.TransactionManager()
        conn = zeo_db.open(transaction_manager=tm)
        try:
            job = zasync.get_queues(conn).find_job(job_id)
            assert job.args == ("Q4",) and job.kwargs == {"parts": 3, "pause": 0}
            done = zasync.wait_for(job, timeout=TIMEOUT)
            assert done.result == "report Q4 sent"
            assert done.progress_message == "part 3 of 3"
        finally:
            tm.abort()
            conn.close()


def test_put_help_says_how_to_pass_keywords_and_strings_that_look_like_json():
    result = zasync_cmd("put", "--help")
    assert result.returncode == 0, result.stderr
    assert "NAME=VALUE" in result.stdout
    assert """'"a=b"'""" in result.stdout and """'"42"'""" in result.stdout


# -- the database from the environment -----------------------------------------

def test_zasync_db_names_the_database_and_the_command_line_wins(uri, tmp_path):
    """ZASYNC_DB spares every command its --db; status says what it opened;
    a --db given on the command line wins over it."""
    with_env = zasync_cmd("status", ZASYNC_DB=uri)
    assert with_env.returncode == 0, with_env.stderr
    assert f"Database: {uri}" in with_env.stdout
    as_json = zasync_cmd("status", "--json", ZASYNC_DB=uri)
    assert json.loads(as_json.stdout)["database"] == uri

    # A wrong ZASYNC_DB is overridden by --db ...
    wrong = str(tmp_path / "nowhere" / "Data.fs")
    overridden = zasync_cmd("status", "--db", uri, ZASYNC_DB=wrong)
    assert overridden.returncode == 0, overridden.stderr
    assert f"Database: {uri}" in overridden.stdout
    # ... and named when it is the one used.
    refused = zasync_cmd("status", ZASYNC_DB=wrong)
    assert refused.returncode == 2
    assert wrong in refused.stderr

    # Neither: the message says both ways.
    missing = zasync_cmd("jobs")
    assert missing.returncode == 2
    assert "--db" in missing.stderr and "ZASYNC_DB" in missing.stderr
