"""Workers on several hosts (issue 19): end to end with 1, 2 and 4 worker
processes, each on a "host" of its own (a network namespace with its own
address, `zasync.netns.Hosts`), over ZEO and over RelStorage on the
PostgreSQL at 127.0.0.1:5432, printed side by side.

    sudo .venv/bin/python bench/multihost.py              # ~6 minutes on 2 cores
    .venv/bin/python bench/multihost.py --repeats 5 --jobs 3000 --job-ms 5

Needs root (``ip netns``) and, for RelStorage, iptables and PostgreSQL on
127.0.0.1:5432 with trust authentication for user postgres.  The database
servers stay in the root namespace: the ZEO server listens on the bridge's
address; the workers reach PostgreSQL through that address too, on a port
the kernel forwards to 127.0.0.1:5432 (`zasync.netns.Hosts.forward`).

Each run, on a fresh database: N jobs are put from this process (the
application's host, the root namespace), one per transaction, with no
worker running; then K ``zasync worker`` processes (--threads each) start,
one per host, and this process polls until all completed, as bench/run.py
does.  e2e/s = N / (all completed - first put), the peers' definition;
drain/s = (N - 1) / (last completed - first completed), what the workers
did once running.  Every job is then read back: lost, run twice, failed or
a wrong result must all be 0.  Runs are interleaved (storage, K) so that a
slow spell of the machine spreads over all of them; medians are printed,
with the ratios 2/1 and 4/1 of the same run's medians.
"""

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.realpath(__file__))
sys.path.insert(0, HERE)

from common import (  # noqa: E402
    Interrupted, Producer, Scratch, audit, install_signal_handlers, median, rate, say,
    wait_completed)

STORAGES = ("zeo", "relstorage")
PG = ("127.0.0.1", 5432, "postgres")
TARGET_RELSTORAGE_2_OVER_1 = 1.6


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="e2e with 1, 2 and 4 worker processes on hosts of their own "
                    "(network namespaces), over ZEO and RelStorage side by side.")
    p.add_argument("--jobs", type=int, default=2000, help="jobs per run (default %(default)s)")
    p.add_argument("--workers", default="1,2,4",
                   help="worker processes per run, comma-separated (default %(default)s)")
    p.add_argument("--threads", type=int, default=2,
                   help="threads per worker process (default %(default)s)")
    p.add_argument("--repeats", type=int, default=3,
                   help="runs of each (storage, workers), medians (default %(default)s)")
    p.add_argument("--storages", default=",".join(STORAGES),
                   help="of " + ",".join(STORAGES) + " (default: both)")
    p.add_argument("--job-ms", type=float, default=0.0,
                   help="each job sleeps this long (work that waits, such as a "
                        "request to another service); 0: zasync.cli.examples.noop "
                        "(default %(default)s)")
    p.add_argument("--direct", action="store_true",
                   help="run the workers in this namespace on 127.0.0.1 instead, "
                        "with no namespace, bridge or forwarding: what those cost")
    p.add_argument("--keep", action="store_true", help="keep the scratch folder and logs")
    p.add_argument("--log-level", default="WARNING",
                   help="the workers' --log-level (default %(default)s; DEBUG logs "
                        "each claim that conflicted)")
    p.add_argument("--json", metavar="PATH", help="also write every figure to PATH")
    args = p.parse_args(argv)
    try:
        args.workers = [int(k) for k in args.workers.split(",")]
    except ValueError:
        p.error(f"--workers {args.workers!r}: expected numbers separated by commas, e.g. 1,2,4")
    storages = [s for s in args.storages.split(",") if s]
    unknown = [s for s in storages if s not in STORAGES]
    if unknown:
        p.error(f"--storages: {', '.join(unknown)} unknown; expected some of "
                + ", ".join(STORAGES))
    args.storages = storages
    for name in ("jobs", "threads", "repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} {getattr(args, name)}: expected 1 or more")
    if min(args.workers) < 1:
        p.error(f"--workers {args.workers}: expected numbers of 1 or more")
    return args


class Backend:
    """A fresh database of one kind for one run: `client_uri` for this
    process, `worker_uri` for the hosts; `close` removes it."""

    def __init__(self, kind, scratch, hosts, pg_port, label):
        from zasync.testing import ZEOServer
        self.kind, self.scratch = kind, scratch
        self.server = self.database = None
        if kind == "zeo":
            self.server = ZEOServer(os.path.join(scratch.folder(label), "Data.fs"),
                                    host="127.0.0.1" if pg_port is None else hosts.server_address)
            scratch.servers.append(self.server)
            self.server.start()
            self.client_uri = self.worker_uri = self.server.uri
            self.logs = os.path.dirname(self.server.path)
        else:
            from zasync.testing import PostgresDatabase
            self.database = PostgresDatabase("zasync_bench_mh", *PG).create()
            self.client_uri = self.database.uri()
            self.worker_uri = self.client_uri if pg_port is None else (
                self.database.uri(host=hosts.server_address, port=pg_port))
            self.logs = scratch.folder(label)

    def close(self):
        if self.server is not None:
            self.scratch.stop_server(self.server)
        if self.database is not None:
            self.database.drop()


