"""Short jobs run several to a transaction (zasync.worker.batch): each job's
changes and outcome still commit together, one raising rolls back only
its own changes, and a failed commit retries every job of the batch alone.

The batches are run here by a dispatcher's runner called directly, on
jobs claimed for it, so that what shares a transaction is known; the last
test watches a running dispatcher form batches by itself.
"""

import collections
import threading

import transaction
import ZODB
from ZODB.FileStorage import FileStorage
from ZODB.POSException import ConflictError

import zasync
from zasync.interfaces import COMPLETED
from zasync.worker.runner import JobRunner

import scenario_jobs
from scenario_jobs import Counter, Producer, Viewer, unique

TIMEOUT = scenario_jobs.TIMEOUT


def claimed(db, dispatcher, jobs):
    """Claim the pending `jobs` for `dispatcher` (not started); return the
    (oid, id) pairs its threads would be given."""
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    try:
        with tm:
            got = zasync.get_queue(conn).claim(dispatcher.id, len(jobs))
            assert {job.id for job in got} == {job.id for job in jobs}
            tasks = [(job._p_oid, job.id) for job in got]
        return sorted(tasks, key=lambda task: [job.id for job in jobs].index(task[1]))
    finally:
        conn.close()


def put_counter(producer):
    with producer.tm:
        counter = producer.conn.root()["counter"] = Counter()
    return counter


def counter_jobs(producer, *methods):
    """Put a Counter, then a job calling each of its `methods` (by name)."""
    counter = put_counter(producer)
    with producer.tm:
        queue = producer.queue()
        mine = producer.conn.get(counter._p_oid)
        jobs = [queue.put(getattr(mine, method)) for method in methods]
    return counter, jobs


def serials(viewer, jobs):
    """The transaction that last wrote each job."""
    return [viewer.get(job)._p_serial for job in jobs]


def test_a_batch_commits_its_jobs_and_their_changes_in_one_transaction(db):
    producer, viewer = Producer(db), Viewer(db)
    counter = put_counter(producer)
    with producer.tm:
        queue = producer.queue()
        jobs = [queue.put(producer.conn.get(counter._p_oid).increment) for _ in range(3)]
        jobs.append(queue.put(scenario_jobs.add, 2, 3))
    dispatcher = zasync.Dispatcher(db)
    JobRunner(dispatcher)(claimed(db, dispatcher, jobs))

    done = [viewer.get(job) for job in jobs]
    assert [job.status for job in done] == [COMPLETED] * 4
    assert [job.result for job in done] == [1, 2, 3, 5]
    assert [job.attempt_count for job in done] == [1] * 4
    assert viewer.get(counter).value == 3
    assert len(set(serials(viewer, jobs))) == 1       # one commit for all
    assert viewer.get(counter)._p_serial == done[0]._p_serial
    viewer.close()
    producer.close()


def test_a_job_raising_in_a_batch_rolls_back_only_its_own_changes(db):
    producer, viewer = Producer(db), Viewer(db)
    counter, jobs = counter_jobs(producer, "increment", "increment_then_fail", "increment")
    dispatcher = zasync.Dispatcher(db)
    JobRunner(dispatcher)(claimed(db, dispatcher, jobs))

    first, failed, last = (viewer.get(job) for job in jobs)
    assert (first.result, last.result) == (1, 2)      # the failure's +1 undone
    assert viewer.get(counter).value == 2
    assert failed.status == COMPLETED and failed.failure.check(ValueError)
    assert "setting the counter to 2" in str(failed.failure)
    assert failed.attempt_count == 1                  # ValueError: not retried
    assert first._p_serial == last._p_serial != failed._p_serial
    viewer.close()
    producer.close()


def test_a_job_cancelled_after_its_claim_is_not_run_by_its_batch(db):
    # Claimed ahead of a free thread, then cancelled: the cancel is asked
    # of the job's live state, which the batch reads (for all its jobs at
    # once) before it calls any of them.
    producer, viewer = Producer(db), Viewer(db)
    counter, jobs = counter_jobs(producer, "increment", "increment", "increment")
    dispatcher = zasync.Dispatcher(db)
    tasks = claimed(db, dispatcher, jobs)
    with producer.tm:
        assert producer.conn.get(jobs[1]._p_oid).cancel()
    JobRunner(dispatcher)(tasks)

    first, cancelled, last = (viewer.get(job) for job in jobs)
    assert (first.result, last.result) == (1, 2)
    assert cancelled.cancelled
    assert "cancelled before it started" in str(cancelled.failure)
    assert viewer.get(counter).value == 2             # it never ran
    viewer.close()
    producer.close()


