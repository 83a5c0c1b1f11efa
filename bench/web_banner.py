"""What the banner of every page and the pages' poll cost with many
failures not dismissed.

    .venv/bin/python bench/web_banner.py [--failed 25000 1000] [--repeat 15]

For each --failed count, builds a FileStorage in a scratch folder holding
that many failed jobs, none dismissed (a tenth of them cancelled), and
2,000 that succeeded, all filed into the history by a keeper's claim as
workers' would be.  Then asks the WSGI application (WebTest, no network)
for ``/api/summary`` (what an open page polls after each commit),
``/workers`` (a page with little but the banner: no workers here), ``/jobs``,
``/`` and the failures not dismissed (where the banner's "and N more" link
leads) --repeat times each:

- warm: the connection's cache kept from one request to the next (after
  one warm-up request);
- cold: the caches emptied before each request (`DB.cacheMinimize`), so
  that every object is loaded again from the storage (the file itself
  stays in the system's cache).

Prints the median milliseconds, the objects loaded per cold request
(`Connection.getTransferCounts`), and the ratio of the largest count's
medians to the smallest's: 1.0 if a page's cost does not grow with the
failures.  (``/`` also charts the last hour, reading up to 5,000 jobs that
ended in it: all of them here, 5,000 with 25,000 failures, 3,000 with
1,000.)

To measure the code of another commit with this script:

    git archive COMMIT src | tar -x -C /tmp/old
    PYTHONPATH=/tmp/old/src .venv/bin/python bench/web_banner.py
"""

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

import webtest

import zasync
from zasync.interfaces import Cancelled
from zasync.job.failure import Failure
from zasync.web import make_app

BATCH = 1000
SUCCEEDED = 2000
#: The last is where the banner's "and N more" link leads.
PATHS = ("/api/summary", "/workers", "/jobs", "/",
         "/jobs?state=failure&dismissed=no&cancelled=no")
WIDTH = 4 + max(map(len, PATHS)) + 2


def _noop(*args):
    return args


def say(message):
    print(f"# {message}", file=sys.stderr, flush=True)


def build(path, failed, succeeded=SUCCEEDED):
    """A database of `failed` failures (every tenth a cancellation) and
    `succeeded` successes, completed and filed as a worker's claims would."""
    db = zasync.open_db(path)
    zasync.install(db)
    made = 0
    total = failed + succeeded
    while made < total:
        size = min(BATCH, total - made)
        with db.transaction() as conn:
            queue = zasync.get_queue(conn)
            for n in range(made, made + size):
                queue.put(zasync.Job(_noop, f"order-{n}"))
        with db.transaction() as conn:
            queue = zasync.get_queue(conn)
            for n, job in enumerate(queue.claim("bench", count=size), made):
                job._start("bench")
                if n >= failed:
                    job._complete(result=f"done {n}", dispatcher_id="bench")
                else:
                    error = (Cancelled(f"job {n} was cancelled") if n % 10 == 3
                             else ValueError(f"card {n} declined by bank"))
                    job._complete(failure=Failure.from_exception(error),
                                  dispatcher_id="bench")
                queue.history.add(job)
        with db.transaction() as conn:
            zasync.get_queue(conn).claim("bench", count=0)    # files them
        made += size
    db.close()


def loads(db):
    """Objects loaded by the database's connections since the last call."""
    return sum(conn.getTransferCounts(clear=True)[0] for conn in list(db.pool.all))


def measure(db, app, path, repeat, cold):
    app.get(path)
    loads(db)
    times = []
    loaded = []
    for _ in range(repeat):
        if cold:
            db.cacheMinimize()
        started = time.perf_counter()
        app.get(path)
        times.append((time.perf_counter() - started) * 1000)
        loaded.append(loads(db))
    return statistics.median(times), statistics.median(loaded)


def run(folder, failed, repeat):
    path = os.path.join(folder, f"failed-{failed}.fs")
    started = time.perf_counter()
    build(path, failed)
    say(f"{failed:,} failures built in {time.perf_counter() - started:.0f} s")
    db = zasync.open_db(path)
    try:
        app = webtest.TestApp(make_app(db))
        summary = app.get("/api/summary").json
        assert summary["failed"] + summary["cancelled"] == failed, summary
        results = {}
        for page in PATHS:
            warm, _ = measure(db, app, page, repeat, cold=False)
            cold, loaded = measure(db, app, page, repeat, cold=True)
            results[page] = (warm, cold, loaded)
        return summary, results
    finally:
        db.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--failed", type=int, nargs="+", default=[25_000, 1_000])
    parser.add_argument("--repeat", type=int, default=15)
    options = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="zasync-web-banner-")
    try:
        measured = {}
        for failed in options.failed:
            summary, results = run(folder, failed, options.repeat)
            measured[failed] = results
            print(f"{failed:,} failed ({summary['failed']:,} failures, "
                  f"{summary['cancelled']:,} cancelled) and {SUCCEEDED:,} succeeded; "
                  f"median of {options.repeat} requests:")
            print(f"  {'request':<{WIDTH}}{'warm ms':>9}{'cold ms':>9}{'cold loads':>12}")
            for page, (warm, cold, loaded) in results.items():
                print(f"  {'GET ' + page:<{WIDTH}}{warm:>9.1f}{cold:>9.1f}{loaded:>12,.0f}")
        if len(measured) > 1:
            most, least = max(measured), min(measured)
            print(f"ratio {most:,} failed / {least:,} failed:")
            print(f"  {'request':<{WIDTH}}{'warm':>9}{'cold':>9}{'loads':>12}")
            for page in PATHS:
                (warm_a, cold_a, loads_a), (warm_b, cold_b, loads_b) = (
                    measured[most][page], measured[least][page])
                print(f"  {'GET ' + page:<{WIDTH}}{warm_a / warm_b:>8.1f}x{cold_a / cold_b:>8.1f}x"
                      f"{loads_a / max(loads_b, 1):>11.1f}x")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
