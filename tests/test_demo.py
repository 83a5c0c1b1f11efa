"""`zasync demo`, run as a real command, and the views it shows of jobs."""

import datetime
import json
import os
import queue as queue_module
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest
import transaction

import zasync
from zasync.job import clock
from zasync.cli import demo, examples
from zasync.interfaces import ASSIGNED, ACTIVE, COMPLETED, PENDING
from zasync.testing import free_port

COMMAND_TIMEOUT = 90
EXAMPLE_CALLABLES = ("send_report", "fail", "flaky", "parallel group", "add",
                     "Counter.increment", "record_outcome (callback)")
#: The jobs of one round: 7, and the 3 parts its group puts.
ROUND_JOBS = 10
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


def _env(**extra):
    env = dict(os.environ, PYTHONUNBUFFERED="1", TERM="xterm-256color")
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "COLUMNS"):
        env.pop(name, None)
    env.update(extra)
    return env


def run_demo(*args, **env):
    return subprocess.run([sys.executable, "-m", "zasync", "demo", *args],
                          env=_env(**env), capture_output=True, text=True,
                          timeout=COMMAND_TIMEOUT)


def _read_db(directory):
    """The demo's jobs (as plain tuples) and counter, from its database."""
    db = zasync.open_db(os.path.join(directory, "Data.fs"))
    try:
        tm = transaction.TransactionManager()
        conn = db.open(transaction_manager=tm)
        try:
            jobs = [(job.id, job.callable_name, job.status, job.succeeded)
                    for job in zasync.get_queue(conn).jobs()]
            counter = conn.root()[demo.COUNTER_KEY].value
            return jobs, counter
        finally:
            tm.abort()
            conn.close()
    finally:
        db.close()


def _assert_names_every_job_and_the_failure(output):
    for name in EXAMPLE_CALLABLES:
        assert name in output, name
    assert "ValueError: a deliberate failure" in output
    assert "Traceback (most recent call last)" in output
    assert 'examples.py", line' in output       # the traceback's own frames
    assert "Goodbye" in output


# -- the command ------------------------------------------------------------------

def test_demo_once_runs_the_examples_twice_in_one_dir(tmp_path):
    directory = str(tmp_path / "var")
    first = run_demo("--once", "--dir", directory, "--threads", "2")
    assert first.returncode == 0, first.stdout + first.stderr
    output = first.stdout
    assert "\x1b[" not in output                # not a terminal: plain text
    assert "Traceback" not in first.stderr
    _assert_names_every_job_and_the_failure(output)
    assert "succeeded" in output and "failed" in output
    assert "-> 42" in output                    # the delayed job ran
    assert "-> 'succeeded: 3'" in output        # the callback got its result
    assert "-> 21" in output                    # the group summed its parts
    assert "-> 'done at last'" in output        # retried until it succeeded
    jobs, counter = _read_db(directory)
    assert counter == 5
    assert len(jobs) == ROUND_JOBS
    assert all(status == COMPLETED for _, _, status, _ in jobs)
    assert "queue (default): 0 pending, 0 active, 1 failed, 10 completed" in output

    second = run_demo("--once", "--dir", directory)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "-> 10" in second.stdout            # the same counter, once more
    jobs, counter = _read_db(directory)
    assert counter == 10
    assert len(jobs) == 2 * ROUND_JOBS          # the first run's are history
    assert sorted(ok for _, _, _, ok in jobs) == [False] * 2 + [True] * 18


def test_demo_once_in_a_terminal_draws_live_progress(tmp_path):
    result = run_demo("--once", "--dir", str(tmp_path / "var"),
                      TTY_COMPATIBLE="1", COLUMNS="140")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "\x1b[" in result.stdout             # rich drew a live display
    output = ANSI.sub("", result.stdout)
    _assert_names_every_job_and_the_failure(output)
    assert "━" in output                         # progress bars
    assert re.search(r"part \d+ of 20", output)   # progress messages


