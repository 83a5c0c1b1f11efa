"""The asyncio agent: ``async def`` jobs run many at once on one event
loop, under a real dispatcher on FileStorage, through the interfaces alone."""

import threading
import time

import transaction
from zope.interface.verify import verifyObject

import zasync
from zasync.interfaces import COMPLETED, IAgent, JobTimeoutError
from zasync.worker.aio import AsyncioAgent

import async_jobs


def put_all(db, calls, **options):
    tm = transaction.TransactionManager()
    conn = db.open(tm)
    with tm:
        queue = zasync.get_queue(conn)
        jobs = [queue.put(zasync.Job(f, *args), **options) for f, *args in calls]
    conn.close()
    return jobs


def test_asyncio_agent_provides_iagent():
    agent = AsyncioAgent(10)
    assert verifyObject(IAgent, agent)
    assert not isinstance(agent, zasync.Agent)


def test_jobs_that_wait_run_side_by_side_in_one_loop(db):
    """20 jobs that each sleep a second take far less than the 20 s they
    would take one after another: they wait on one loop together."""
    agent = AsyncioAgent(size=50)
    dispatcher = zasync.Dispatcher(db, agents=[agent], poll_interval=0.05)
    threads_before = threading.active_count()
    dispatcher.start()
    try:
        began = time.monotonic()
        jobs = put_all(db, [(async_jobs.nap, 1, n) for n in range(20)])
        done = [zasync.wait_for(job, timeout=60) for job in jobs]
        took = time.monotonic() - began
        assert [job.status for job in done] == [COMPLETED] * 20
        assert [job.result for job in done] == list(range(20))
        assert took < 10, f"20 one-second jobs took {took:.1f} s"
        # the agent's own threads: its loop and at most its pool
        assert threading.active_count() - threads_before <= 2 + 1 + agent.threads
    finally:
        assert dispatcher.stop(timeout=30)


def test_failures_time_limits_and_plain_functions(db):
    agent = AsyncioAgent(size=10)
    dispatcher = zasync.Dispatcher(db, agents=[agent], poll_interval=0.05)
    dispatcher.start()
    try:
        failing, = put_all(db, [(async_jobs.fail_after, 0.01, "no luck")])
        slow, = put_all(db, [(async_jobs.nap, 30, "late")], timeout=0.5)
        plain, = put_all(db, [(async_jobs.plain, 21)])
        failing = zasync.wait_for(failing, timeout=30)
        assert failing.failure is not None
        assert "no luck" in failing.failure.message
        slow = zasync.wait_for(slow, timeout=30)
        assert slow.failure is not None
        assert slow.failure.type.endswith(JobTimeoutError.__name__)
        assert zasync.wait_for(plain, timeout=30).result == 42
    finally:
        assert dispatcher.stop(timeout=30)
    assert agent.running == set()
