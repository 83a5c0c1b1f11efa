"""Under a backlog, a dispatcher commits results and claims in few, large
transactions: a batch of handed results wakes it once, and while every
thread has work it lets results and freed room gather (for at most
`GATHER_SECONDS`) instead of committing one or two jobs at a time.

Claim and commit size is what a throughput bench measures; these tests
pin the two rules that set it, without timing anything.
"""

import threading
import time

import zasync
from zasync.worker import dispatcher as dispatcher_module
from zasync.worker.agent import Agent
from zasync.cli.examples import noop
from zasync.interfaces import ASSIGNED
from zasync.worker.runner import JobRunner

from scenario_jobs import Producer
from test_batch import claimed

LONG = 60.0     # a gather that waited this long would fail the test's timeout


class CountingEvent(threading.Event):
    """An Event that records, at each set(), what `probe()` says."""

    def __init__(self, probe):
        super().__init__()
        self.probe = probe
        self.seen = []

    def set(self):
        self.seen.append(self.probe())
        super().set()


def test_a_batch_wakes_its_dispatcher_once_with_all_its_results(db):
    producer = Producer(db)
    with producer.tm:
        queue = producer.queue()
        jobs = [queue.put(noop, i) for i in range(4)]
    dispatcher = zasync.Dispatcher(db)
    tasks = claimed(db, dispatcher, jobs)
    dispatcher._accepting = True        # as while it runs: it takes results
    dispatcher._wakeup = CountingEvent(lambda: len(dispatcher._results))
    JobRunner(dispatcher)(tasks)

    # one wake, once the four results were handed: one commit stores them
    assert dispatcher._wakeup.seen == [4]
    assert [value for _, _, value, _, _ in dispatcher._results] == [0, 1, 2, 3]
    producer.close()


def busy_dispatcher(db):
    """A dispatcher (not started) whose one agent of 2 threads holds all
    it may: 2 running and its prefetch of 4 waiting."""
    agent = Agent(2, prefetch=4)
    dispatcher = zasync.Dispatcher(db, agents=[agent])
    for number in range(6):
        agent.submit(b"\0" * 8, f"job-{number}", ahead=number >= 2)
    assert agent.free == 0 and agent.room == 0
    return dispatcher, agent


def test_gather_does_not_wait_while_a_thread_needs_work(db, monkeypatch):
    monkeypatch.setattr(dispatcher_module, "GATHER_SECONDS", LONG)
    dispatcher = zasync.Dispatcher(db, agents=[Agent(2, prefetch=4)])
    began = time.monotonic()
    dispatcher._gather()
    assert time.monotonic() - began < LONG / 4


def test_gather_waits_while_all_threads_have_work_until_room_frees(db, monkeypatch):
    monkeypatch.setattr(dispatcher_module, "GATHER_SECONDS", LONG)
    dispatcher, agent = busy_dispatcher(db)
    gathered = threading.Event()

    def gather():
        dispatcher._gather()
        gathered.set()
    thread = threading.Thread(target=gather, daemon=True)
    thread.start()
    # A result handed while every thread still has work does not end it.
    dispatcher.wake()
    assert not gathered.wait(0.3)
    # The jobs not taken by a thread (no thread runs here: all six) are
    # given back: room for a claim.
    assert len(agent.drop_waiting()) == 6
    dispatcher.wake()
    assert gathered.wait(LONG / 4)
    thread.join()


def test_gather_waits_at_most_gather_seconds(db, monkeypatch):
    monkeypatch.setattr(dispatcher_module, "GATHER_SECONDS", 0.2)
    dispatcher, _ = busy_dispatcher(db)
    began = time.monotonic()
    dispatcher._gather()
    assert 0.2 <= time.monotonic() - began < LONG / 4


def holding(db, ahead):
    """A dispatcher (not started) whose one agent of 2 threads and a
    prefetch of 8 has both threads busy and `ahead` jobs waiting."""
    agent = Agent(2, prefetch=8)
    dispatcher = zasync.Dispatcher(db, agents=[agent])
    for number in range(2 + ahead):
        agent.submit(b"\0" * 8, f"job-{number}", ahead=number >= 2)
    assert agent.free == 0
    return dispatcher


def test_gather_waits_until_a_quarter_of_the_prefetch_is_left_ahead(db, monkeypatch):
    # Three of eight still held ahead: results and room go on gathering,
    # so that the next cycle claims six of the eight.
    monkeypatch.setattr(dispatcher_module, "GATHER_SECONDS", 0.2)
    began = time.monotonic()
    holding(db, 3)._gather()
    assert time.monotonic() - began >= 0.2
    # Two: the cycle comes at once, while the threads still have work.
    monkeypatch.setattr(dispatcher_module, "GATHER_SECONDS", LONG)
    began = time.monotonic()
    holding(db, 2)._gather()
    assert time.monotonic() - began < LONG / 4


def test_a_backlog_drains_exactly_once(db):
    """The gathering changes when results commit, not what: each of a
    backlog's jobs completes once with its own result."""
    producer = Producer(db)
    with producer.tm:
        queue = producer.queue()
        jobs = [queue.put(noop, i) for i in range(300)]
    with zasync.Dispatcher(db, threads=2, poll_interval=0.05):
        done = [zasync.wait_for(job, timeout=120) for job in jobs]
    assert [job.result for job in done] == list(range(300))
    assert {job.attempt_count for job in done} == {1}
    assert all(job.status != ASSIGNED for job in done)
    producer.close()
