"""End to end and latency, following the peers' protocol (see
../shared/bench/peers/README.md):

1. enqueue `noop(i)` for i < N (5,000), one put per transaction, with no
   worker running;
2. start ONE worker (an in-process dispatcher, or worker processes over
   ZEO) and poll until all N jobs completed: e2e = N / (all completed -
   first put), drain = (N - 1) / (last completed - first completed);
3. let the worker idle 2 s, then put 200 `stamp()` jobs on an absolute
   20 ms schedule: latency = the job's start time (its result) - the time
   read just before its put.

Then every job is read back: none lost, none run twice, each result equal
to its argument.
"""

import os
import sys
import time

import zasync
from ZODB.utils import p64, u64
from zasync.cli.examples import noop, stamp

from common import Producer, audit, median, percentile, rate, say, wait_completed

MODES = ("inprocess", "zeo1", "zeo2")
MODE_TITLES = {
    "inprocess": "in-process dispatcher (2 threads) on FileStorage",
    "zeo1": "1 worker process (2 threads) over ZEO",
    "zeo2": "2 worker processes (2 threads each) over ZEO",
}


def enqueue_noops(producer, jobs):
    oids = []
    started = time.perf_counter()
    for i in range(jobs):
        oids.append(producer.put(noop, i))
    return oids, started, time.perf_counter()


def e2e_figures(jobs, t_first_put, t_enqueued, t_started, done_at):
    first, last = min(done_at), max(done_at)
    return {
        "enqueue_per_s": rate(jobs, t_enqueued - t_first_put),
        "e2e_per_s": rate(jobs, last - t_first_put),
        "drain_per_s": rate(jobs - 1, last - first),
        "first_result_after_start_s": first - t_started,
    }


def latency(producer, cfg, alive=None):
    """The peers' phase 3: idle, then stamp jobs on an absolute schedule."""
    time.sleep(cfg.idle_s)
    interval = cfg.lat_interval_ms / 1000.0
    oids, put_at = [], []
    start = time.time() + interval
    for k in range(cfg.lat_jobs):
        delay = start + k * interval - time.time()
        if delay > 0:
            time.sleep(delay)
        put_at.append(time.time())
        oids.append(producer.put(stamp))
    wait_completed(producer, oids, "latency", alive=alive)
    conn = producer.fresh()
    started = [conn.get(oid).result for oid in oids]
    producer.tm.abort()
    bad = [s for s in started if not isinstance(s, float)]
    if bad:
        raise RuntimeError(f"stamp() results are not floats: {bad[:3]!r}")
    ms = sorted((s - p) * 1000.0 for s, p in zip(started, put_at))
    return {
        "p50_latency_ms": percentile(ms, 50),
        "p95_latency_ms": percentile(ms, 95),
        "p99_latency_ms": percentile(ms, 99),
        "max_latency_ms": ms[-1],
        "stamp_audit": audit(producer, oids),
    }


def _commits_since(storage, tid):
    """Transactions a FileStorage committed after `tid`."""
    return sum(1 for _ in storage.iterator(p64(u64(tid) + 1)))


def run_inprocess(scratch, cfg, label):
    path = os.path.join(scratch.folder(label), "Data.fs")
    db = zasync.open_db(path)
    dispatcher = producer = None
    try:
        zasync.install(db)
        producer = Producer(db)
        oids, t0, t_enq = enqueue_noops(producer, cfg.jobs)
        tid = db.lastTransaction()
        dispatcher = zasync.Dispatcher(db, threads=cfg.threads, **cfg.dispatcher_kw)
        dispatcher.start()
        t_start = time.perf_counter()
        done_at = wait_completed(producer, oids, "e2e")
        out = e2e_figures(cfg.jobs, t0, t_enq, t_start, done_at)
        out["worker_commits_per_job"] = _commits_since(db.storage, tid) / cfg.jobs
        out["audit"] = audit(producer, oids, expected=range(cfg.jobs))
        out.update(latency(producer, cfg))
        out["claim_conflicts"] = dispatcher.claim_conflicts
        out["producer_conflicts"] = producer.conflicts
        dispatcher.stop(timeout=30)
        dispatcher = None
        producer.close()
        return out
    finally:
        if dispatcher is not None:
            dispatcher.stop(timeout=10)
        if producer is not None:
            producer.tm.abort()
        db.close()


def worker_argv(uri, cfg, worker_id):
    # An explicit --id: by default a worker keeps its id in a file of the
    # current folder, which two workers started from one folder would share.
    return [sys.executable, "-m", "zasync", "worker", "--db", uri,
            "--threads", str(cfg.threads), "--log-level", "WARNING",
            "--id", worker_id, *cfg.worker_arg]


