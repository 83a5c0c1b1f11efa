"""The ZEO server stopped for several seconds under two ``zasync worker``
processes running a stream of jobs, then started again on the same port
and file: the workers reconnect and carry on, every job completes, and no
job runs more often than its retry policy allows.

Runs are counted from the files the jobs append to (one per process and
thread), so that even the runs whose transactions were lost with the
connection are counted.
"""

import time

import pytest

import zasync
from zasync.interfaces import COMPLETED
from zasync.job.job import DEFAULT_RETRY_POLICY

import recovery_jobs as jobs
from recovery_jobs import Client, Counter, Workers, gather, wait_until, work

PING = 0.5
#: Longer than the outage: the workers' heartbeats stop while the server is
#: down, and they must not count each other dead for that.
DEATH = 20.0
#: How long the server stays down.
OUTAGE = 4.0
#: The most attempts the default policy gives a job: `attempts` for errors
#: it retries, `interrupted_attempts` for runs lost with their worker.
MOST_ATTEMPTS = max(DEFAULT_RETRY_POLICY.attempts, DEFAULT_RETRY_POLICY.interrupted_attempts)


@pytest.fixture
def folder(tmp_path):
    path = tmp_path / "jobs"
    path.mkdir()
    return str(path)


def finished(folder):
    return sum(1 for event, *_ in jobs.runs(folder) if event == "finished")


@pytest.mark.slow(reason="the ZEO server stays down for OUTAGE (4 s) while two worker "
                         "processes run a stream of 60 jobs of 0.2 s, then they reconnect")
@pytest.mark.parametrize("query", [
    "",                   # ZEO's default: a call waits up to 30 s for the server
    "?wait_timeout=1",    # a call raises ClientDisconnected after 1 s
], ids=["calls-wait", "calls-raise"])
def test_workers_carry_on_after_the_zeo_server_restarts(
        zeo_server, zeo_db, folder, tmp_path, query):
    client = Client(zeo_db)
    workers = Workers(tmp_path, zeo_server.uri + query)
    try:
        started = [workers.start(name, ping=PING, death=DEATH) for name in ("a", "b")]
        wait_until(lambda: all(client.registered(worker) for worker in started),
                   jobs.TIMEOUT, "both workers to register")
        # A stream of short jobs: half commit a change of their own (a
        # counter), half only return a value (their results are committed
        # by the worker's dispatcher, several at a time).
        writing = [(work, (folder, f"w{number}", 0.2, Counter())) for number in range(30)]
        pure = [(work, (folder, f"p{number}", 0.2)) for number in range(30)]
        stream = []
        for index in range(0, 30, 5):
            stream += client.put_many(writing[index:index + 5] + pure[index:index + 5])
        wait_until(lambda: finished(folder) >= 8, jobs.TIMEOUT, "the first jobs to finish")

        zeo_server.stop()
        time.sleep(OUTAGE)      # the outage itself, not a synchronisation
        zeo_server.start()
        assert all(worker.alive() for worker in started)
        for worker in started:
            worker.wait_log("Reconnected to storage")
            assert "Disconnected from storage" in worker.log
        if query:
            # the workers' calls failed while the server was down
            assert "ClientDisconnected" in "".join(worker.log for worker in started)

        wait_until(zeo_db.storage.is_connected, jobs.TIMEOUT, "the test to reconnect")
        # Four jobs that complete only if four run at once: both workers,
        # each with its two threads, carry on.
        together = client.put_many(
            [(gather, (folder, f"g{number}", 4)) for number in range(4)], priority=1)
        stream += client.put_many(
            [(work, (folder, f"after{number}", 0.05, Counter())) for number in range(10)])

        done = [zasync.wait_for(job, timeout=jobs.TIMEOUT) for job in stream + together]
        assert all(job.status == COMPLETED for job in done)
        assert [job.id for job in done if not job.succeeded] == [], [
            job.failure for job in done if not job.succeeded]
        assert {job.dispatcher_id for job in client.jobs(together)} == {
            worker.id for worker in started}

        runs = {}
        for event, name, attempt, pid in jobs.runs(folder):
            if event == "started":
                runs.setdefault(name, []).append(int(attempt))
        for job in client.jobs(stream + together):
            name = job.args[1]
            attempts = runs[name]
            # each attempt ran at most once, and no more attempts than the
            # policy gives (an attempt lost with the connection may have
            # started without being recorded as a run)
            assert len(attempts) == len(set(attempts)), (name, attempts)
            assert len(attempts) <= job.attempt_count <= MOST_ATTEMPTS, (name, attempts)
            assert max(attempts) == job.attempt_count, (name, attempts)
            if len(job.args) > 3:
                assert job.args[3].value == 1, name     # its work committed once

        for worker in started:
            assert worker.terminate()[0] == 0
    finally:
        workers.end_all()
        client.close()
