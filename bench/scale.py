"""Scale: put and claim rates with a small backlog (1,000 pending jobs) and
a large one (1,000,000 by default), each in its own FileStorage.

The large backlog is built in bulk (many puts per transaction), with a
claim of no job committed after each batch, as a running dispatcher's
claims would: that moves the inbox into the queue's ordered structures.
Then, on both databases in turn (small, large, large, small, ...), the
same work is timed: puts of one job per transaction, one claim of none
that files them (timed apart), and claims of one job per transaction with
a direct `queue.claim`.  The target of issue 3: the large backlog's rates
are at least 0.7 of the small one's.
"""

import os
import shutil
import time

import transaction
from ZODB.POSException import ConflictError

import zasync
from zasync.cli.examples import noop

from common import disk_usage, median, rate, say

DISPATCHER_ID = "bench-scale"   # no dispatcher record: only the queue is measured


class Backlog:
    """A FileStorage database holding `size` pending jobs."""

    def __init__(self, folder, size, batch):
        self.folder = folder
        self.size = size
        self.db = zasync.open_db(os.path.join(folder, "Data.fs"))
        zasync.install(self.db)
        self.tm = transaction.TransactionManager()
        self.conn = self.db.open(transaction_manager=self.tm)
        self.tm.begin()
        self.queue = zasync.get_queue(self.conn)
        self.conflicts = 0
        self.build_s = self._build(size, batch)
        self.puts, self.claims, self.drains = [], [], []

    def _build(self, size, batch):
        started = time.perf_counter()
        done, step = 0, max(size // 10, 100_000)
        while done < size:
            count = min(batch, size - done)
            for i in range(count):
                self.queue.put(noop, done + i)
            self.tm.commit()
            self.queue.claim(DISPATCHER_ID, 0)
            self.tm.commit()
            self.conn.cacheGC()
            done += count
            if done % step == 0 and size >= step:
                elapsed = time.perf_counter() - started
                say(f"  backlog {done:,}/{size:,} built in {elapsed:.0f} s")
        return time.perf_counter() - started

    def commit(self):
        try:
            self.tm.commit()
        except ConflictError:   # nobody else writes here: there must be none
            self.conflicts += 1
            self.tm.abort()

    def round(self, ops, timed=True):
        """Puts, one claim of none (files them), claims; one per transaction."""
        queue = self.queue
        started = time.perf_counter()
        for i in range(ops):
            queue.put(noop, i)
            self.commit()
        put_s = time.perf_counter() - started
        started = time.perf_counter()
        queue.claim(DISPATCHER_ID, 0)
        self.commit()
        drain_s = time.perf_counter() - started
        started = time.perf_counter()
        for _ in range(ops):
            if len(queue.claim(DISPATCHER_ID, 1)) != 1:
                raise RuntimeError(f"backlog of {self.size}: a claim found no job")
            self.commit()
        claim_s = time.perf_counter() - started
        if timed:
            self.puts.append(rate(ops, put_s))
            self.claims.append(rate(ops, claim_s))
            self.drains.append(drain_s * 1000.0)

    def pending(self):
        self.tm.begin()
        return len(self.queue)

    def close(self):
        self.tm.abort()
        self.conn.close()
        self.db.close()


def measure(scratch, cfg):
    out = {"small_jobs": cfg.scale_small, "large_jobs": cfg.scale_jobs,
           "ops_per_round": cfg.scale_ops, "rounds": cfg.scale_rounds}
    small = large = None
    try:
        small = Backlog(scratch.folder("scale-small"), cfg.scale_small, cfg.scale_batch)
        say(f"scale: building a backlog of {cfg.scale_jobs:,} pending jobs "
            f"({cfg.scale_batch:,} puts per transaction)")
        large = Backlog(scratch.folder("scale-large"), cfg.scale_jobs, cfg.scale_batch)
        out["build_s"] = large.build_s
        out["build_jobs_per_s"] = rate(cfg.scale_jobs, large.build_s)
        for backlog in (small, large):       # warm the caches, untimed
            backlog.round(max(cfg.scale_ops // 10, 10), timed=False)
        for index in range(cfg.scale_rounds):
            order = (small, large) if index % 2 == 0 else (large, small)
            for backlog in order:
                backlog.round(cfg.scale_ops)
            say(f"  round {index + 1}/{cfg.scale_rounds}: put/s {small.puts[-1]:.0f} vs "
                f"{large.puts[-1]:.0f}, claim/s {small.claims[-1]:.0f} vs {large.claims[-1]:.0f}")
        for name, backlog in (("small", small), ("large", large)):
            out[f"{name}_pending_after"] = backlog.pending()
            out[f"{name}_put_per_s"] = median(backlog.puts)
            out[f"{name}_claim_per_s"] = median(backlog.claims)
            out[f"{name}_drain_ms"] = median(backlog.drains)
            out[f"{name}_put_runs"] = backlog.puts
            out[f"{name}_claim_runs"] = backlog.claims
        out["producer_conflicts"] = small.conflicts + large.conflicts
        # Each round times both backlogs back to back: the median of the
        # per-round ratios holds up better than a ratio of medians when the
        # machine's load changes between rounds.
        for what in ("put", "claim"):
            ratios = [big / little for big, little in zip(
                getattr(large, what + "s"), getattr(small, what + "s"))]
            out[f"{what}_ratio"] = median(ratios)
            out[f"{what}_ratio_runs"] = ratios
        out["large_fs_bytes"] = os.path.getsize(os.path.join(large.folder, "Data.fs"))
        out["large_disk_bytes"] = disk_usage(large.folder)
        out["small_disk_bytes"] = disk_usage(small.folder)
    finally:
        for backlog in (small, large):
            if backlog is not None:
                backlog.close()
                if not scratch.keep:    # free the disk for what follows
                    shutil.rmtree(backlog.folder, ignore_errors=True)
    return out
