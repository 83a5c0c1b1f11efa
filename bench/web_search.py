"""How fast the web view lists and searches a big history, and what
indexing a job for search costs its completion.

    .venv/bin/python bench/web_search.py            # 100,000 jobs
    .venv/bin/python bench/web_search.py --jobs 20000 --rebuild

The database (a FileStorage) is built once and kept in the scratch folder
(`--path`; `--rebuild` builds it again): `--jobs` jobs, 5% pending (due in
a day), the rest completed by claims and completions made in this process
(a twentieth of them failed), filed into the history by the keeper's
claims as workers' would be.  Then every query kind is asked through the
WSGI application (WebTest, no network) `--repeat` times after one warm-up,
and the median milliseconds printed: with `zasync.open_db`'s connection
cache (10,000 objects), and with `zasync web`'s (--cache-size, 60,000),
which holds the indexes a listing reads from one request to the next.

Last, the cost of filing: `--filing` jobs completed one per transaction
(the job's own transaction: `history.add`, which reads the job's words
into a `Words` record its note refers to) and filed by a keeper's claim
every 20, on a fresh FileStorage, with and without search's part (without:
`History.add` noting only the end and whether the job failed, as before
search, and no index written); printed as microseconds per job of each
step (the completion's commit apart, the claim with its commit; the
thread's CPU time, which a loaded machine does not inflate as
it does the wall clock's), bytes written per job, and those bytes by class.  Both in this one
run.  `--filing-only` measures only this (no big database).
"""

import argparse
import collections
import datetime
import os
import statistics
import sys
import tempfile
import time

import transaction
import webtest
from ZODB.FileStorage import FileStorage
from ZODB.utils import get_pickle_metadata, p64, u64

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))

import zasync  # noqa: E402
from zasync.queue import history as history_module  # noqa: E402
from zasync.job.failure import Failure  # noqa: E402
from zasync.web import make_app  # noqa: E402

import web_jobs  # noqa: E402

BATCH = 1000


def say(message):
    print(f"# {message}", file=sys.stderr, flush=True)


def complete(queue, jobs, number):
    """Run `jobs` as a worker would record them, without calling them:
    a result, or a failure for every twentieth."""
    for job in jobs:
        job._start("bench")
        n = int(job.args[0].split("-")[1])
        if n % 20 == 7:
            failure = Failure.from_exception(ValueError(f"card {n} declined by bank"))
            job._complete(failure=failure, dispatcher_id="bench")
        else:
            job._complete(result=f"sent invoice {n} total {n * 7}", dispatcher_id="bench")
        queue.history.add(job)


def build(path, count):
    db = zasync.open_db(path)
    zasync.install(db)
    later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1)
    started = time.perf_counter()
    made = 0
    while made < count:
        size = min(BATCH, count - made)
        with db.transaction() as conn:
            queue = zasync.get_queue(conn)
            for n in range(made, made + size):
                function = web_jobs.add if n % 3 else web_jobs.crawl
                options = {"begin_after": later} if n % 20 == 3 else {}
                queue.put(zasync.Job(function, f"order-{n}", n % 97), **options)
        with db.transaction() as conn:
            queue = zasync.get_queue(conn)
            claimed = queue.claim("bench", count=size)
            complete(queue, claimed, made)
        with db.transaction() as conn:
            zasync.get_queue(conn).claim("bench", count=0)    # files them
        made += size
        if made % 10_000 == 0:
            say(f"{made:,} jobs in {time.perf_counter() - started:.0f} s")
    db.close()


def timed(app, url, repeat):
    app.get(url)    # warm-up: the connection's cache
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        reply = app.get(url)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), reply


