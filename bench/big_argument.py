"""A job with a big argument, over a real ZEO server (issue 15, item 4).

    .venv/bin/python bench/big_argument.py [--mb 50] [--repeat 3]

Each repeat puts one job whose argument is MB megabytes of bytes and, right
after, a small job; a dispatcher of two threads (its own ZEO client) runs
both.  Printed: the growth of the server's Data.fs per big job (and its
ratio to the argument's size: 1.0 means the argument was stored once),
how long the small job waited from its put to its completion, and how long
one load of the big job's call takes over ZEO (a third client, cold), with
the ratio of the two, medians over the repeats.  A worker's ZEO client
receives everything over one connection, so while the thread that runs the
big job loads its call, nothing else reaches that worker: one load is the
least the small job waits (a ratio of 1.0), two meant the call was loaded
twice.  Everything it starts is stopped by its pid.
"""

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

import zasync
from zasync.cli import examples
from zasync.testing import ZEOServer


def _completed(db, job_id):
    conn = db.open()
    try:
        job = zasync.get_queues(conn).find_job(job_id)
        return job is not None and job.status == zasync.COMPLETED
    finally:
        conn.close()


def _wait(db, job_id, timeout=600.0):
    deadline = time.monotonic() + timeout
    while not _completed(db, job_id):
        if time.monotonic() > deadline:
            raise RuntimeError(f"job {job_id} did not complete in {timeout} s")
        time.sleep(0.005)


def _load_call(db, job_id):
    """Seconds one load of the job's call record takes (nothing cached)."""
    db.cacheMinimize()
    conn = db.open()
    try:
        call = zasync.get_queues(conn).find_job(job_id)._call
        began = time.monotonic()
        call._p_activate()
        return time.monotonic() - began
    finally:
        conn.close()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=50.0,
                        help="the argument's size in megabytes (default 50)")
    parser.add_argument("--repeat", type=int, default=3, help="repeats (default 3)")
    options = parser.parse_args(argv)
    size = int(options.mb * 1024 * 1024)
    folder = tempfile.mkdtemp(prefix="zasync-bigarg-")
    path = os.path.join(folder, "Data.fs")
    server = ZEOServer(path)
    server.start()
    producer = worker = reader = dispatcher = None
    try:
        producer = zasync.open_db(server.uri)
        zasync.install(producer)
        worker = zasync.open_db(server.uri)
        reader = zasync.open_db(server.uri)
        dispatcher = zasync.Dispatcher(worker, threads=2, poll_interval=0.05)
        dispatcher.start()
        growths, waits, loads = [], [], []
        for number in range(options.repeat):
            argument = os.urandom(size)
            before = os.path.getsize(path)
            with producer.transaction() as conn:
                big = zasync.get_queue(conn).put(zasync.Job(len, argument)).id
            with producer.transaction() as conn:
                small = zasync.get_queue(conn).put(zasync.Job(examples.add, 1, 2)).id
            put_at = time.monotonic()
            _wait(producer, small)
            waits.append(time.monotonic() - put_at)
            _wait(producer, big)
            growths.append(os.path.getsize(path) - before)
            loads.append(_load_call(reader, big))
            print(f"# repeat {number + 1}: Data.fs +{growths[-1] / 2**20:.1f} MB, "
                  f"small job waited {waits[-1]:.3f} s, one load of the call "
                  f"{loads[-1]:.3f} s", file=sys.stderr)
        growth = statistics.median(growths)
        print(f"argument: {size / 2**20:.1f} MB, {options.repeat} repeats (medians)")
        print(f"Data.fs growth per big job: {growth / 2**20:.1f} MB "
              f"({growth / size:.2f} x the argument)")
        wait, load = statistics.median(waits), statistics.median(loads)
        print(f"wait of a small job put behind it: {wait:.3f} s")
        print(f"one load of the big call over ZEO: {load:.3f} s "
              f"(wait / load: {wait / load:.2f})")
        print(f"load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    finally:
        if dispatcher is not None:
            dispatcher.stop()
        for db in (reader, worker, producer):
            if db is not None:
                db.close()
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
