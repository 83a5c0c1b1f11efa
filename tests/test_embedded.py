"""One machine, no ZEO server: ``zasync worker --db PATH/Data.fs --serve
HOST:PORT`` keeps the FileStorage and serves it over ZEO from its own
process; a second worker process joins with ``--db zeo://HOST:PORT``, and
jobs put through the embedded server run on both.  SIGTERM stops each
cleanly, the joining worker first, and what they did is in the file.
"""

import socket

import pytest

import zasync
from zasync.testing import free_port

import recovery_jobs as jobs
from recovery_jobs import Client, Counter, Workers, gather, wait_until, work

STARTUP = 20.0


@pytest.fixture
def folder(tmp_path):
    path = tmp_path / "jobs"
    path.mkdir()
    return str(path)


def listening(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def test_a_worker_joins_the_embedded_server_of_another(tmp_path, folder):
    path = str(tmp_path / "var" / "Data.fs")
    port = free_port()
    uri = f"zeo://127.0.0.1:{port}"
    workers = Workers(tmp_path, path)
    db = client = None
    try:
        serving = workers.start("serving", "--serve", f"127.0.0.1:{port}", threads=1)
        # Its server listens before it has created the database's root and
        # installed the queues: others join once its dispatcher has started
        # (two clients creating the root of an empty database at once
        # conflict).
        serving.wait_log(f"dispatcher {serving.id} started", STARTUP)
        assert listening(port)
        joining = workers.start("joining", uri=uri, threads=1)
        db = zasync.open_db(uri)
        client = Client(db)
        wait_until(lambda: client.registered(serving) and client.registered(joining),
                   STARTUP, "both workers to register")

        # two jobs that complete only if both run at once: one on each worker
        together = client.put_many([(gather, (folder, f"g{number}", 2)) for number in range(2)])
        writing = client.put_many(
            [(work, (folder, f"w{number}", 0.0, Counter())) for number in range(6)])
        done = [zasync.wait_for(job, timeout=jobs.TIMEOUT) for job in together + writing]

        assert all(job.succeeded for job in done), [job.failure for job in done]
        ids = {serving.id, joining.id}
        assert {job.dispatcher_id for job in client.jobs(together)} == ids
        assert {job.dispatcher_id for job in client.jobs(writing)} <= ids
        assert [job.args[3].value for job in client.jobs(writing)] == [1] * 6
        put_ids = sorted(job.id for job in together + writing)
        client.close()
        client = None
        db.close()
        db = None

        assert joining.terminate()[0] == 0
        status, _ = serving.terminate()
        assert status == 0
        assert not listening(port)
        assert f"serving {path} over ZEO at {uri}" in serving.log
        assert f"stopped serving {path}" in serving.log
        for worker in (serving, joining):
            assert "Traceback" not in worker.log, worker.log
            assert "worker: stopped" in worker.log

        # what they did is in the file, which this process can open now
        db = zasync.open_db(path)
        client = Client(db)
        queue = zasync.get_queue(client.queues())
        assert sorted(job.id for job in queue.history if job.succeeded) == put_ids
        records = client.queues().dispatchers
        assert all(records[worker_id].stopped_at is not None for worker_id in ids)
    finally:
        if client is not None:
            client.close()
        if db is not None:
            db.close()
        workers.end_all()