def queries(path, repeat, cache_size):
    db = zasync.open_db(path, cache_size=cache_size)
    app = webtest.TestApp(make_app(db))
    total = app.get("/api/jobs", {"per_page": 50}).json["total"]
    last = -(-total // 50)
    kinds = [
        ("list page", "/jobs"),
        ("?status=pending", "/jobs?status=pending"),
        ("?status=completed", "/jobs?status=completed"),
        ("?callable=crawl", "/jobs?callable=crawl"),
        ("?q= one rare word", "/jobs?q=order-4711"),
        ("?q= a failure's word", "/jobs?q=declined+bank"),
        ("?q= word of every job", "/jobs?q=web_jobs"),
        ("?q= prefix", "/jobs?q=invoice+4711*"),
        (f"last page ({last})", f"/jobs?page={last}"),
        ("API ?q=", "/api/jobs?q=order-4711"),
        ("job-id box", None),
    ]
    any_id = app.get("/api/jobs", {"page": last}).json["jobs"][-1]["id"]
    print(f"{total:,} jobs, connection cache {cache_size:,} objects; "
          f"median of {repeat} requests after one warm-up, ms:")
    worst = 0
    for name, url in kinds:
        if url is None:
            url = f"/go?id={any_id}"
        ms, reply = timed(app, url, repeat)
        shown = ""
        if url.startswith("/api/"):
            shown = f"{reply.json['total']} found"
        elif reply.status_int == 200:
            shown = f"{len(reply.html.select('tr[data-job]'))} rows"
        print(f"  {name:24s} {ms:8.1f}   {shown}")
        worst = max(worst, ms)
    print(f"  slowest {worst:.1f} ms: {'under' if worst < 200 else 'OVER'} the 200 ms target")
    db.close()


def filing(folder, jobs, with_search):
    """(µs per job in the completing transactions' history.add, µs per
    job in the keeper's claims, bytes written per job)."""
    path = os.path.join(folder, f"filing-{with_search}.fs")
    for suffix in ("", ".index", ".lock", ".tmp"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    History = history_module.History
    saved = (History.add, History._index_words, history_module.job_words)
    if not with_search:
        # as before search: the note holds the end and whether it failed
        def add(self, job):
            self._done.add(job, note=(job._ended_at_us, job._failure is not None))
        History.add = add
        History._index_words = lambda self, job_id, found, name: None
        history_module.job_words = lambda job, *args, **kwargs: ()
    try:
        db = zasync.open_db(path)
        zasync.install(db)
        with db.transaction() as conn:
            queue = zasync.get_queue(conn)
            for n in range(jobs):
                queue.put(zasync.Job(web_jobs.add, f"order-{n}", n % 97))
        with db.transaction() as conn:
            queue = zasync.get_queue(conn)
            claimed = [job.id for job in queue.claim("bench", count=jobs)]
        size_before = os.path.getsize(path)
        tid_before = db.storage.lastTransaction()
        add_s = archive_s = commit_s = 0.0
        tm = transaction.TransactionManager()
        conn = db.open(transaction_manager=tm)
        for n, job_id in enumerate(claimed):
            tm.begin()
            queue = zasync.get_queue(conn)
            job = queue.get(job_id)
            job._start("bench")
            job._complete(result=f"sent invoice {n} total {n * 7}", dispatcher_id="bench")
            start = time.thread_time()
            queue.history.add(job)
            add_s += time.thread_time() - start
            start = time.thread_time()
            tm.commit()
            commit_s += time.thread_time() - start
            if n % 20 == 19:
                tm.begin()
                queue = zasync.get_queue(conn)
                start = time.thread_time()
                queue.claim("bench", count=0)
                tm.commit()
                archive_s += time.thread_time() - start
        conn.close()
        written = os.path.getsize(path) - size_before
        db.close()
        kinds = written_by_class(path, tid_before)
        for suffix in ("", ".index", ".lock", ".tmp"):
            if os.path.exists(path + suffix):
                os.remove(path + suffix)
    finally:
        History.add, History._index_words, history_module.job_words = saved
    return (add_s / jobs * 1e6, archive_s / jobs * 1e6, written / jobs, kinds,
            commit_s / jobs * 1e6)


def written_by_class(path, after_tid):
    """{class name: (records, bytes)} written to the FileStorage at
    `path` by the transactions after `after_tid`."""
    found = collections.defaultdict(lambda: [0, 0])
    fs = FileStorage(path, read_only=True)
    try:
        for txn in fs.iterator(p64(u64(after_tid) + 1)):
            for record in txn:
                if record.data is not None:
                    module, klass = get_pickle_metadata(record.data)
                    entry = found[klass]
                    entry[0] += 1
                    entry[1] += len(record.data)
    finally:
        fs.close()
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--filing", type=int, default=2000,
                        help="jobs completed one per transaction to measure filing")
    parser.add_argument("--path", default=None,
                        help="the database to build or reuse (default: in $TMPDIR)")
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--cache-size", dest="cache_sizes", type=int, action="append",
                        help="connection cache sizes to measure the queries with "
                             "(repeat the option; default: 10,000, open_db's, and "
                             "60,000, zasync web's)")
    parser.add_argument("--filing-only", action="store_true",
                        help="measure only the cost of filing (no 100k database)")
    options = parser.parse_args()
    options.cache_sizes = options.cache_sizes or [10_000, 60_000]
    folder = os.path.join(tempfile.gettempdir(), "zasync-bench-web-search")
    os.makedirs(folder, exist_ok=True)
    path = options.path or os.path.join(folder, f"{options.jobs}.fs")
    if options.filing_only:
        pass
    elif options.rebuild or not os.path.exists(path):
        for suffix in ("", ".index", ".lock", ".tmp"):
            if os.path.exists(path + suffix):
                os.remove(path + suffix)
        say(f"building {options.jobs:,} jobs in {path}")
        build(path, options.jobs)
    for cache_size in [] if options.filing_only else options.cache_sizes:
        queries(path, options.repeat, cache_size)
    results = {}
    for with_search in (False, True, False, True):
        results.setdefault(with_search, []).append(
            filing(folder, options.filing, with_search))
    print(f"filing {options.filing:,} jobs, one completion per transaction "
          f"(median of 2 runs each):")
    figures = {}
    for with_search in (False, True):
        runs = results[with_search]
        add_us, archive_us, written = (statistics.median(values)
                                       for values in list(zip(*runs))[:3])
        commit_us = statistics.median(run[4] for run in runs)
        figures[with_search] = (add_us, archive_us, written, commit_us)
        print(f"  {'with search ' if with_search else 'without it  '}"
              f" history.add {add_us:7.1f} µs/job (its commit {commit_us:6.1f})"
              f"   keeper's claims {archive_us:7.1f} µs/job   {written:7.0f} bytes written/job")
        kinds = runs[-1][3]
        print("      bytes/job by class (last run): " + ", ".join(
            f"{name} {size / options.filing:.0f} ({count / options.filing:.2f} records)"
            for name, (count, size) in sorted(kinds.items(), key=lambda kv: -kv[1][1])[:6]))
    before, after = figures[False], figures[True]
    print(f"  search adds {after[0] - before[0]:.1f} µs to each completion "
          f"({after[3] - before[3]:+.1f} µs to its commit), "
          f"{after[1] - before[1]:.1f} µs per job to the keeper, "
          f"{after[2] / before[2]:.2f}x the bytes written")


if __name__ == "__main__":
    main()
