"""What a queue keeps of finished work, and what an idle site writes.

Completed jobs are filed into the queue's history, newest first; failed
ones are listed until dismissed; everything past the retention is pruned
by a later claim; the structures of pending work do not grow with
finished work; and an idle worker's heartbeats write a few hundred bytes
each.
"""

import datetime

import pytest
from BTrees.OOBTree import OOBTree
from ZODB.FileStorage import FileIterator

import zasync
from zasync.interfaces import COMPLETED
from zasync.queue.history import CANCELLED
from zasync.worker.runner import JobRunner

import process_jobs
import scenario_jobs
from process_jobs import Worker
from scenario_jobs import Viewer

TIMEOUT = scenario_jobs.TIMEOUT




def fresh_queue(viewer):
    viewer.root()    # a fresh transaction
    return zasync.get_queue(viewer.conn)


def test_completed_jobs_are_filed_in_the_history_newest_first(dispatcher, producer, viewer):
    jobs = []
    for number in range(5):
        job = producer.put(scenario_jobs.add, number, 10)
        assert zasync.wait_for(job, timeout=TIMEOUT).result == number + 10
        jobs.append(job)
    history = fresh_queue(viewer).history
    filed = list(history)
    assert [job.id for job in filed] == [job.id for job in reversed(jobs)]
    assert len(history) == 5
    ends = [job.ended_at for job in filed]
    assert ends == sorted(ends, reverse=True)
    assert all(job.status == COMPLETED for job in filed)


def test_failed_jobs_are_listed_until_dismissed(dispatcher, producer, viewer):
    ok = producer.put(scenario_jobs.add, 1, 1)
    failed = producer.put(scenario_jobs.raise_value_error, "listed")
    assert zasync.wait_for(ok, timeout=TIMEOUT).succeeded
    assert zasync.wait_for(failed, timeout=TIMEOUT).failed
    assert [job.id for job in fresh_queue(viewer).failed()] == [failed.id]

    with producer.tm:
        queue = producer.queue()
        with pytest.raises(zasync.ConfigurationError, match="did not fail"):
            queue.dismiss(queue.get(ok.id))
        queue.dismiss(queue.get(failed.id))
    queue = fresh_queue(viewer)
    assert queue.failed() == []
    assert {job.id for job in queue.history} == {ok.id, failed.id}   # still kept


def test_a_failure_dismissed_before_a_claim_filed_it_stays_dismissed(db, producer, viewer):
    # A pending job cancelled is filed at once, as failed (Cancelled), in
    # the set that the next claim files into the history.
    job = producer.put(scenario_jobs.add, 1, 1)
    with producer.tm:
        producer.queue().get(job.id).cancel()
    assert [found.id for found in fresh_queue(viewer).failed()] == [job.id]
    with producer.tm:
        queue = producer.queue()
        queue.dismiss(queue.get(job.id))
    assert fresh_queue(viewer).failed() == []
    with producer.tm:
        producer.queue().claim("filer", 0)
    queue = fresh_queue(viewer)
    assert queue.failed() == []
    assert [found.id for found in queue.history] == [job.id]


def test_the_keeper_files_jobs_without_loading_them(db, producer, viewer):
    # Over ZEO the keeper's cache no longer holds jobs that other workers
    # completed: each load would be a request.  What the filing needs (the
    # end, whether it failed) is kept beside the job in the set.
    ran = [producer.put(scenario_jobs.add, number, 1) for number in range(2)]
    runner = JobRunner(zasync.Dispatcher(db))     # run here, no claims after
    with producer.tm:
        tasks = [(job._p_oid, job.id) for job in producer.queue().claim(runner.dispatcher_id, 2)]
    runner(tasks)
    cancelled = producer.put(scenario_jobs.add, 2, 2)
    with producer.tm:
        queue = producer.queue()
        queue.get(cancelled.id).cancel()
        # as a database of before the notes holds it: the job alone
        queue.history._done.add(queue.get(ran[1].id))
    queue = fresh_queue(viewer)
    unfiled = {job_id for job_id, _, _ in queue.history._done.noted()}
    assert unfiled == {ran[0].id, ran[1].id, cancelled.id}
    viewer.conn.cacheMinimize()
    queue.claim(runner.dispatcher_id, 0)        # the keeper since its claim above
    jobs = {job_id: job for (_, job_id), job in queue.history._by_end.items()}
    assert set(jobs) == unfiled
    assert jobs[ran[0].id]._p_changed is None        # filed, never loaded
    assert [job.id for job in queue.failed()] == [cancelled.id]
    assert [job.id for job in queue.history] == [cancelled.id, ran[1].id, ran[0].id]
    viewer.tm.abort()


