"""What a job costs zasync, in CPU time and in what it writes, beside the
floor of a queue on the same FileStorage (see storage.py): a measure that
holds up on a loaded machine, where wall-clock rates swing by a third.

    .venv/bin/python bench/cost.py              # 2,000 jobs, 3 runs, medians
    .venv/bin/python bench/cost.py --jobs 5000 --runs 5

Each run, in a fresh FileStorage: N `noop(i)` puts, one per transaction,
with no worker; then an in-process `zasync.Dispatcher(db, threads=2)`
drains them while this thread looks every 20 ms at the 64 oldest jobs
not yet seen completed (as the peers' protocol polls,
`common.wait_completed`); that thread's own CPU time is counted in the
drain's and printed apart, and so is the CPU time of the drain's garbage
collections.  `--worker-gc` tunes the collector as a ``zasync worker``
process does (`zasync.worker.collector`) once the dispatcher started.  Then the floor: N puts of a minimal call,
then its drain, 32 per commit.  For each phase: the process's CPU time (user + system, all
threads) per job, wall-clock time per job, and from the FileStorage
afterwards, transactions, objects and bytes written per job, and the
objects by class.  Under `valgrind --tool=callgrind` (which counts
instructions, the same from one run to the next) use `--runs 1`.
"""

import argparse
import collections
import gc
import os
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.realpath(__file__))
sys.path.insert(0, HERE)

import zasync  # noqa: E402
from ZODB.FileStorage import FileStorage  # noqa: E402
from ZODB.utils import get_pickle_metadata  # noqa: E402
from zasync.cli.examples import noop  # noqa: E402
from zasync.worker import collector  # noqa: E402

import storage  # noqa: E402
from common import Producer, median, wait_completed  # noqa: E402


def cpu():
    times = os.times()
    return times.user + times.system


class Phases:
    """CPU and wall time of named phases, and the last transaction id
    committed at the end of each, to split the file's records by phase."""

    def __init__(self, db):
        self.db = db
        self.spent = {}
        self.ends = []

    def measure(self, name, work):
        cpu0, wall0 = cpu(), time.perf_counter()
        work()
        self.spent[name] = (cpu() - cpu0, time.perf_counter() - wall0)
        self.ends.append((self.db.storage.lastTransaction(), name))


def census(path, ends):
    """{phase: (transactions, objects, bytes, Counter of classes)} of the
    records in the FileStorage at `path`, each transaction counted in the
    first phase whose last transaction id is not before it."""
    found = {name: [0, 0, 0, collections.Counter()] for _, name in ends}
    fs = FileStorage(path, read_only=True)
    try:
        for txn in fs.iterator():
            name = next((n for tid, n in ends if txn.tid <= tid), None)
            if name is None:
                continue
            entry = found[name]
            entry[0] += 1
            for record in txn:
                if record.data is None:
                    continue
                module, klass = get_pickle_metadata(record.data)
                entry[1] += 1
                entry[2] += len(record.data)
                entry[3][f"{module}.{klass}"] += 1
    finally:
        fs.close()
    return found


class Collections:
    """CPU time spent in the garbage collector while on (by the thread
    collecting, as `gc.callbacks` are called)."""

    def __init__(self):
        self.spent = 0.0
        self._began = None

    def _note(self, phase, info):
        if phase == "start":
            self._began = time.thread_time()
        elif self._began is not None:
            self.spent += time.thread_time() - self._began
            self._began = None

    def __enter__(self):
        gc.callbacks.append(self._note)
        return self

    def __exit__(self, *exc_info):
        gc.callbacks.remove(self._note)


def run_zasync(folder, jobs, threads, worker_gc=False):
    path = os.path.join(folder, "zasync.fs")
    db = zasync.open_db(path)
    zasync.install(db)
    phases = Phases(db)
    producer = Producer(db)
    oids = []
    phases.measure("put", lambda: oids.extend(producer.put(noop, i) for i in range(jobs)))

    polling = []
    collections_ = Collections()

    def drain():
        dispatcher = zasync.Dispatcher(db, threads=threads)
        dispatcher.start()
        if worker_gc:
            collector.tune_for_worker()
        try:
            # The oldest 64 jobs not seen completed, every 20 ms: reading
            # every job left at each look cost this thread 100 us of CPU
            # per job, a fifth of the drain's figure, none of it zasync's.
            began = time.thread_time()
            wait_completed(producer, oids, "drain", poll_s=0.02)
            polling.append(time.thread_time() - began)
        finally:
            dispatcher.stop()
    with collections_:
        phases.measure("drain", drain)
    conflicts = producer.conflicts
    producer.close()
    db.close()
    return phases, census(path, phases.ends), conflicts, polling[0], collections_.spent


