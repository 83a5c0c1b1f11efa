# ZASYNC_REQUIRE_POSTGRES=1 makes these tests fail, instead of skipping,
# when PostgreSQL on 127.0.0.1:5432 is unreachable.  CI (.ci/run) sets it,
# so that the RelStorage scenarios cannot be skipped there unnoticed.
"""The multi-process scenarios over RelStorage on PostgreSQL, history-free
and history-preserving: jobs put here run on two ``zasync worker``
processes, a worker killed with SIGKILL is recovered, a running job is
cancelled, and concurrent producers never see a ConflictError.

The tests use the PostgreSQL server on 127.0.0.1:5432 (user postgres,
trust authentication) and databases of their own, created for each run of
this module and dropped after it.  Their names (zasync_test_hf_... and
zasync_test_hp_..., with the pid of the test process and a random part)
differ from one run to the next, so that two runs at once, or the
processes of ``pytest -n``, never share one.

ZASYNC_REQUIRE_POSTGRES=1 (set it in CI) makes an unreachable server a
failure; without it the tests are skipped, saying why.
"""

import os
import threading
import time

import pytest
import transaction

import zasync

import recovery_jobs as jobs
from recovery_jobs import (
    Client, Counter, Workers, describe_outcome, fresh_postgres_database, gather, hold,
    started_pid, touch, wait_until, work)

#: storage kind -> (prefix of the database's name, keep_history)
DATABASES = {
    "history-free": ("zasync_test_hf", False),
    "history-preserving": ("zasync_test_hp", True),
}
PING = 0.5
DEATH = 3.0
SLACK = 5.0
STARTUP = 20.0


@pytest.fixture(scope="module", params=sorted(DATABASES))
def pg_uri(request):
    """The URI of a fresh RelStorage database of each kind."""
    prefix, keep_history = DATABASES[request.param]
    database = fresh_postgres_database(prefix)
    try:
        yield database.uri(keep_history)
    finally:
        database.drop()


@pytest.fixture
def queue_name(request):
    """A queue of the test's own: the database is shared by the module."""
    return "q-" + request.node.name


@pytest.fixture
def pg_db(pg_uri, queue_name):
    db = zasync.open_db(pg_uri)
    zasync.install(db, queues=(queue_name,))
    yield db
    db.close()


@pytest.fixture
def client(pg_db):
    opened = Client(pg_db)
    yield opened
    opened.close()


@pytest.fixture
def workers(tmp_path, pg_uri, queue_name):
    """``workers(name, *options)`` starts a worker on the test's queue;
    every one is ended by its pid when the test ends."""
    started = Workers(tmp_path, pg_uri)

    def start(name, *options, **kwargs):
        return started.start(name, "--queue", queue_name, *options, ping=PING,
                             death=DEATH, **kwargs)
    try:
        yield start
    finally:
        started.end_all()


def start_registered(client, start, name, *options, **kwargs):
    worker = start(name, *options, **kwargs)
    wait_until(lambda: client.registered(worker), STARTUP, f"{worker} to register")
    return worker


def test_jobs_put_here_run_on_two_worker_processes(client, workers, folder, queue_name):
    started = [workers(name) for name in ("a", "b")]
    wait_until(lambda: all(client.registered(worker) for worker in started),
               STARTUP, "both workers to register")
    # four jobs that complete only if four run at once: two threads of each
    together = client.put_many([(gather, (folder, f"g{number}", 4)) for number in range(4)],
                               queue=queue_name)
    writing = client.put_many(
        [(work, (folder, f"w{number}", 0.0, Counter())) for number in range(10)],
        queue=queue_name)

    done = [zasync.wait_for(job, timeout=jobs.TIMEOUT) for job in together + writing]
    assert all(job.succeeded for job in done), [job.failure for job in done]
    assert [job.result for job in done] == [f"g{n}" for n in range(4)] + [
        f"w{n}" for n in range(10)]
    seen = client.jobs(together + writing)
    assert {job.dispatcher_id for job in seen[:4]} == {worker.id for worker in started}
    assert [job.args[3].value for job in seen[4:]] == [1] * 10
    assert sorted(name for event, name, *_ in jobs.runs(folder) if event == "started") == sorted(
        [f"g{n}" for n in range(4)] + [f"w{n}" for n in range(10)])
    for worker in started:
        assert worker.terminate()[0] == 0