def one_run(args, scratch, hosts, pg_port, kind, workers, label):
    import zasync
    from zasync.cli.examples import noop
    backend = Backend(kind, scratch, hosts, pg_port, label)
    procs, producer, db = [], None, None
    try:
        db = zasync.open_db(backend.client_uri)
        zasync.install(db)
        producer = Producer(db)
        oids = []
        t0 = time.perf_counter()
        for i in range(args.jobs):
            if args.job_ms:
                oids.append(producer.put(time.sleep, args.job_ms / 1000.0))
            else:
                oids.append(producer.put(noop, i))
        t_enqueued = time.perf_counter()
        for k in range(workers):
            log = os.path.join(backend.logs, f"worker{k + 1}.log")
            launcher = [] if args.direct else ["ip", "netns", "exec", hosts.names[k]]
            argv = [*launcher, sys.executable, "-m", "zasync",
                    "worker", "--db", backend.worker_uri, "--threads", str(args.threads),
                    "--log-level", args.log_level, "--id", f"{label}-h{k}"]
            procs.append(scratch.spawn(f"worker on h{k} ({label})", argv, log))

        def alive():
            for proc in procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"worker pid {proc.pid} exited with status "
                                       f"{proc.returncode}; see {backend.logs}")

        done_at = wait_completed(producer, oids, label, alive=alive)
        first, last = min(done_at), max(done_at)
        out = {
            "enqueue_per_s": rate(args.jobs, t_enqueued - t0),
            "e2e_per_s": rate(args.jobs, last - t0),
            "drain_per_s": rate(args.jobs - 1, last - first),
            "audit": audit(producer, oids,
                           expected=None if args.job_ms else range(args.jobs)),
            "producer_conflicts": producer.conflicts,
        }
        out["exit_statuses"] = [scratch.stop(proc) for proc in procs]
        procs = []
        return out
    finally:
        for proc in procs:
            scratch.stop(proc)
        if producer is not None:
            producer.close()
        if db is not None:
            db.close()
        backend.close()


def print_table(args, results):
    keys = (("e2e_per_s", "e2e/s"), ("drain_per_s", "drain/s"),
            ("enqueue_per_s", "enqueue/s"))
    job = f"time.sleep({args.job_ms / 1000:g})" if args.job_ms else "noop(i)"
    where = ("in this namespace on 127.0.0.1 (--direct)" if args.direct
             else "on a host of its own")
    print(f"\nWorkers on several hosts: {args.jobs} {job} jobs, each worker process "
          f"{where} with {args.threads} threads; medians of "
          f"{args.repeats} runs (each run's figures below)\n")
    header = f"{'workers':>8} |" + "".join(
        f" {kind + ' ' + title:>22} |" for kind in args.storages for _, title in keys[:2])
    print(header)
    print("-" * len(header))
    medians = {}
    for k in args.workers:
        cells = []
        for kind in args.storages:
            runs = results[kind][k]
            for key, _ in keys[:2]:
                value = median([run[key] for run in runs])
                medians[kind, k, key] = value
                cells.append(f" {value:>22,.0f} |")
        print(f"{k:>8} |" + "".join(cells))
    print()
    for kind in args.storages:
        for k in args.workers:
            runs = results[kind][k]
            print(f"  {kind:>10}, {k} worker(s): e2e " + ", ".join(
                f"{run['e2e_per_s']:.0f}" for run in runs) + "; drain " + ", ".join(
                f"{run['drain_per_s']:.0f}" for run in runs) + "; enqueue " + ", ".join(
                f"{run['enqueue_per_s']:.0f}" for run in runs))
    print()
    base = args.workers[0]
    for kind in args.storages:
        for k in args.workers[1:]:
            for key, title in keys[:2]:
                ratio = medians[kind, k, key] / medians[kind, base, key]
                target = ""
                if kind == "relstorage" and (base, k) == (1, 2):
                    target = (f"  (target >= {TARGET_RELSTORAGE_2_OVER_1}: "
                              f"{'met' if ratio >= TARGET_RELSTORAGE_2_OVER_1 else 'NOT met'})")
                print(f"  {kind:>10} {title:>7} {k}/{base} workers: {ratio:.2f}x{target}")
    print()
    bad = {}
    for kind in args.storages:
        for k in args.workers:
            for run in results[kind][k]:
                for key in ("lost", "run_twice", "failed", "wrong_result"):
                    bad[key] = bad.get(key, 0) + run["audit"][key]
                bad["producer_conflicts"] = (bad.get("producer_conflicts", 0)
                                             + run["producer_conflicts"])
    print("  integrity over every run: " + ", ".join(f"{key} {value}"
                                                    for key, value in bad.items()))
    return medians


def main(argv=None):
    args = parse_args(argv)
    from zasync.netns import Hosts, check_forwarding, check_permitted
    why_not = check_permitted()
    if why_not is None and "relstorage" in args.storages and not args.direct:
        why_not = check_forwarding()
    if why_not is not None:
        sys.exit(f"bench/multihost.py: {why_not} (run it as root)")
    install_signal_handlers()
    scratch = Scratch(keep=args.keep)
    hosts = Hosts(max(args.workers))
    pg_port = None
    results = {kind: {k: [] for k in args.workers} for kind in args.storages}
    try:
        hosts.open()
        if not args.direct:
            pg_port = hosts.forward(PG[0], PG[1])
        for index in range(args.repeats):
            for kind in args.storages:
                for k in args.workers:
                    label = f"{kind}-{k}w-{index + 1}"
                    say(f"run {index + 1}/{args.repeats}: {kind}, {k} worker process(es)")
                    run = one_run(args, scratch, hosts, pg_port, kind, k, label)
                    a = run["audit"]
                    say(f"  enqueue {run['enqueue_per_s']:.0f}/s, e2e {run['e2e_per_s']:.0f}/s, "
                        f"drain {run['drain_per_s']:.0f}/s; lost {a['lost']}, "
                        f"twice {a['run_twice']}, failed {a['failed']}")
                    results[kind][k].append(run)
        print_table(args, results)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"args": vars(args), "results": results}, f, indent=1)
    except Interrupted:
        say("interrupted: stopping what the bench started")
        return 130
    finally:
        scratch.close()
        hosts.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