def set_retention(producer, seconds):
    with producer.tm:
        producer.queue().history.set_retention(datetime.timedelta(seconds=seconds))


def test_jobs_past_the_retention_are_pruned_by_a_later_claim(db, producer, viewer):
    with zasync.Dispatcher(db, threads=2, poll_interval=0.05):
        old = [producer.put(scenario_jobs.add, number, 0) for number in range(3)]
        old.append(producer.put(scenario_jobs.raise_value_error, "old failure"))
        for job in old:
            zasync.wait_for(job, timeout=TIMEOUT)
        queue = fresh_queue(viewer)
        assert len(queue.history) == 4 and len(queue.failed()) == 1
        assert all(queue.get(job.id) is not None for job in old)

        # The running dispatcher claims once the oldest is past the
        # retention (a claim, not a scan at every poll, does the pruning).
        set_retention(producer, 1)
        process_jobs.wait_until(lambda: len(fresh_queue(viewer).history) == 0, TIMEOUT)
        queue = fresh_queue(viewer)
        assert list(queue.history) == [] and queue.failed() == []
        assert [queue.get(job.id) for job in old] == [None] * 4

        set_retention(producer, 3600)
        recent = producer.put(scenario_jobs.add, 5, 5)
        ended = zasync.wait_for(recent, timeout=TIMEOUT).ended_at

    # Only the claims below run now, each at the time it is given: a job is
    # kept until it ended longer than the retention ago.
    set_retention(producer, 1)
    with producer.tm:
        queue = producer.queue()
        queue.claim("pruner", 0, now=ended + datetime.timedelta(seconds=0.5))
        assert [job.id for job in queue.history] == [recent.id]
    with producer.tm:
        queue = producer.queue()
        queue.claim("pruner", 0, now=ended + datetime.timedelta(seconds=1.5))
        assert list(queue.history) == [] and queue.get(recent.id) is None


def _done_count(producer, put, dispatcher_id, now):
    """Put `put` jobs, complete them as a worker would, then claim as
    `dispatcher_id` at `now`; return how many completed jobs are left
    unfiled afterwards."""
    with producer.tm:
        queue = producer.queue()
        for number in range(put):
            queue.put(scenario_jobs.add, number, 0).cancel()
        queue.claim(dispatcher_id, 0, now=now)
        return len(queue.history._done)


def test_one_dispatcher_at_a_time_files_the_history(db, producer):
    # Two workers filing the same completed jobs at once always conflict,
    # so only the keeper files; the others leave it, up to a bound.
    from zasync.queue.history import FILE_ANYWAY, KEEPER_LEASE
    t0 = datetime.datetime(2030, 1, 1, tzinfo=datetime.timezone.utc)
    lease = datetime.timedelta(microseconds=KEEPER_LEASE)
    assert _done_count(producer, 3, "keeper", t0) == 0          # takes the lease
    assert _done_count(producer, 3, "other", t0 + lease / 4) == 3
    assert _done_count(producer, 0, "keeper", t0 + lease * 0.6) == 0   # renews it
    assert _done_count(producer, 3, "other", t0 + lease) == 3   # renewed: not yet
    # Past the bound anyone files, and the lease stays where it was.
    assert _done_count(producer, FILE_ANYWAY, "other", t0 + lease) == 0
    with producer.tm:
        assert producer.queue().history._keeper.dispatcher_id == "keeper"
    # A lease not renewed runs out and the next claimer takes it.
    assert _done_count(producer, 3, "other", t0 + 3 * lease) == 0
    assert _done_count(producer, 3, "keeper", t0 + 3 * lease) == 3
    # A stopping dispatcher gives it up at once.
    with producer.tm:
        producer.queue().history.release("other")
    assert _done_count(producer, 0, "keeper", t0 + 3 * lease) == 0


