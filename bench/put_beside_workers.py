"""Puts over ZEO while worker processes drain the queue: what run.py's
protocol (every put before the workers start) does not show.  A drain
changes each inbox lane that holds jobs, which drops it from the
producers' caches; a put into such a lane loads it first, a round trip
before its commit's own.

    .venv/bin/python bench/put_beside_workers.py               # 3 rounds
    .venv/bin/python bench/put_beside_workers.py --puts 1000 --rounds 5

One ZEO server (a child process), `--workers` worker processes
(``python -m zasync worker``, 2 threads each) started first; then each
round: `--puts` ``queue.put(noop, i)``, one per transaction, from one
connection, while the workers run them.  Prints each round's puts/s and
the objects the producer's connection loaded per put
(``Connection.getTransferCounts``), then the medians, with the ZEO
server's loads, commits and conflicts (resolved, and raised) per put.
"""

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.realpath(__file__))
sys.path.insert(0, HERE)

import zasync  # noqa: E402
from zasync.cli.examples import noop  # noqa: E402

from common import Producer, Scratch, median, say, wait_completed  # noqa: E402


def _round(producer, puts):
    """(puts/s, loads per put, the server's figures per put, the jobs'
    oids) of one round."""
    conn, tm = producer.conn, producer.tm
    queue = zasync.get_queue(conn)
    tm.begin()
    conn.getTransferCounts(clear=True)
    before = conn.db().storage.server_status()
    oids = []
    started = time.perf_counter()
    for i in range(puts):
        job = queue.put(noop, i)
        tm.commit()
        oids.append(job._p_oid)
    elapsed = time.perf_counter() - started
    loads, _ = conn.getTransferCounts(clear=True)
    after = conn.db().storage.server_status()
    server = {name: (after[name] - before[name]) / puts for name in SERVER_FIGURES}
    return puts / elapsed, loads / puts, server, oids


#: the ZEO server's counts printed per put (all its clients, workers too)
SERVER_FIGURES = ("loads", "commits", "conflicts_resolved", "conflicts")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--puts", type=int, default=2000, help="puts per round (default %(default)s)")
    p.add_argument("--rounds", type=int, default=3, help="rounds (default %(default)s)")
    p.add_argument("--workers", type=int, default=2, help="worker processes (default %(default)s)")
    cfg = p.parse_args(argv)
    scratch = Scratch()
    try:
        server = scratch.zeo_server("put-beside-workers")
        folder = os.path.dirname(server.path)
        db = zasync.open_db(server.uri)
        try:
            zasync.install(db)
            producer = Producer(db)
            for k in range(cfg.workers):
                argv = [sys.executable, "-m", "zasync", "worker", "--db", server.uri,
                        "--threads", "2", "--log-level", "WARNING",
                        "--id", f"put-beside-workers-{k + 1}"]
                scratch.spawn(f"worker {k + 1}", argv, os.path.join(folder, f"worker{k + 1}.log"))
            # the workers are up once they ran a first job
            queue = zasync.get_queue(producer.conn)
            first = queue.put(noop, -1)
            producer.tm.commit()
            wait_completed(producer, [first._p_oid], "warm-up")
            rates, loads, servers = [], [], []
            for n in range(cfg.rounds):
                rate, loaded, server, oids = _round(producer, cfg.puts)
                wait_completed(producer, oids, f"round {n + 1}")
                rates.append(rate)
                loads.append(loaded)
                servers.append(server)
                say(f"round {n + 1}: {rate:.0f} puts/s, {loaded:.3f} loads per put")
            say(f"median of {cfg.rounds} rounds of {cfg.puts} puts beside {cfg.workers} "
                f"workers: {median(rates):.0f} puts/s, {median(loads):.3f} loads per put; "
                f"the server's, per put: "
                + ", ".join(f"{name} {median([each[name] for each in servers]):.3f}"
                            for name in SERVER_FIGURES))
            producer.close()
        finally:
            db.close()
    finally:
        scratch.close()


if __name__ == "__main__":
    main()
