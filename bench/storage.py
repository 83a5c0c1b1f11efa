"""The storage's own limit: how many single-object transactions a second it
commits, on FileStorage (each commit fsync'd, ZODB's default) and through
a ZEO server on loopback; and the floor of any job queue kept in it under
the peers' protocol.  zasync's figures are read against these."""

import os
import time

import persistent
import transaction
from persistent.mapping import PersistentMapping

import zasync
from common import median, rate, say


def commit_rate(tm, obj, commits):
    """Commits per second of `commits` transactions of `tm`, each changing
    the small persistent mapping `obj`."""
    started = time.perf_counter()
    for i in range(commits):
        obj["value"] = i
        tm.commit()
    return rate(commits, time.perf_counter() - started)


def commit_rates(db, commits, repeats):
    """Change one small persistent object per transaction, `commits` times,
    `repeats` times; return the rates (commits per second)."""
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    try:
        root = conn.root()
        root["bench"] = PersistentMapping(value=0)
        tm.commit()
        obj = root["bench"]
        return [commit_rate(tm, obj, commits) for _ in range(repeats)]
    finally:
        tm.abort()
        conn.close()


class Call(persistent.Persistent):
    """A deferred call as small as a queue in ZODB could keep it."""

    status = "pending"
    result = None

    def __init__(self, number, func, args):
        self.id = number
        self.func = func
        self.args = args


#: Sets that the floor's puts spread over, as zasync's inbox lanes do.
FLOOR_LANES = 256
#: Jobs the floor's drain loads and rewrites per transaction.
FLOOR_BATCH = 32


def floor_puts(db, jobs):
    """The least a put does in a queue kept in this storage: one
    transaction adding a new `Call` to one of `FLOOR_LANES` mappings.
    Return (puts/s, the calls' oids)."""
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    try:
        root = conn.root()
        root["floor"] = lanes = tuple(PersistentMapping() for _ in range(FLOOR_LANES))
        tm.commit()
        oids = []
        started = time.perf_counter()
        for i in range(jobs):
            call = Call(i, abs, (i,))
            lanes[i % FLOOR_LANES][i] = call
            tm.commit()
            oids.append(call._p_oid)
        return rate(jobs, time.perf_counter() - started), oids
    finally:
        tm.abort()
        conn.close()


def floor_drain(db, oids):
    """The least a worker does for those calls: each loaded and rewritten
    with its result once, `FLOOR_BATCH` per commit, asked for at once (one
    request over ZEO).  No claim, no history, no thread handing work over.
    `db` is not the producer's: its caches start empty, as a worker
    process's do.  Return drained/s."""
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    try:
        conn.cacheMinimize()     # a pooled connection may hold the calls
        started = time.perf_counter()
        for k in range(0, len(oids), FLOOR_BATCH):
            tm.begin()
            batch = oids[k:k + FLOOR_BATCH]
            conn.prefetch(batch)
            for oid in batch:
                call = conn.get(oid)
                call.result = call.args[0]
                call.status = "completed"
            tm.commit()
        return rate(len(oids), time.perf_counter() - started)
    finally:
        tm.abort()
        conn.close()


def floor_e2e(jobs, puts, drained):
    """The peers' e2e of that floor: all puts, then the drain."""
    return jobs / (jobs / puts + jobs / drained)


def _floor(out, prefix, jobs, repeats, producer_db, worker_db, label):
    """`repeats` floor runs, putting through `producer_db` and draining
    through `worker_db`; medians into `out` under `prefix`."""
    runs = []
    for _ in range(repeats):
        puts, oids = floor_puts(producer_db, jobs)
        drained = floor_drain(worker_db, oids)
        runs.append({"put_per_s": puts, "drain_per_s": drained,
                     "e2e_per_s": floor_e2e(jobs, puts, drained)})
    for key in ("put_per_s", "drain_per_s", "e2e_per_s"):
        out[f"{prefix}_{key}"] = median([r[key] for r in runs])
    out[f"{prefix}_runs"] = runs
    say(f"floor of a queue on {label}: " + "; ".join(
        f"put {r['put_per_s']:.0f}/s, drain {r['drain_per_s']:.0f}/s, e2e {r['e2e_per_s']:.0f}/s"
        for r in runs))


def measure(scratch, cfg):
    """Raw commit rates and the floor of a queue, on FileStorage and over
    ZEO; a dict of figures."""
    out = {}
    path = os.path.join(scratch.folder("raw-fs"), "Data.fs")
    db = zasync.open_db(path)
    try:
        rates = commit_rates(db, cfg.raw_commits, cfg.repeats)
        # One process holds a FileStorage: the drain's connection is another
        # of the same database, whose object cache starts empty.
        _floor(out, "floor_fs", cfg.jobs, cfg.repeats, db, db, "FileStorage")
    finally:
        db.close()
    out["raw_fs_commits_per_s"] = median(rates)
    out["raw_fs_runs"] = rates
    say(f"raw FileStorage commits/s: {', '.join(f'{r:.0f}' for r in rates)}")

    server = scratch.zeo_server("raw-zeo")
    clients = []
    try:
        clients.append(zasync.open_db(server.uri))
        rates = commit_rates(clients[0], cfg.raw_commits, cfg.repeats)
        # The drain's client is another, whose client cache never held the
        # calls it drains (each run puts new ones).
        clients.append(zasync.open_db(server.uri))
        _floor(out, "floor_zeo", cfg.jobs, cfg.repeats, *clients, "ZEO")
    finally:
        for client in clients:
            client.close()
        scratch.stop_server(server)
    out["raw_zeo_commits_per_s"] = median(rates)
    out["raw_zeo_runs"] = rates
    say(f"raw ZEO commits/s (one client): {', '.join(f'{r:.0f}' for r in rates)}")
    return out