def test_a_stopped_dispatcher_leaves_the_history_to_the_next(db, producer):
    with zasync.Dispatcher(db, threads=1, poll_interval=0.05, id="first"):
        job = producer.put(scenario_jobs.add, 1, 1)
        zasync.wait_for(job, timeout=TIMEOUT)
        process_jobs.wait_until(
            lambda: _keeper_of(producer) == "first", TIMEOUT)
    assert _keeper_of(producer) is None
    assert _done_count(producer, 2, "second", None) == 0


def _keeper_of(producer):
    with producer.tm:
        keeper = producer.queue().history._keeper
        return None if keeper is None else keeper.dispatcher_id


def test_the_pending_structures_do_not_grow_with_finished_work(db, producer, viewer):
    with zasync.Dispatcher(db, threads=4, poll_interval=0.05) as dispatcher:
        with producer.tm:
            queue = producer.queue()
            jobs = [queue.put(scenario_jobs.add, number, 1) for number in range(250)]
        jobs += [producer.put(scenario_jobs.add, number, 1) for number in range(250, 500)]
        done = viewer.wait_completed(jobs, timeout=TIMEOUT * 6)
        assert [job.result for job in done] == [number + 1 for number in range(500)]
        queue = fresh_queue(viewer)
        assert len(queue._pending) == 0 and queue.pending_count() == 0
        assert len(queue._deadlines) == 0
        assert [len(lane) for lane in queue._inbox] == [0] * len(queue._inbox)
        assert len(queue) == 0
        records = zasync.get_queues(viewer.conn).dispatchers
        assert {record.id: len(record.jobs) for record in records.values()} == {
            dispatcher.id: 0}
        assert len(queue.history) == 500


# -- an idle worker's heartbeats ------------------------------------------------------

def test_an_idle_worker_writes_a_few_hundred_bytes_per_heartbeat(
        zeo_server, zeo_db, tmp_path):
    # it looks for work every 0.1 s, and writes a heartbeat every 0.2 s
    worker = Worker(str(tmp_path / "worker.log"), zeo_server.uri, "--id", "idle",
                    "--ping-interval", "0.2", "--poll-interval", "0.1")
    viewer = Viewer(zeo_db)
    try:
        def heartbeats():
            """How many times the worker wrote its record since registering."""
            viewer.root()    # a fresh transaction
            record = zasync.get_queues(viewer.conn).dispatchers.get("idle")
            if record is None:
                return 0
            return len(zeo_db.storage.history(record._p_oid, size=1000)) - 1
        process_jobs.wait_until(lambda: heartbeats() >= 15, TIMEOUT * 3, interval=0.05)
        assert worker.stop() == 0, worker.log
        viewer.root()
        record_oid = zasync.get_queues(viewer.conn).dispatchers["idle"]._p_oid
    finally:
        worker.stop()
        viewer.close()

    # Every transaction the worker committed, read from the server's file:
    # the first registers it, the last records its stop; in between, while
    # it was idle, it must have written its heartbeats and nothing else.
    transactions = []
    iterator = FileIterator(zeo_server.path)
    try:
        for txn in iterator:
            oids = {record.oid for record in txn}
            # the file positions of the transaction (private, but the only
            # exact measure of what it added to the file)
            transactions.append((oids, txn._tend + 8 - txn._tpos))
    finally:
        iterator.close()
    touching = [index for index, (oids, _) in enumerate(transactions)
                if record_oid in oids]
    idle = transactions[touching[0] + 1:touching[-1]]
    assert len(idle) >= 15
    assert all(oids == {record_oid} for oids, _ in idle), [sorted(o) for o, _ in idle]
    per_ping = sum(size for _, size in idle) / len(idle)
    per_hour = per_ping * 3600 / 60.0    # at the default ping interval of 60 s
    print(f"\nidle worker: {len(idle)} heartbeats, {per_ping:.0f} bytes of Data.fs "
          f"each; at the default 60 s interval {per_hour / 1024:.1f} KB an hour")
    assert per_ping < 4096
    assert per_hour < 256 * 1024


