"""Issue 19's enqueue ratio, measured so that the machine's load cancels
out: blocks of raw commits (one small object changed per transaction, as
storage.py's `commit_rates`) and of zasync puts (one
``queue.put(noop, i)`` per transaction) alternate in one process, on one
storage, and each round's ratio compares two blocks seconds apart.
run.py measures the raw rate and the enqueue rate minutes apart, and on a
machine shared with other work their ratio swung from 0.44 to 0.97 in two
runs of the same code.

    .venv/bin/python bench/put_ratio.py                  # FileStorage and ZEO
    .venv/bin/python bench/put_ratio.py --only fs --rounds 9 --commits 500

Prints, per storage, the median of the rounds' ratios (puts/s over raw
commits/s) and the medians of both rates.
"""

import argparse
import os
import sys
import time

import transaction
from persistent.mapping import PersistentMapping

HERE = os.path.dirname(os.path.realpath(__file__))
sys.path.insert(0, HERE)

import zasync  # noqa: E402
from zasync.cli.examples import noop  # noqa: E402

from common import Scratch, median, say  # noqa: E402
import storage  # noqa: E402


def _rounds(db, rounds, commits):
    """[(raw commits/s, puts/s)] of `rounds` rounds on `db`, the order of
    the two blocks swapped every other round."""
    zasync.install(db)
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    try:
        root = conn.root()
        root["raw"] = PersistentMapping(value=0)
        tm.commit()
        raw = root["raw"]
        queue = zasync.get_queue(conn)

        def raw_block():
            return storage.commit_rate(tm, raw, commits)

        def put_block():
            started = time.perf_counter()
            for i in range(commits):
                queue.put(noop, i)
                tm.commit()
            return commits / (time.perf_counter() - started)

        raw_block(), put_block()        # warm up
        found = []
        for number in range(rounds):
            if number % 2:
                puts = put_block()
                rates = (raw_block(), puts)
            else:
                rates = (raw_block(), put_block())
            found.append(rates)
        return found
    finally:
        tm.abort()
        conn.close()


def _report(label, found):
    ratios = [puts / raw for raw, puts in found]
    say(f"{label}: " + ", ".join(f"{raw:.0f} raw/s {puts:.0f} puts/s" for raw, puts in found))
    print(f"  {label:38} {median([r for r, _ in found]):8.0f} {median([p for _, p in found]):8.0f}"
          f" {median(ratios):7.2f}  (rounds: {min(ratios):.2f} to {max(ratios):.2f})")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5, help="rounds (default %(default)s)")
    p.add_argument("--commits", type=int, default=300,
                   help="commits per block (default %(default)s)")
    p.add_argument("--only", choices=("fs", "zeo"), default=None, help="one storage only")
    cfg = p.parse_args(argv)
    if cfg.rounds < 1 or cfg.commits < 1:
        p.error(f"--rounds {cfg.rounds} and --commits {cfg.commits}: expected 1 or more")
    print(f"enqueue against raw commits, alternating blocks of {cfg.commits}, "
          f"{cfg.rounds} rounds; load average {os.getloadavg()[0]:.1f}")
    print(f"  {'':38} {'raw/s':>8} {'puts/s':>8} {'ratio':>7}")
    scratch = Scratch()
    try:
        if cfg.only in (None, "fs"):
            db = zasync.open_db(os.path.join(scratch.folder("fs"), "Data.fs"))
            try:
                _report("FileStorage (fsync'd), in one process", _rounds(db, cfg.rounds, cfg.commits))
            finally:
                db.close()
        if cfg.only in (None, "zeo"):
            server = scratch.zeo_server("zeo")
            db = zasync.open_db(server.uri)
            try:
                _report("ZEO on loopback, one client", _rounds(db, cfg.rounds, cfg.commits))
            finally:
                db.close()
                scratch.stop_server(server)
    finally:
        scratch.close()


if __name__ == "__main__":
    main()
