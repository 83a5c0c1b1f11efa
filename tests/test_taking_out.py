"""Taking pending jobs out from the application's transactions under load.

`job.cancel()`, `queue.remove(job)` and puts with a `key` run in a
request's transaction, which zasync cannot retry, while workers drain the
inbox, claim from the pending trees and free the keys of the jobs they
complete.  Like a `put`, they must never conflict with the workers:
here a real ZEO server (which resolves conflicts with zasync's resolvers),
a running dispatcher, a producer thread putting short jobs, and the test's
own transaction manager taking out jobs as soon as they are put, or once a
worker has filed them as pending; every job has a key, which the workers
free as the test's puts take new ones.  Each job counts its own runs.
"""

import datetime
import random
import threading

import transaction
from ZODB.POSException import ConflictError

import zasync
from zasync.job import clock
from zasync.testing import running_dispatcher, wait_for_idle

import scenario_jobs
from scenario_jobs import Producer, Viewer, count_by_job_id, unique, wait_until

#: Jobs the producer thread puts, one transaction each, while the test takes out.
LOAD = 400
#: Jobs the test puts and takes out again.
TAKEN_OUT = 120
#: How far ahead the jobs taken out are due: long enough that the test
#: takes each out before it is due, short enough to wait for.
DUE_IN = 3.0


def put_load(db, name, ids, errors):
    producer = Producer(db)
    try:
        for number in range(LOAD):
            with producer.tm:       # keyed: the workers free the keys meanwhile
                ids.append(producer.queue().put(count_by_job_id, name,
                                                key=f"{name}-load-{number}").id)
    except Exception as error:     # reported by the test
        errors.append(error)
    finally:
        producer.close()


def test_cancels_and_removes_never_conflict_with_workers(zeo_db):
    name = unique("taking-out")
    tm = transaction.TransactionManager()
    conn = zeo_db.open(transaction_manager=tm)
    viewer = Viewer(zeo_db)
    rng = random.Random(15)
    load_ids, load_errors = [], []
    cancelled, removed, conflicts = [], [], []
    last_due = None
    try:
        with running_dispatcher(zeo_db, threads=2):
            loader = threading.Thread(target=put_load, args=(zeo_db, name, load_ids, load_errors))
            loader.start()
            waiting = []        # (oid, id) put here and not yet taken out
            for number in range(TAKEN_OUT):
                with tm:
                    last_due = clock.now() + datetime.timedelta(seconds=DUE_IN)
                    job = zasync.get_queue(conn).put(
                        count_by_job_id, name, begin_after=last_due,
                        key=f"{name}-out-{number}")
                waiting.append((job._p_oid, job.id))
                # at once (still in the inbox, most likely, while a worker
                # drains it) or a few puts later (filed as pending by then)
                if rng.random() < 0.5 or len(waiting) > 4:
                    oid, job_id = waiting.pop(rng.randrange(len(waiting)))
                    removing = number % 3 == 0
                    tm.begin()
                    job = conn.get(oid)
                    if removing:
                        zasync.get_queue(conn).remove(job)
                    else:
                        assert job.cancel() is True
                    try:
                        tm.commit()
                    except ConflictError as error:
                        tm.abort()
                        conflicts.append(f"{'remove' if removing else 'cancel'} "
                                         f"of {job_id}: {error}")
                        continue
                    (removed if removing else cancelled).append((oid, job_id))
            for oid, job_id in waiting:       # the last ones, filed by now
                with tm:
                    assert conn.get(oid).cancel() is True
                cancelled.append((oid, job_id))
            loader.join(60)
            assert not loader.is_alive() and load_errors == []
            # Every job of the load runs; those taken out would be due by now.
            wait_until(lambda: sum(scenario_jobs.calls[i] for i in load_ids) >= LOAD, 60,
                       interval=0.05)
            wait_until(lambda: clock.now() > last_due, DUE_IN + 5, interval=0.05)
            wait_for_idle(zeo_db, timeout=30)

        assert conflicts == []
        assert len(cancelled) + len(removed) == TAKEN_OUT
        assert {i: scenario_jobs.calls[i] for i in load_ids if scenario_jobs.calls[i] != 1} == {}
        ran = [i for _, i in cancelled + removed if scenario_jobs.calls[i]]
        assert ran == []
        viewer.root()
        queue = zasync.get_queue(viewer.conn)
        for oid, job_id in cancelled:
            job = viewer.conn.get(oid)
            assert job.cancelled and job.attempt_count == 0, job
            assert queue.get(job_id) is job
        for oid, job_id in removed:
            job = viewer.conn.get(oid)
            assert job.status == zasync.NEW and job.queue is None, job
            assert queue.get(job_id) is None
        assert len(queue) == 0 and list(queue) == [] and queue.pending_count() == 0
    finally:
        tm.abort()
        conn.close()
        viewer.tm.abort()
        viewer.conn.close()