# -- the failures' counts and the newest failures -----------------------------------

class Failures:
    """Puts jobs, runs them in this thread (no worker claims behind the
    test's back), and files them with a keeper's claim when asked."""

    def __init__(self, db, producer, viewer):
        self.producer, self.viewer = producer, viewer
        self.runner = JobRunner(zasync.Dispatcher(db))

    def run(self, jobs):
        """Claim and run `jobs` (put before); they stay unfiled."""
        with self.producer.tm:
            queue = self.producer.queue()
            tasks = [(job._p_oid, job.id) for job in queue.claim(
                self.runner.dispatcher_id, len(jobs))]
        assert {job_id for _, job_id in tasks} == {job.id for job in jobs}
        self.runner(tasks)

    def fail(self, count):
        jobs = [self.producer.put(scenario_jobs.raise_value_error, f"failure {n}")
                for n in range(count)]
        self.run(jobs)
        return jobs

    def cancel(self, count):
        """Cancel `count` pending jobs, each in its own transaction."""
        later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)
        jobs = [self.producer.put(scenario_jobs.add, n, 0, begin_after=later)
                for n in range(count)]
        for job in jobs:
            with self.producer.tm:
                self.producer.queue().get(job.id).cancel()
        return jobs

    def act(self, do, *jobs):
        """`do(queue, job)` for each job, in one transaction."""
        with self.producer.tm:
            queue = self.producer.queue()
            for job in jobs:
                do(queue, queue.get(job.id))

    def file(self, now=None):
        with self.producer.tm:
            self.producer.queue().claim(self.runner.dispatcher_id, 0, now=now)

    def check(self, failed, cancelled):
        """The history's counts and newest failures are those found by
        loading every job of the queue, and are `failed` and `cancelled`."""
        queue = fresh_queue(self.viewer)
        truth = sorted((job for job in queue.jobs() if job.failed and not job.dismissed),
                       key=lambda job: (job.ended_at, job.id), reverse=True)
        plain = [job.id for job in truth if not job.cancelled]
        cancellations = [job.id for job in truth if job.cancelled]
        assert (len(plain), len(cancellations)) == (failed, cancelled)
        history = queue.history
        assert history.failure_counts() == (failed, cancelled)
        assert [job.id for job in queue.failed()] == [job.id for job in truth]
        assert [job.id for job in history.newest_failures(2)] == plain[:2]
        assert [job.id for job in history.newest_failures(2, CANCELLED)] == cancellations[:2]
        return history


@pytest.fixture
def failures(db, producer, viewer):
    return Failures(db, producer, viewer)