def test_a_killed_worker_is_recovered_by_the_other(client, workers, folder, queue_name):
    first, second = (workers(name) for name in ("first", "second"))
    wait_until(lambda: client.registered(first) and client.registered(second),
               STARTUP, "both workers to register")
    job = client.put(hold, folder, "job", Counter(), queue=queue_name)
    pid = started_pid(folder, "job")
    victim, survivor = (first, second) if pid == first.pid else (second, first)
    assert pid == victim.pid

    victim.kill()
    killed = time.monotonic()
    touch(folder, "job.release")
    done = zasync.wait_for(job, timeout=jobs.TIMEOUT)

    assert time.monotonic() - killed < DEATH + SLACK
    assert done.succeeded, done.failure
    assert (done.attempt_count, done.args[2].value) == (2, 1)
    assert done.attempts[0].check(zasync.InterruptedJobError)
    assert (done.dispatcher_id, done.result) == (survivor.id, {"attempt": 2, "pid": survivor.pid})
    assert jobs.runs_of(folder, "job") == [(1, victim.pid), (2, survivor.pid)]


def test_a_running_job_is_cancelled(client, workers, folder, queue_name):
    worker = start_registered(client, workers, "worker")
    job = client.put(jobs.wait_for_cancel, folder, "job", Counter(), "progress",
                     queue=queue_name, callbacks={"failure": describe_outcome})
    started_pid(folder, "job")
    for attempt in client.tm.attempts(5):
        with attempt:
            client.conn.get(job._p_oid).cancel()
    done = zasync.wait_for(job, timeout=jobs.TIMEOUT)

    assert done.cancelled and done.failure.check(zasync.Cancelled)
    assert done.args[2].value == 0        # its change was aborted
    [callback] = done.callbacks
    assert callback.result.startswith("failed: zasync.interfaces.Cancelled: ")
    assert done.dispatcher_id == worker.id


def test_concurrent_producers_never_see_a_conflict(pg_db, client, workers, folder, queue_name):
    started = [workers(name) for name in ("a", "b")]
    wait_until(lambda: all(client.registered(worker) for worker in started),
               STARTUP, "both workers to register")
    producers, per_producer = 4, 25
    barrier = threading.Barrier(producers, timeout=jobs.TIMEOUT)
    put = [[] for _ in range(producers)]
    errors = []

    def produce(index):
        # No retry here: any ConflictError would reach the producer.
        tm = transaction.TransactionManager()
        conn = pg_db.open(transaction_manager=tm)
        try:
            barrier.wait()
            for number in range(per_producer):
                tm.begin()
                job = zasync.get_queue(conn, queue_name).put(
                    work, folder, f"p{index}-{number}", 0.0)
                tm.commit()
                put[index].append(job)
        except Exception as error:
            errors.append(error)
        finally:
            tm.abort()
            conn.close()

    threads = [threading.Thread(target=produce, args=(index,)) for index in range(producers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(jobs.TIMEOUT)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == [], "\n".join(str(e) for e in errors)
    everything = [job for jobs_put in put for job in jobs_put]
    assert len(everything) == producers * per_producer

    done = [zasync.wait_for(job, timeout=jobs.TIMEOUT) for job in everything]
    assert all(job.succeeded for job in done), [job.failure for job in done]
    ran = sorted(name for event, name, *_ in jobs.runs(folder) if event == "started")
    assert ran == sorted(f"p{index}-{number}" for index in range(producers)
                         for number in range(per_producer))     # each once
    assert {job.attempt_count for job in done} == {1}
    assert len(zasync.get_queue(client.queues(), queue_name)) == 0
    for worker in started:
        assert worker.terminate()[0] == 0


def _server_keepalive(pg_uri):
    """What PostgreSQL says of a new connection's keepalive setting (libpq
    reads PGOPTIONS at each connection, as RelStorage's do)."""
    import urllib.parse
    import psycopg2
    parts = urllib.parse.urlsplit(pg_uri.replace("postgres://", "http://", 1))
    with psycopg2.connect(host=parts.hostname, port=parts.port, user=parts.username,
                          dbname=parts.path[1:], connect_timeout=5) as conn:
        with conn.cursor() as cursor:
            cursor.execute("SHOW tcp_keepalives_idle")
            return cursor.fetchone()[0]


def test_a_relstorage_opened_by_zasync_has_postgres_drop_vanished_clients(
        pg_uri, monkeypatch):
    """So that a host gone in the middle of a commit does not keep its
    rows locked for two hours (test_multihost shows it with a cut link)."""
    monkeypatch.setenv("PGOPTIONS", "-c application_name=mine")
    zasync.open_db(pg_uri).close()
    assert os.environ["PGOPTIONS"].startswith("-c application_name=mine ")
    assert "tcp_keepalives_idle=5" in os.environ["PGOPTIONS"]
    assert _server_keepalive(pg_uri) == "5"


def test_keepalives_the_user_set_are_kept(pg_uri, monkeypatch):
    monkeypatch.setenv("PGOPTIONS", "-c tcp_keepalives_idle=60")
    zasync.open_db(pg_uri).close()
    assert os.environ["PGOPTIONS"] == "-c tcp_keepalives_idle=60"
    assert _server_keepalive(pg_uri) == "60"
