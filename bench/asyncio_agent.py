"""The asyncio agent: 1,000 jobs that each ``await asyncio.sleep(1)``, run by
one `AsyncioAgent` (one event loop thread), against the same number of jobs
that ``time.sleep(1)`` in a thread agent of 100 threads.

Run: ``.venv/bin/python bench/asyncio_agent.py [--jobs N] [--runs R]``.
Prints the median wall time from the first put to the last result of each
kind, and the ratio.  One job alone takes 1 s: the asyncio figure says what
running them side by side on one loop costs beyond that second.
"""

import argparse
import os
import sys
import tempfile
import time

import transaction

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

import zasync  # noqa: E402
from zasync.worker.aio import AsyncioAgent  # noqa: E402

import async_jobs  # noqa: E402
from common import median, say  # noqa: E402

THREADS = 100


def timed(agent, function, jobs):
    """Seconds from the commit of `jobs` puts to the last one completed."""
    with tempfile.TemporaryDirectory() as folder:
        db = zasync.open_db(os.path.join(folder, "Data.fs"))
        zasync.install(db)
        dispatcher = zasync.Dispatcher(db, agents=[agent], poll_interval=0.05)
        dispatcher.start()
        try:
            tm = transaction.TransactionManager()
            conn = db.open(tm)
            began = time.monotonic()
            with tm:
                queue = zasync.get_queue(conn)
                put = [queue.put(zasync.Job(function, 1, n)) for n in range(jobs)]
            for job in put:
                zasync.wait_for(job, timeout=600)
            took = time.monotonic() - began
            conn.close()
        finally:
            dispatcher.stop(timeout=60)
            db.close()
    return took


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    options = parser.parse_args()
    loop_times, thread_times = [], []
    for run in range(options.runs):
        loop_times.append(timed(AsyncioAgent(size=options.jobs), async_jobs.nap, options.jobs))
        thread_times.append(timed(zasync.Agent(THREADS), async_jobs.doze, options.jobs))
        say(f"run {run + 1}: asyncio agent {loop_times[-1]:.2f} s, "
            f"{THREADS} threads {thread_times[-1]:.2f} s")
    loop, threads = median(loop_times), median(thread_times)
    print(f"{options.jobs} jobs of 1 s each, median of {options.runs}:")
    print(f"  one AsyncioAgent (one loop thread):  {loop:.2f} s")
    print(f"  Agent({THREADS}) (time.sleep):           {threads:.2f} s")
    print(f"  ratio threads / asyncio:             {threads / loop:.1f}")


if __name__ == "__main__":
    main()
