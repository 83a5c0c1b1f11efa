"""Scenarios over a real ZEO server: producers and a worker that use
separate database objects, as separate processes would."""

import threading

import pytest

import zasync

import scenario_jobs as jobs
from scenario_jobs import Producer, Viewer, unique

TIMEOUT = jobs.TIMEOUT


@pytest.fixture
def worker_db(zeo_server, zeo_db):
    """A second, separate DB object on the same ZEO server (opened after
    `zeo_db` has installed the queues)."""
    database = zasync.open_db(zeo_server.uri)
    yield database
    database.close()


@pytest.fixture
def worker(worker_db):
    with zasync.Dispatcher(worker_db, threads=4, poll_interval=0.05) as running:
        yield running


@pytest.fixture
def producer(zeo_producer):
    return zeo_producer


def test_jobs_put_from_one_db_run_on_a_dispatcher_of_another(
        zeo_db, worker_db, worker, producer):
    assert worker.db is worker_db is not zeo_db
    put = [producer.put(zasync.Job(jobs.add, number, 100)) for number in range(5)]
    results = [zasync.wait_for(job, timeout=TIMEOUT) for job in put]
    assert [job.result for job in results] == [number + 100 for number in range(5)]
    assert {job.dispatcher_id for job in results} == {worker.id}
    # the first DB's own connections see the results
    with Viewer(zeo_db) as fresh:
        assert [fresh.get(job).result for job in put] == [
            number + 100 for number in range(5)]


def test_concurrent_producers_get_no_conflicts_and_every_job_runs_once(
        zeo_db, worker):
    name = unique("producers")
    producers, per_producer = 4, 50
    start = threading.Barrier(producers, timeout=TIMEOUT)
    put_oids = [[] for _ in range(producers)]
    errors = []

    def produce(index):
        producer = Producer(zeo_db)
        try:
            start.wait()
            for _ in range(per_producer):
                job = producer.put(zasync.Job(jobs.count_by_job_id, name))
                put_oids[index].append(job._p_oid)
        except Exception as error:   # any error, ConflictError above all
            errors.append(error)
        finally:
            producer.close()

    threads = [threading.Thread(target=produce, args=(index,), name=f"producer-{index}")
               for index in range(producers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT * 6)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    oids = [oid for oids in put_oids for oid in oids]
    assert len(oids) == producers * per_producer

    with Viewer(zeo_db) as fresh:
        done = fresh.wait_completed(oids, timeout=TIMEOUT * 6)
        ids = [job.id for job in done]
        assert len(set(ids)) == producers * per_producer
        assert all(job.succeeded for job in done), [
            (job.id, job.failure) for job in done if not job.succeeded]
        assert [job.result for job in done] == ids
        assert [jobs.calls[job_id] for job_id in ids] == [1] * len(ids)
        assert sorted(jobs.records[name]) == sorted(ids)
        assert {job.attempt_count for job in done} == {1}
        assert len(zasync.get_queue(fresh.conn)) == 0



def test_lone_puts_wake_two_workers_and_neither_claim_conflicts(zeo_server, zeo_db, producer):
    # Each put wakes both dispatchers (each a ZEO client of its own).  Its
    # inbox lane's owner files and claims it; the other leaves it, where
    # both used to file it and one's claim raised ConflictError.
    opened = [zasync.open_db(zeo_server.uri) for _ in range(2)]
    try:
        with zasync.Dispatcher(opened[0], threads=2, poll_interval=0.05) as one, \
                zasync.Dispatcher(opened[1], threads=2, poll_interval=0.05) as other:
            lone = []
            for number in range(30):
                job = producer.put(zasync.Job(jobs.add, number, 1))
                lone.append(zasync.wait_for(job, timeout=TIMEOUT))
            conflicts = one.claim_conflicts + other.claim_conflicts
            ran = {job.dispatcher_id for job in lone}
    finally:
        for database in opened:
            database.close()
    assert [job.result for job in lone] == [number + 1 for number in range(30)]
    assert ran == {one.id, other.id}       # both took their share
    assert conflicts <= 2, f"{conflicts} claims conflicted for 30 lone puts"