def test_a_batch_whose_commit_conflicts_retries_each_job_alone(db):
    name = unique("batch-conflict")
    meeting = scenario_jobs.rendezvous(name)
    producer, viewer = Producer(db), Viewer(db)
    counter = put_counter(producer)
    with producer.tm:
        queue = producer.queue()
        jobs = [queue.put(scenario_jobs.add, 1, 1),
                queue.put(producer.conn.get(counter._p_oid).increment_then_pause, name),
                queue.put(scenario_jobs.add, 2, 2)]
    dispatcher = zasync.Dispatcher(db)
    tasks = claimed(db, dispatcher, jobs)
    runner = threading.Thread(target=JobRunner(dispatcher), args=(tasks,))
    runner.start()
    try:
        assert meeting.wait_arrived(label="wrote")
        # Another transaction changes the counter the batch changed: its
        # commit conflicts (a Counter has no resolver).
        with producer.tm:
            producer.conn.get(counter._p_oid).value = 100
    finally:
        meeting.release()
        runner.join(TIMEOUT)
    assert not runner.is_alive()

    done = [viewer.get(job) for job in jobs]
    assert [job.result for job in done] == [2, 101, 4]
    assert viewer.get(counter).value == 101           # the +1 once, after the 100
    assert [job.attempt_count for job in done] == [2, 2, 2]
    for job in done:
        assert job.attempts[0].check(ConflictError)
    assert scenario_jobs.calls[name] == 2
    viewer.close()
    producer.close()


def test_a_long_job_does_not_hold_the_short_ones_of_its_batch(db):
    # One thread takes a batch: a job that turns out long, then a failing
    # job and five short ones; the agent's other thread is idle.  It takes
    # the jobs the long one holds up, which complete while it runs.
    name = unique("long-in-batch")
    meeting = scenario_jobs.rendezvous(name)
    producer, viewer = Producer(db), Viewer(db)
    with producer.tm:
        queue = producer.queue()
        long = queue.put(scenario_jobs.pause, name, "long")
        short = [queue.put(scenario_jobs.raise_value_error, "short and failing")]
        short += [queue.put(scenario_jobs.count_by_job_id, name) for _ in range(5)]
    dispatcher = zasync.Dispatcher(db)
    agent = zasync.Agent(2, prefetch=8, batch=8)
    agent._recent = 0.001           # its jobs were short so far: it batches
    for oid, job_id in claimed(db, dispatcher, [long] + short):
        agent.submit(oid, job_id, ahead=True)   # all held for one thread
    agent.start(JobRunner(dispatcher), "test-long")
    try:
        assert meeting.wait_arrived(label="long")
        done = viewer.wait_completed(short, timeout=TIMEOUT / 2)
        assert viewer.get(long).status != COMPLETED         # still held
        assert [job.result for job in done[1:]] == [job.id for job in short[1:]]
        assert done[0].failure.check(ValueError) and done[0].attempt_count == 1
    finally:
        meeting.release()
        assert agent.wait_idle(TIMEOUT)
        agent.stop()
    assert viewer.get(long).result == "long"
    assert {job.id: scenario_jobs.calls[job.id] for job in short[1:]} == {
        job.id: 1 for job in short[1:]}
    assert scenario_jobs.calls[name] == 1             # the long one, once
    viewer.close()
    producer.close()


def test_a_running_dispatcher_runs_a_backlog_of_short_jobs_in_batches(db):
    producer, viewer = Producer(db), Viewer(db)
    agent = zasync.Agent(1, prefetch=8, batch=8)
    with zasync.Dispatcher(db, agents=[agent], poll_interval=0.05):
        # a first job, so that the agent knows its jobs are short
        zasync.wait_for(producer.put(scenario_jobs.add, 0, 0), timeout=TIMEOUT)
        counter = put_counter(producer)
        with producer.tm:
            queue = producer.queue()
            mine = producer.conn.get(counter._p_oid)
            jobs = [queue.put(mine.increment) for _ in range(60)]
        done = viewer.wait_completed(jobs, timeout=TIMEOUT * 3)
    assert sorted(job.result for job in done) == list(range(1, 61))
    assert {job.attempt_count for job in done} == {1}
    assert viewer.get(counter).value == 60
    # several jobs per commit
    assert len(set(serials(viewer, jobs))) <= 60 // 2
    viewer.close()
    producer.close()


def test_an_agent_refuses_a_bad_batch():
    for bad in (0, -1, 2.5, True, "8"):
        try:
            zasync.Agent(1, batch=bad)
        except zasync.ConfigurationError as error:
            assert f"batch={bad!r}" in str(error)
        else:
            raise AssertionError(f"batch={bad!r} was accepted")


# -- what a thread takes at once (the agent alone, running a recorder) ----------

class Recorder:
    """Stands in for the dispatcher's runner: records the jobs each call
    got, holding the first call until released."""

    def __init__(self):
        self.calls = []
        self.first = threading.Event()
        self.go = threading.Event()
        self.done = threading.Semaphore(0)

    def __call__(self, tasks):
        self.calls.append([job_id for _, job_id in tasks])
        if len(self.calls) == 1:
            self.first.set()
            assert self.go.wait(TIMEOUT)
        for _ in tasks:
            self.done.release()


