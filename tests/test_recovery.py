"""Recovery keeps a job's place, and hands on soon what a failed commit
left held by no thread.

The first test recovers a job the way a heartbeat does
(`zasync.worker.recovery.recover_record`) on a FileStorage and claims after it;
the second runs a dispatcher whose claim commits in the storage but fails
for the dispatcher, as when the ZEO server goes away during the commit.
"""

import datetime
import threading


import zasync
from zasync.job import clock
from zasync.worker import recovery
from zasync.queue.database import get_queues
from zasync.worker.record import DispatcherRecord

import scenario_jobs
from scenario_jobs import Producer, Viewer, count_by_job_id, unique, wait_until

TIMEOUT = scenario_jobs.TIMEOUT


def test_a_recovered_job_runs_again_in_its_place(db):
    name = unique("recovered")
    producer = Producer(db)
    with producer.tm:
        queue = producer.queue()
        first = queue.put(count_by_job_id, name, begin_by=datetime.timedelta(milliseconds=1))
        record = get_queues(producer.conn).dispatchers["gone"] = DispatcherRecord("gone")
    with producer.tm:           # a worker, gone since, claimed it and started it
        # (claimed at its due time, before its begin_by deadline)
        [claimed] = producer.queue().claim("gone", 1, now=first.begin_after)
        assert claimed.id == first.id
        claimed._start("gone")
    with producer.tm:           # due after it, and one of a higher priority
        queue = producer.queue()
        later = [queue.put(count_by_job_id, name) for _ in range(3)]
        urgent = queue.put(count_by_job_id, name, priority=1)
    with producer.tm:           # its heartbeat's age found, the record is recovered
        record = get_queues(producer.conn).dispatchers["gone"]
        done = recovery.recover_record(record, "dispatcher gone died", producer.tm.get())
        assert done == {first.id: "retried"}
    with producer.tm:
        order = [job.id for job in producer.queue().claim("next", 5)]
        again = producer.conn.get(first._p_oid)
        assert again.status == zasync.ASSIGNED   # not failed for its begin_by
        assert again.attempts[0].check(zasync.InterruptedJobError)
    assert order == [urgent.id, first.id] + [job.id for job in later]
    producer.close()


class FailsAfterCommit:
    """A data manager that, once armed, joins the dispatcher's next
    transaction that changes the database and raises after that
    transaction's changes are stored, as a client does that loses its
    server during the commit's last phase.  (It sorts after the storage.)"""

    def __init__(self, db):
        self.db = db
        self.armed = threading.Event()
        self.raised = threading.Event()

    # as a synchronizer of the dispatcher's transaction manager
    def newTransaction(self, txn):
        if self.armed.is_set() and not self.raised.is_set():
            txn.join(self)

    def beforeCompletion(self, txn):
        pass

    def afterCompletion(self, txn):
        pass

    # as a data manager
    transaction_manager = None

    def sortKey(self):
        return "~~ after the storage"

    def abort(self, txn):
        pass

    def tpc_begin(self, txn):
        self.before = self.db.lastTransaction()

    def commit(self, txn):
        pass

    def tpc_vote(self, txn):
        pass

    def tpc_finish(self, txn):
        if self.db.lastTransaction() != self.before:
            self.raised.set()
            raise OSError("the server went away during the commit")

    def tpc_abort(self, txn):
        pass


def test_jobs_of_a_claim_that_failed_after_its_commit_are_handed_on_soon(db):
    name = unique("orphan")
    producer, viewer = Producer(db), Viewer(db)
    dispatcher = zasync.Dispatcher(db, threads=1, poll_interval=0.05)   # pings every 60 s
    failing = FailsAfterCommit(db)
    dispatcher.start()
    try:
        dispatcher._tm.registerSynch(failing)
        job = producer.put(count_by_job_id, name,
                           begin_after=clock.now() + datetime.timedelta(seconds=1))
        job_id = job.id
        # filed as pending by a first cycle; its claim, once due, fails
        wait_until(lambda: viewer.root() and zasync.get_queue(viewer.conn).pending_count() == 1)
        failing.armed.set()
        assert failing.raised.wait(TIMEOUT)
        done = viewer.wait_completed([job], timeout=TIMEOUT)[0]
    finally:
        dispatcher.stop()
        producer.close()
    assert done.succeeded and done.result == job_id
    assert scenario_jobs.calls[job_id] == 1
    assert done.attempts[0].check(zasync.InterruptedJobError)
    viewer.close()
