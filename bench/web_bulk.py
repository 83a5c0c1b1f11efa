"""The web view's bulk dismiss: how long dismissing N failures takes in
batches of 50 jobs per transaction (what the web view does) against one
transaction per job and one transaction for all, on a FileStorage.

    .venv/bin/python bench/web_bulk.py [--jobs 1000] [--repeat 3]

Prints the median of each way and its ratio to the batches of 50, and how
long the confirmation page's count ("all matching this filter") takes.
Each run starts from a copy of the same database of failed jobs.  Alone,
one transaction for all is the fastest; batches are chosen for when
workers write the same queue (a conflict redoes 50 jobs, not all).
"""

import argparse
import logging
import os
import shutil
import statistics
import tempfile
import time

import zasync
from zasync.cli import examples
from zasync.queue.database import get_queues
from zasync.web import bulk
from zasync.web.survey import Filters


def make_failures(path, count):
    db = zasync.open_db(path)
    zasync.install(db)
    with db.transaction() as conn:
        queue = zasync.get_queue(conn)
        jobs = [queue.put(examples.fail, f"failure {n}") for n in range(count)]
    with zasync.Dispatcher(db, threads=4, poll_interval=0.05):
        for job in jobs:
            zasync.wait_for(job, timeout=600)
    ids = [job.id for job in jobs]
    db.close()
    return ids


def timed_dismiss(source, folder, ids, batch):
    path = os.path.join(folder, f"copy-{batch}.fs")
    shutil.copyfile(source, path)
    db = zasync.open_db(path)
    try:
        started = time.perf_counter()
        result = bulk.perform_bulk(db, "dismiss", ids, batch=batch)
        elapsed = time.perf_counter() - started
        assert len(result["done"]) == len(ids), result
        return elapsed
    finally:
        db.close()
        for suffix in ("", ".index", ".lock", ".tmp"):
            if os.path.exists(path + suffix):
                os.remove(path + suffix)


def timed_count(source, repeat):
    db = zasync.open_db(source)
    try:
        times = []
        for _ in range(repeat):
            with db.transaction() as conn:
                container = get_queues(conn)
                filters = Filters({"state": "failure", "dismissed": "no"}, container.keys())
                started = time.perf_counter()
                found, more = bulk.matching(container, filters, "dismiss")
                times.append(time.perf_counter() - started)
        return statistics.median(times), len(found), more
    finally:
        db.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    options = parser.parse_args()
    logging.getLogger("zasync").setLevel(logging.ERROR)   # a thousand failures, on purpose
    with tempfile.TemporaryDirectory() as folder:
        source = os.path.join(folder, "Data.fs")
        started = time.perf_counter()
        ids = make_failures(source, options.jobs)
        print(f"{options.jobs} failed jobs made in {time.perf_counter() - started:.1f} s")
        count_time, found, more = timed_count(source, options.repeat)
        print(f"count for the confirmation: {found} jobs (more: {more}) "
              f"in {count_time * 1000:.0f} ms (median of {options.repeat}, warm)")
        ways = {f"batches of {bulk.BATCH}": bulk.BATCH, "one per job": 1,
                "one for all": len(ids)}
        medians = {}
        for name, batch in ways.items():
            runs = [timed_dismiss(source, folder, ids, batch) for _ in range(options.repeat)]
            medians[name] = statistics.median(runs)
        base = medians[f"batches of {bulk.BATCH}"]
        for name, median in medians.items():
            print(f"dismiss {len(ids)}, {name:>14}: {median:7.3f} s median "
                  f"({median / base:.2f}x the batches)")


if __name__ == "__main__":
    main()