def run_floor(folder, jobs):
    path = os.path.join(folder, "floor.fs")
    db = zasync.open_db(path)
    phases = Phases(db)
    oids = []
    phases.measure("put", lambda: oids.extend(storage.floor_puts(db, jobs)[1]))
    phases.measure("drain", lambda: storage.floor_drain(db, oids))
    db.close()
    return phases, census(path, phases.ends), 0, 0.0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", type=int, default=2000, help="jobs per run (default %(default)s)")
    p.add_argument("--runs", type=int, default=3, help="runs, medians reported (default %(default)s)")
    p.add_argument("--threads", type=int, default=2, help="dispatcher threads (default %(default)s)")
    p.add_argument("--only", choices=("zasync", "floor"), default=None,
                   help="measure one side only (for a profiler)")
    p.add_argument("--worker-gc", action="store_true",
                   help="tune the garbage collector as a `zasync worker` process does "
                        "(freezes all made so far; not undone: use it with --runs 1 "
                        "or for every run)")
    cfg = p.parse_args(argv)
    if cfg.jobs < 1 or cfg.runs < 1:
        p.error(f"--jobs {cfg.jobs} and --runs {cfg.runs}: expected 1 or more")
    sides = [s for s in ("zasync", "floor") if cfg.only in (None, s)]
    figures = {(side, phase): collections.defaultdict(list) for side in sides
               for phase in ("put", "drain")}
    classes = {}
    conflicts = 0
    polled = []
    collected = []
    for number in range(cfg.runs):
        for side in sides:
            folder = tempfile.mkdtemp(prefix=f"zasync-cost-{side}-")
            try:
                if side == "zasync":
                    phases, found, c, polling, gc_s = run_zasync(
                        folder, cfg.jobs, cfg.threads, cfg.worker_gc)
                    conflicts += c
                    polled.append(polling / cfg.jobs * 1e6)
                    collected.append(gc_s / cfg.jobs * 1e6)
                else:
                    phases, found, _, _ = run_floor(folder, cfg.jobs)
            finally:
                shutil.rmtree(folder, ignore_errors=True)
            for phase, (cpu_s, wall_s) in phases.spent.items():
                f = figures[(side, phase)]
                txns, objects, size, kinds = found[phase]
                f["cpu_us"].append(cpu_s / cfg.jobs * 1e6)
                f["wall_us"].append(wall_s / cfg.jobs * 1e6)
                f["txns"].append(txns / cfg.jobs)
                f["objects"].append(objects / cfg.jobs)
                f["bytes"].append(size / cfg.jobs)
                classes[(side, phase)] = kinds
            print(f"# run {number + 1}/{cfg.runs} {side}: " + ", ".join(
                f"{phase} {s[0] / cfg.jobs * 1e6:.0f} us CPU/job" for phase, s in phases.spent.items()),
                file=sys.stderr, flush=True)
    print(f"cost per job, {cfg.jobs} noop jobs, median of {cfg.runs} runs; "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"  {'':14} {'CPU us':>8} {'wall us':>8} {'txns':>6} {'objects':>8} {'bytes':>7}")
    for (side, phase), f in figures.items():
        print(f"  {side + ' ' + phase:14} {median(f['cpu_us']):8.0f} {median(f['wall_us']):8.0f} "
              f"{median(f['txns']):6.3f} {median(f['objects']):8.2f} {median(f['bytes']):7.0f}")
    if polled:
        print(f"  of zasync's drain CPU, the bench's own thread polling for "
              f"completions: {median(polled):.0f} us/job")
        print(f"  of zasync's drain CPU, garbage collections"
              f"{' (tuned as a zasync worker)' if cfg.worker_gc else ''}: "
              f"{median(collected):.0f} us/job")
    if len(sides) == 2:
        for phase in ("put", "drain"):
            mine, floor = (median(figures[(s, phase)]["cpu_us"]) for s in sides)
            print(f"  {phase}: zasync's CPU per job / the floor's: {mine / floor:.2f}")
    for (side, phase), kinds in classes.items():
        print(f"  objects written per job, {side} {phase} (last run): " + ", ".join(
            f"{name.rsplit('.', 1)[-1]} {count / cfg.jobs:.2f}" for name, count in kinds.most_common(6)))
    print(f"  producer ConflictErrors: {conflicts}")


if __name__ == "__main__":
    main()