def _tail(path, lines=15):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


def run_zeo(scratch, cfg, label, workers):
    server = scratch.zeo_server(label)
    folder = os.path.dirname(server.path)
    procs = []
    producer = None
    db = zasync.open_db(server.uri)
    try:
        zasync.install(db)
        producer = Producer(db)
        oids, t0, t_enq = enqueue_noops(producer, cfg.jobs)
        before = db.storage.server_status()
        for k in range(workers):
            log = os.path.join(folder, f"worker{k + 1}.log")
            argv = worker_argv(server.uri, cfg, f"bench-{label}-worker{k + 1}")
            procs.append((scratch.spawn(f"worker {k + 1} of {label}", argv, log), log))
        t_start = time.perf_counter()

        def alive():
            for proc, log in procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"worker pid {proc.pid} exited with status "
                                       f"{proc.returncode}:\n{_tail(log)}")

        done_at = wait_completed(producer, oids, "e2e", alive=alive)
        after = db.storage.server_status()
        # (the producer puts nothing while the workers drain)
        drain_conflicts = after["conflicts"] - before["conflicts"] - producer.conflicts
        out = e2e_figures(cfg.jobs, t0, t_enq, t_start, done_at)
        out["worker_commits_per_job"] = (after["commits"] - before["commits"]) / cfg.jobs
        out["audit"] = audit(producer, oids, expected=range(cfg.jobs))
        out.update(latency(producer, cfg, alive=alive))
        # ConflictErrors the server raised to a committing client (those its
        # resolvers could not merge): the producer's are counted apart.
        end = db.storage.server_status()
        out["producer_conflicts"] = producer.conflicts
        out["server_conflicts"] = end["conflicts"] - before["conflicts"] - producer.conflicts
        # Apart: those of the drain, and those of the latency probe, where
        # both processes wake for each lone job and claim it, and one's
        # claim conflicts.
        out["drain_conflicts"] = drain_conflicts
        producer.close()
        statuses = [scratch.stop(proc) for proc, _ in procs]
        procs = []
        out["worker_exit_statuses"] = statuses
        return out
    finally:
        for proc, _ in procs:
            scratch.stop(proc)
        if producer is not None:
            producer.tm.abort()
        db.close()
        scratch.stop_server(server)


def run_once(scratch, cfg, mode, index):
    label = f"{mode}-{index + 1}"
    if mode == "inprocess":
        return run_inprocess(scratch, cfg, label)
    return run_zeo(scratch, cfg, label, workers=int(mode[-1]))


def summarize(runs):
    """Medians of the figures over the repeats; sums of every count that
    must be zero."""
    out = {"repeats": len(runs)}
    for key in ("enqueue_per_s", "e2e_per_s", "drain_per_s",
                "first_result_after_start_s", "worker_commits_per_job",
                "p50_latency_ms", "p95_latency_ms", "p99_latency_ms", "max_latency_ms"):
        out[key] = median(run.get(key) for run in runs)
        out[key + "_runs"] = [run.get(key) for run in runs]
    for key in ("producer_conflicts", "claim_conflicts", "server_conflicts", "drain_conflicts"):
        values = [run[key] for run in runs if key in run]
        out[key] = sum(values) if values else None
    out["worker_exit_statuses"] = [s for run in runs for s in run.get("worker_exit_statuses", ())]
    for part in ("audit", "stamp_audit"):
        total = {}
        for run in runs:
            for key, value in run[part].items():
                total[key] = total.get(key, 0) + value
        out[part] = total
    return out


def measure(scratch, cfg, sink):
    """Each mode `cfg.e2e_repeats` times, the modes interleaved so that a
    slow spell of the machine spreads over all of them.  `sink` holds the
    summaries of the runs done so far (if a later one fails)."""
    runs = {mode: [] for mode in cfg.modes}
    for index in range(cfg.e2e_repeats):
        for mode in cfg.modes:
            say(f"e2e {mode} run {index + 1}/{cfg.e2e_repeats}: {MODE_TITLES[mode]}")
            run = run_once(scratch, cfg, mode, index)
            a = run["audit"]
            say(f"  enqueue {run['enqueue_per_s']:.0f}/s, e2e {run['e2e_per_s']:.0f}/s, "
                f"drain {run['drain_per_s']:.0f}/s, {run['worker_commits_per_job']:.2f} "
                f"worker commits/job, p50 {run['p50_latency_ms']:.2f} ms, "
                f"p95 {run['p95_latency_ms']:.2f} ms; lost {a['lost']}, "
                f"twice {a['run_twice']}, wrong {a['wrong_result'] + a['failed']}")
            runs[mode].append(run)
            sink.update({m: summarize(r) for m, r in runs.items() if r})
    return sink