def run_agent(submissions, batch=4, recent=0.001):
    """Start a one-thread agent whose recent jobs took `recent` s, hand it
    (job id, ahead) `submissions` while its thread is held in a first job,
    and return the job ids of each call after that one."""
    agent = zasync.Agent(1, prefetch=8, batch=batch)
    recorder = Recorder()
    agent.start(recorder, "test-batch")
    try:
        agent._recent = recent
        agent.submit(b"first", "first")
        assert recorder.first.wait(TIMEOUT)
        for job_id, ahead in submissions:
            agent.submit(job_id.encode(), job_id, ahead=ahead)
        recorder.go.set()
        for _ in range(1 + len(submissions)):
            assert recorder.done.acquire(timeout=TIMEOUT)
    finally:
        recorder.go.set()
        agent.stop()
    return recorder.calls[1:]


def test_a_thread_takes_the_jobs_held_ahead_behind_its_next_one():
    ahead = [(f"a{n}", True) for n in range(6)]
    assert run_agent(ahead, batch=4) == [["a0", "a1", "a2", "a3"], ["a4", "a5"]]


def test_jobs_claimed_for_free_threads_are_not_run_one_after_another():
    # Claimed because threads were free, they are meant to run side by side.
    started = [("s1", False), ("s2", False), ("a1", True), ("s3", False)]
    assert run_agent(started) == [["s1"], ["s2", "a1"], ["s3"]]


def test_long_jobs_and_batch_1_run_one_to_a_call():
    ahead = [(f"a{n}", True) for n in range(3)]
    assert run_agent(ahead, recent=0.5) == [["a0"], ["a1"], ["a2"]]
    assert run_agent(ahead, batch=1) == [["a0"], ["a1"], ["a2"]]


class CountingFileStorage(FileStorage):
    """A FileStorage that counts, by object id, the records its agents'
    threads read."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.agent_loads = collections.Counter()

    def loadBefore(self, oid, tid):
        if "-main-" in threading.current_thread().name:
            self.agent_loads[oid] += 1
        return super().loadBefore(oid, tid)


def test_a_thread_reads_each_job_it_runs_once(tmp_path):
    # The dispatcher that claimed a job says its class: the thread does
    # not read its record a first time only to learn it.
    storage = CountingFileStorage(str(tmp_path / "Data.fs"))
    db = ZODB.DB(storage)
    try:
        zasync.install(db)
        producer, viewer = Producer(db), Viewer(db)
        with producer.tm:
            queue = producer.queue()
            jobs = [queue.put(scenario_jobs.add, i, 1) for i in range(40)]
        with zasync.Dispatcher(db, agents=[zasync.Agent(1, prefetch=8, batch=8)],
                               poll_interval=0.05):
            done = viewer.wait_completed(jobs, timeout=TIMEOUT * 3)
        assert sorted(job.result for job in done) == list(range(1, 41))
        assert [storage.agent_loads[job._p_oid] for job in jobs] == [1] * 40
        viewer.close()
        producer.close()
    finally:
        db.close()


def test_a_job_that_ended_in_its_batch_is_not_marked_started_meanwhile(db):
    # While a batch runs, the dispatcher shows its started jobs as
    # running; one that has already ended (its outcome stored by the
    # batch's commit, or handed) is not given a start mark: that wrote a
    # live state and the job once more, for nothing.
    from zasync.cli.examples import gate, noop, wait_at_gate
    producer, viewer = Producer(db), Viewer(db)
    name = f"batch-{unique()}"
    agent = zasync.Agent(1, prefetch=8, batch=8)
    # a long poll: the dispatcher's cycles come when woken, here by the test
    dispatcher = zasync.Dispatcher(db, agents=[agent], poll_interval=5.0)
    with dispatcher:
        # a first job, so that the agent knows its jobs are short
        zasync.wait_for(producer.put(noop, 0), timeout=TIMEOUT)
        with producer.tm:
            queue = producer.queue()
            # one for the free thread, then (taken ahead, started by the
            # batch) one that ends and one that waits at the gate
            first, ended, waiting = (queue.put(wait_at_gate, f"{name}-first"),
                                     queue.put(noop, 2), queue.put(wait_at_gate, name))
            rest = [queue.put(noop, i) for i in range(3, 12)]
        try:
            # the cycles that claimed them are over: the thread holds the
            # batch, none of its threads is free, no cycle comes unwoken
            assert gate(f"{name}-first:reached").wait(TIMEOUT)
            gate(f"{name}-first").set()
            assert gate(f"{name}:reached").wait(TIMEOUT)
            dispatcher.wake()
            assert scenario_jobs.wait_until(
                lambda: viewer.get(waiting).status == zasync.ACTIVE, TIMEOUT)
            seen = viewer.get(ended)
            assert seen.status == zasync.ASSIGNED
            seen._p_activate()
            assert "_live" not in seen.__dict__
        finally:
            gate(f"{name}-first").set()
            gate(name).set()
        viewer.wait_completed([first, ended, waiting, *rest])
    viewer.close()
    producer.close()
