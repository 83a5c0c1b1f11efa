"""What a live page's polling costs the server, in one run on this machine.

    .venv/bin/python bench/web_poll.py [--jobs 5000] [--repeats 30]

Builds a FileStorage in a scratch folder with --jobs pending jobs (and one
failure for the banner), then asks the WSGI application, in process (no
HTTP), what an open page asks every --refresh seconds:

- ``/api/summary`` as before (a whole answer), and with the ETag it gave
  (``If-None-Match``: 304 before anything is read);
- ``/jobs`` (50 newest of all jobs) and ``/`` as before (a whole page),
  and with their ETag (rendered, hashed, 304 with no body).

Prints the medians in milliseconds, the bytes sent, and the ratios.
"""

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

from webob import Request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "src"))

import zasync  # noqa: E402
from zasync.web import make_app  # noqa: E402


def _noop(*args):
    return args


def median_ms(app, path, repeats, headers=None):
    times = []
    for _ in range(repeats):
        request = Request.blank(path, headers=headers or {})
        started = time.perf_counter()
        response = request.get_response(app)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), response


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=30)
    options = parser.parse_args()
    scratch = tempfile.mkdtemp(prefix="zasync-web-poll-")
    try:
        db = zasync.open_db(os.path.join(scratch, "Data.fs"))
        zasync.install(db)
        with db.transaction() as conn:
            queue = zasync.get_queue(conn)
            for index in range(options.jobs):
                queue.put(zasync.Job(_noop, index, "x" * 100))
        app = make_app(db, token="bench")
        print(f"# {options.jobs:,} pending jobs, {options.repeats} requests each, "
              f"medians", file=sys.stderr)
        print(f"{'request':<28}{'whole (ms)':>12}{'304 (ms)':>10}{'ratio':>8}"
              f"{'bytes':>10}")
        # a browser's CSRF cookie: without it each page would make a new
        # token for its forms, and differ from the last
        first = Request.blank("/jobs").get_response(app)
        cookie = "; ".join(value.split(";")[0] for name, value in first.headerlist
                           if name.lower() == "set-cookie")
        for path in ("/api/summary", "/jobs", "/"):
            whole, response = median_ms(app, path, options.repeats, {"Cookie": cookie})
            tag = response.headers["ETag"]
            conditional, again = median_ms(app, path, options.repeats,
                                           {"If-None-Match": tag, "Cookie": cookie})
            assert again.status_int == 304, (path, again.status)
            print(f"{'GET ' + path:<28}{whole:>12.2f}{conditional:>10.2f}"
                  f"{whole / conditional:>7.1f}x{len(response.body):>10,}")
        db.close()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
