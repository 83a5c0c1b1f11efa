"""The storage's own limit: how many single-object transactions a second it
commits, on FileStorage (each commit fsync'd, ZODB's default) and through
a ZEO server on loopback.  zasync's figures are read against these."""

import os
import time

import transaction
from persistent.mapping import PersistentMapping

import zasync
from common import median, rate, say


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
        rates = []
        for _ in range(repeats):
            started = time.perf_counter()
            for i in range(commits):
                obj["value"] = i
                tm.commit()
            rates.append(rate(commits, time.perf_counter() - started))
        return rates
    finally:
        tm.abort()
        conn.close()


def measure(scratch, cfg):
    """Raw commit rates on FileStorage and over ZEO; a dict of figures."""
    out = {}
    path = os.path.join(scratch.folder("raw-fs"), "Data.fs")
    db = zasync.open_db(path)
    try:
        rates = commit_rates(db, cfg.raw_commits, cfg.repeats)
    finally:
        db.close()
    out["raw_fs_commits_per_s"] = median(rates)
    out["raw_fs_runs"] = rates
    say(f"raw FileStorage commits/s: {', '.join(f'{r:.0f}' for r in rates)}")

    server = scratch.zeo_server("raw-zeo")
    try:
        db = zasync.open_db(server.uri)
        try:
            rates = commit_rates(db, cfg.raw_commits, cfg.repeats)
        finally:
            db.close()
    finally:
        scratch.stop_server(server)
    out["raw_zeo_commits_per_s"] = median(rates)
    out["raw_zeo_runs"] = rates
    say(f"raw ZEO commits/s (one client): {', '.join(f'{r:.0f}' for r in rates)}")
    return out