def test_failure_counts_stay_right_through_every_change(failures):
    failed = failures.fail(3)
    ok = failures.producer.put(scenario_jobs.add, 1, 1)
    failures.run([ok])
    failures.check(3, 0)                  # completed, not yet filed
    failures.file()
    failures.check(3, 0)
    cancelled = failures.cancel(2)
    failures.check(3, 2)
    failures.file()
    failures.check(3, 2)

    failures.act(lambda queue, job: queue.dismiss(job), failed[0])
    failures.check(2, 2)
    failures.act(lambda queue, job: queue.dismiss(job), failed[0])   # again: no change
    failures.check(2, 2)
    # dismissed before a claim filed it: the claim leaves it off the list
    late = failures.cancel(1)
    failures.check(2, 3)
    failures.act(lambda queue, job: queue.dismiss(job), late[0])
    failures.check(2, 2)
    failures.file()
    history = failures.check(2, 2)
    assert len(history._dismissed_early) == 0    # the claim saw it dismissed

    # a retry takes the failure off until it fails again
    failures.act(lambda queue, job: queue.retry(job), failed[1])
    failures.check(1, 2)
    failures.run([failed[1]])
    failures.check(2, 2)
    failures.file()
    failures.check(2, 2)
    # a retried cancellation that succeeds is off for good
    failures.act(lambda queue, job: queue.retry(job), cancelled[0])
    failures.check(2, 1)
    failures.run([cancelled[0]])
    failures.file()
    failures.check(2, 1)
    # a pending job removed is no failure
    removed = failures.producer.put(scenario_jobs.add, 2, 2)
    failures.act(lambda queue, job: queue.remove(job), removed)
    failures.check(2, 1)

    # past the retention, pruned
    with failures.producer.tm:
        failures.producer.queue().history.set_retention(datetime.timedelta(seconds=1))
    failures.file(now=datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1))
    history = failures.check(0, 0)
    assert len(history._failures) == 0 and len(history) == 0


@pytest.mark.parametrize("first", ["claim", "dismissal"])
def test_a_dismissal_racing_the_claim_that_files_the_job_commits(db, failures, first):
    # The claim read the job as not dismissed and listed it; the operator's
    # dismissal must not conflict with it (an earlier design made it), and
    # the next claim takes the job off the list.
    job = failures.cancel(1)[0]
    dismisser = failures.producer
    claimer = Viewer(db)
    try:
        queue = dismisser.queue()
        queue.dismiss(queue.get(job.id))
        claimer.root()
        zasync.get_queue(claimer.conn).claim(failures.runner.dispatcher_id, 0)
        (claimer.tm if first == "claim" else dismisser.tm).commit()
        (dismisser.tm if first == "claim" else claimer.tm).commit()
    finally:
        dismisser.tm.abort()
        claimer.close()
    queue = fresh_queue(failures.viewer)
    assert queue.failed() == [] and queue.history.newest_failures(5, CANCELLED) == []
    assert queue.history.failure_counts() == (0, 1)      # until the next claim
    assert queue.has_work()
    failures.file()
    history = failures.check(0, 0)
    assert list(history._failures.values()) == []
    assert len(history._dismissed_early) == 0
    assert [found.id for found in history] == [job.id]     # filed all the same


def make_old_history(producer, listed_dismissed=()):
    """Turn the history into one of before `_failures`: failures listed by
    id in `_failed`, with `listed_dismissed` (jobs that a dismissal racing
    the claim that filed them left there), and no counts."""
    with producer.tm:
        queue = producer.queue()
        history = queue.history
        old = OOBTree()
        for job in history.failed():
            old[job.id] = job
        for job in listed_dismissed:
            old[job.id] = queue.get(job.id)
        del history._failures, history._failure_counts
        history._failed = old


def test_a_history_of_before_the_counts_is_read_then_indexed_by_its_first_change(failures):
    failed = failures.fail(3)
    failures.cancel(2)
    failures.file()
    failures.act(lambda queue, job: queue.dismiss(job), failed[2])
    make_old_history(failures.producer, listed_dismissed=[failed[2]])
    history = failures.check(2, 2)         # read from `_failed`, every job loaded
    assert history._failures is None

    failures.fail(1)
    failures.check(3, 2)
    failures.file()                        # the keeper's claim indexes it
    history = failures.check(3, 2)
    assert len(history._failures) == 5 and history._failed is None

    make_old_history(failures.producer)
    failures.act(lambda queue, job: queue.dismiss(job), failed[0])   # so does a dismissal
    history = failures.check(2, 2)
    assert len(history._failures) == 4 and history._failed is None

    make_old_history(failures.producer)
    zasync.install(failures.producer.db)                            # and `install`
    history = failures.check(2, 2)
    assert len(history._failures) == 4 and history._failed is None