class LineReader:
    """Reads a subprocess's output lines in a thread, to wait for one with a
    timeout."""

    def __init__(self, stream):
        self.lines = []
        self._queue = queue_module.Queue()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream):
        for line in stream:
            self._queue.put(line)
        self._queue.put(None)

    def wait_for(self, pattern, timeout):
        """Return the first line matching `pattern`; fail after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue_module.Empty:
                pytest.fail(f"no line matched {pattern!r} in {timeout} s: "
                            + "".join(self.lines))
            if line is None:
                pytest.fail(f"output ended before {pattern!r}: " + "".join(self.lines))
            self.lines.append(line)
            if re.search(pattern, line):
                return line

    def rest(self, timeout):
        self._thread.join(timeout)
        while not self._queue.empty():
            line = self._queue.get()
            if line is not None:
                self.lines.append(line)
        return "".join(self.lines)


def test_demo_serves_the_web_view_and_stops_cleanly_on_sigint(tmp_path):
    directory = str(tmp_path / "var")
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "zasync", "demo", "--dir", directory,
         "--bind", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env())
    try:
        reader = LineReader(process.stdout)
        # The web view of the demo's database, with a token made for the run
        # that its actions accept (and nothing else).
        line = reader.wait_for(rf"serving http://127\.0\.0\.1:{port}/ .*token (\S+)\)",
                               COMMAND_TIMEOUT)
        token = re.search(r"token (\S+)\)", line).group(1)
        base = f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(base + "/api/queues", timeout=10) as reply:
            queues = json.load(reply)["queues"]
        assert [queue["name"] for queue in queues] == [""]
        with urllib.request.urlopen(base + "/", timeout=10) as reply:
            assert "Overview" in reply.read().decode()
        job_id = next(job["id"] for job in _api_jobs(base)
                      if job["callable"].endswith("fail"))
        refused = urllib.request.Request(f"{base}/api/jobs/{job_id}/dismiss", method="POST",
                                         headers={"Authorization": "Bearer wrong"})
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(refused, timeout=10)
        assert error.value.code in (401, 403)
        # The failing job fails at once, the slow one runs for seconds:
        # interrupt once the first failed and while the second runs.
        reader.wait_for(r"ValueError: a deliberate failure", COMMAND_TIMEOUT)
        allowed = urllib.request.Request(f"{base}/api/jobs/{job_id}/dismiss", method="POST",
                                         headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(allowed, timeout=10) as reply:
            answer = json.load(reply)
        assert (answer["task_id"], answer["result"]) == (job_id, "ok"), answer
        if not any(re.search(r"send_report\s+active", line) for line in reader.lines):
            reader.wait_for(r"send_report\s+active", COMMAND_TIMEOUT)
        began = time.monotonic()
        os.kill(process.pid, signal.SIGINT)
        assert process.wait(timeout=20) == 0, reader.rest(5)
        assert time.monotonic() - began < 15
        output = reader.rest(5)
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
        process.stdout.close()
    assert "Traceback (most recent call last)" in output   # the failing job's
    assert "Goodbye" in output
    assert "Aborted" not in output
    with pytest.raises(OSError):          # the web view stopped with the demo
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    assert token
    # The database opens again; the run left no job half-way.
    jobs, counter = _read_db(directory)
    assert len(jobs) >= 7                       # a round, perhaps more
    assert not [job for job in jobs if job[2] in (ASSIGNED, ACTIVE)]
    assert all(status in (COMPLETED, PENDING) for _, _, status, _ in jobs)


def _api_jobs(base):
    """The jobs of the web view's JSON API, once the demo has put them."""
    deadline = time.monotonic() + COMMAND_TIMEOUT
    while True:
        with urllib.request.urlopen(base + "/api/jobs", timeout=10) as reply:
            jobs = json.load(reply)["jobs"]
        if any(job["callable"].endswith("fail") for job in jobs):
            return jobs
        if time.monotonic() > deadline:
            pytest.fail(f"the demo's jobs did not appear in {base}/api/jobs")
        time.sleep(0.1)


def test_demo_bind_options_are_checked_before_anything_opens(tmp_path):
    directory = tmp_path / "var"
    result = run_demo("--dir", str(directory), "--bind", "nowhere")
    assert result.returncode == 2 and "'--bind'" in result.stderr, result.stderr
    result = run_demo("--dir", str(directory), "--bind", "127.0.0.1:9", "--no-web")
    assert result.returncode == 2 and "--no-web" in result.stderr, result.stderr
    assert not directory.exists()


