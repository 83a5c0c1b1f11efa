"""Priority across worker processes: an urgent job put while every worker
is busy with bulk work starts before the bulk jobs still waiting."""

import zasync
from zasync.interfaces import ACTIVE, PENDING

import process_jobs
from process_jobs import Worker
from scenario_jobs import Producer, Viewer

TIMEOUT = process_jobs.TIMEOUT


def test_an_urgent_job_starts_before_the_bulk_jobs_queued_before_it(
        zeo_server, zeo_db, tmp_path):
    gates = tmp_path / "gates"
    gates.mkdir()
    producer = Producer(zeo_db)
    viewer = Viewer(zeo_db)
    workers = []
    try:
        # bulk jobs first; each holds its worker's thread until released
        bulk = [producer.put(zasync.Job(process_jobs.hold, str(gates), f"bulk{n}"))
                for n in range(8)]
        # Two workers of one thread.  --prefetch 0: a job taken ahead of a
        # free thread (under a backlog) waits for that thread whatever its
        # priority, and the bulk jobs would be such a backlog.
        for name in ("one", "two"):
            workers.append(Worker(str(tmp_path / f"{name}.log"), zeo_server.uri,
                                  "--threads", "1", "--prefetch", "0", "--id", name))
        process_jobs.wait_until(lambda: process_jobs.arrived(str(gates)) == 2, TIMEOUT)

        # The workers' commits reach this ZEO client a moment after they
        # are made: wait for them to show, rather than read once.
        def two_active():
            viewer.get(bulk[0])     # one fresh transaction for all eight
            now = [viewer.conn.get(job._p_oid).status for job in bulk]
            return now if sorted(now) == [ACTIVE] * 2 + [PENDING] * 6 else None
        statuses = process_jobs.wait_until(
            two_active, TIMEOUT, what="two bulk jobs active, six pending")
        waiting = [job for job, status in zip(bulk, statuses) if status == PENDING]

        urgent = producer.put(zasync.Job(process_jobs.quick, "urgent"), priority=10)
        # both workers are busy: nobody can take it yet
        assert viewer.get(urgent).status == PENDING
        (gates / "release").touch()

        done = zasync.wait_for(urgent, timeout=TIMEOUT)
        assert done.result == "urgent"
        done_bulk = viewer.wait_completed(waiting, timeout=TIMEOUT)
        urgent_start = viewer.get(urgent).started_at
        later = [job.started_at for job in done_bulk]
        assert all(urgent_start < started for started in later), (
            urgent_start, sorted(later))
        statuses = [worker.stop() for worker in workers]
        assert statuses == [0, 0], [worker.log for worker in workers]
    finally:
        for worker in workers:
            worker.stop()
        viewer.close()
        producer.close()
