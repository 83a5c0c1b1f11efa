"""Where an in-process drain of pending no-op jobs spends its CPU, by
function: cost.py's zasync drain (N `noop(i)` puts, then a
`zasync.Dispatcher(db, threads=2)` drains them) under cProfile, one
profile per thread (the dispatcher's and the agent's), added up.

    .venv/bin/python bench/profile_drain.py               # 2,000 jobs, top 25
    .venv/bin/python bench/profile_drain.py --jobs 5000 --top 40 --sort cumulative

Each function is timed by its thread's CPU time (`time.thread_time`), so
that waiting -- for a lock, for the GIL around a read or an fsync, for
work -- counts for nothing; `--wall` times by the clock instead.
cProfile inflates what calls many small Python functions; read the shares,
not the microseconds, and check a change with cost.py.  `--per-thread`
prints each thread's own table as well.
"""

import argparse
import cProfile
import os
import pstats
import shutil
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.realpath(__file__))
sys.path.insert(0, HERE)

import zasync  # noqa: E402
from zasync.cli.examples import noop  # noqa: E402

from common import Producer, completed_flags  # noqa: E402


class ThreadProfiles:
    """A cProfile profile for each thread started while it is on."""

    def __init__(self, timer=None):
        self.timer = timer
        self.profiles = {}
        self._lock = threading.Lock()

    def _start(self, frame, event, arg):
        # The first event of a new thread: replace this hook by a profile
        # of the thread's own.
        profile = cProfile.Profile() if self.timer is None else cProfile.Profile(self.timer)
        with self._lock:
            self.profiles[threading.current_thread().name] = profile
        profile.enable()

    def __enter__(self):
        threading.setprofile(self._start)
        return self

    def __exit__(self, *exc_info):
        threading.setprofile(None)

    def stats(self, names=None):
        chosen = [p for n, p in self.profiles.items() if names is None or n in names]
        for profile in chosen:
            profile.disable()   # (only stops it if called by its thread)
        stats = pstats.Stats(chosen[0])
        for profile in chosen[1:]:
            stats.add(profile)
        return stats


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", type=int, default=2000, help="jobs (default %(default)s)")
    p.add_argument("--threads", type=int, default=2, help="dispatcher threads")
    p.add_argument("--top", type=int, default=25, help="functions listed")
    p.add_argument("--sort", default="tottime", help="pstats sort key (tottime, cumulative)")
    p.add_argument("--per-thread", action="store_true", help="a table per thread too")
    p.add_argument("--wall", action="store_true",
                   help="time by the wall clock (waits included) instead of each "
                        "thread's CPU time")
    cfg = p.parse_args(argv)
    folder = tempfile.mkdtemp(prefix="zasync-profile-")
    try:
        db = zasync.open_db(os.path.join(folder, "drain.fs"))
        zasync.install(db)
        producer = Producer(db)
        oids = [producer.put(noop, i) for i in range(cfg.jobs)]
        cpu0, wall0 = time.process_time(), time.perf_counter()
        with ThreadProfiles(None if cfg.wall else time.thread_time) as profiles:
            dispatcher = zasync.Dispatcher(db, threads=cfg.threads)
            dispatcher.start()
            try:
                left = oids
                while left:
                    time.sleep(0.02)
                    conn = producer.fresh()
                    left = [o for o, done in zip(left, completed_flags(conn, left))
                            if not done]
            finally:
                dispatcher.stop()
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        producer.close()
        db.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"{cfg.jobs} jobs drained under cProfile: {cpu / cfg.jobs * 1e6:.0f} us CPU "
          f"and {wall / cfg.jobs * 1e6:.0f} us wall per job; threads: "
          + ", ".join(sorted(profiles.profiles)))
    names = [None] + (sorted(profiles.profiles) if cfg.per_thread else [])
    for name in names:
        print(f"\n== {'all threads' if name is None else name} ==")
        stats = profiles.stats(None if name is None else {name})
        stats.sort_stats(cfg.sort).print_stats(cfg.top)


if __name__ == "__main__":
    main()