def test_demo_goes_on_without_the_web_view_when_its_port_is_taken(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_demo("--dir", str(tmp_path / "var"), "--once",
                          "--bind", f"127.0.0.1:{port}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"web view not started: cannot listen on 127.0.0.1:{port}" in result.stdout
    assert "Goodbye" in result.stdout


# -- what the rows show ----------------------------------------------------------

def test_view_of_a_succeeded_job_and_its_callback():
    job = zasync.Job(examples.add, 1, 2)
    job.add_callback(examples.record_outcome)
    now = clock.now()
    assert demo.view_of(job.callbacks[0], now, is_callback=True).state == "waiting"
    job()
    view = demo.view_of(job, now)
    assert (view.callable, view.state, view.detail, view.progress) == (
        "add", "succeeded", "-> 3", 1.0)
    assert view.done and view.traceback is None
    callback = demo.view_of(job.callbacks[0], now, is_callback=True)
    assert callback.callable == "record_outcome (callback)"
    assert callback.detail == "-> 'succeeded: 3'"


def test_view_of_a_failed_job_keeps_its_traceback():
    job = zasync.Job(examples.fail, "no luck")
    job()
    view = demo.view_of(job, clock.now())
    assert view.state == "failed"
    assert view.detail == "ValueError: no luck"
    assert "raise ValueError(message)" in view.traceback


def test_view_of_a_delayed_job_says_when_it_starts():
    job = zasync.Job(examples.add, 40, 2)
    job.status = PENDING
    now = clock.now()
    job.begin_after = now + datetime.timedelta(seconds=4)
    view = demo.view_of(job, now)
    assert (view.state, view.detail) == ("waiting", "starts in 4 s")
    assert not view.done


# -- the demo keeps going ---------------------------------------------------------

COUNTS = re.compile(r"queue \(default\): (\d+) pending, (\d+) active, (\d+) failed, "
                    r"(\d+) completed")


def _running_reports(base):
    return {job["id"]: job["progress"] for job in _api_jobs(base)
            if job["callable"].endswith("send_report") and job["status"] == "active"}


def _poll(look, what, timeout=COMMAND_TIMEOUT):
    """What `look()` returns once it is true; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        found = look()
        if found:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


@pytest.mark.slow(reason="runs `zasync demo` as a newcomer watches it: a slow report's progress "
                         "moving in the web view, a retry, a group, until the second round is put")
def test_demo_keeps_putting_jobs_that_the_web_view_shows_running(tmp_path):
    directory = str(tmp_path / "var")
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "zasync", "demo", "--dir", directory,
         "--bind", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env())
    try:
        reader = LineReader(process.stdout)
        reader.wait_for(rf"serving http://127\.0\.0\.1:{port}/", COMMAND_TIMEOUT)
        base = f"http://127.0.0.1:{port}"
        # A slow report runs, and its bar moves while the web view watches.
        first = _poll(lambda: {i: p for i, p in _running_reports(base).items()
                               if 0 < p < 0.75}, "a report running in the web view")
        report_id, before = next(iter(first.items()))
        _poll(lambda: before < _running_reports(base).get(report_id, 0) < 1,
              "the running report's progress to move on")
        # Each kind of example is there: a retry, a group, a failure...
        reader.wait_for(r"attempt 1 failed", COMMAND_TIMEOUT)
        reader.wait_for(r"parallel group", COMMAND_TIMEOUT)
        # ... and once the first round is over, another comes.
        reader.wait_for(r"round 2 put", COMMAND_TIMEOUT)
        reader.wait_for(r"send_report\s+active", COMMAND_TIMEOUT)
        os.kill(process.pid, signal.SIGINT)
        assert process.wait(timeout=30) == 0, reader.rest(5)
        output = reader.rest(5)
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
        process.stdout.close()
    # The terminal's last word counts what the web view counts.
    printed = [tuple(map(int, found)) for found in COUNTS.findall(output)]
    assert printed, output
    db = zasync.open_db(os.path.join(directory, "Data.fs"))
    try:
        with db.transaction() as conn:
            from zasync.cli import report
            counts = report.queue_counts(zasync.get_queues(conn))[0]
    finally:
        db.close()
    assert printed[-1] == (counts["pending"], counts["active"], counts["failed"],
                           counts["completed"])
    assert counts["active"] == 0 and counts["failed"] >= 2
