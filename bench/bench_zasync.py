"""zasync over ZEO (a FileStorage served by a ZEO server that prepare()
starts on loopback): one `zasync worker` process of 2 threads.

The peers' protocol (benchlib) measures it exactly as it measures Celery,
RQ, Huey and Dramatiq.  A FileStorage can be opened by one process only, so
the producer (this process) and the worker process share it through a ZEO
server; each put is one transaction, fsync'd by the server.

Runs under the peers' venv, which needs zasync installed into it once:

    /tmp/peers-venv/bin/python -m pip install -e /path/to/zasync

(bench/run.py --peers does that if needed).  benchlib is imported from
$PEERS_DIR, else from shared/bench/peers beside the clone.
"""

import importlib
import os
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.realpath(__file__))
REPO = os.path.dirname(HERE)
PEERS_DIR = os.environ.get("PEERS_DIR") or os.path.join(
    os.path.dirname(REPO), "shared", "bench", "peers")

try:
    import benchlib
except ImportError:
    sys.path.insert(0, os.path.abspath(PEERS_DIR))
    import benchlib

try:
    import zasync
except ImportError:
    # Not installed in this venv: this checkout's source, if its
    # dependencies (ZODB, ZEO, ...) are there; the worker and the ZEO server
    # inherit the path.
    _src = os.path.join(REPO, "src")
    sys.path.insert(0, _src)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [_src] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    try:
        import zasync
        importlib.import_module("ZEO")    # the worker and the server need it
    except ImportError as error:
        raise SystemExit(
            f"bench_zasync: {error}; install zasync into this venv first: "
            f"{sys.executable} -m pip install -e {REPO}") from None

import transaction
from ZODB.POSException import ConflictError

from zasync import ACTIVE, COMPLETED
from zasync.cli.examples import noop, stamp
from zasync.testing import ZEOServer

from common import completed_flags


class ZasyncPeer(benchlib.Peer):
    """zasync over ZEO (FileStorage behind a loopback ZEO server): one worker process of 2 threads."""

    packages = ("zasync", "ZODB", "ZEO", "persistent", "BTrees", "transaction")

    @classmethod
    def add_arguments(cls, parser):
        parser.add_argument("--threads", type=int, default=2,
                            help="threads of the one worker process (default 2)")
        parser.add_argument("--worker-arg", action="append", default=[], metavar="ARG",
                            help="an extra argument for `zasync worker` (repeatable)")

    def settings(self):
        return {
            "storage": "FileStorage (each commit fsync'd) served by a ZEO server "
                       "(ZEO.runzeo child process on 127.0.0.1) that prepare() starts",
            "producer": "this process, over ZEO, one put per transaction",
            "worker": "zasync worker --threads %d, 1 process" % self.args.threads,
            "worker_args": self.args.worker_arg,
            "jobs": "zasync.cli.examples.noop / zasync.cli.examples.stamp",
        }

    def prepare(self):
        self.dir = tempfile.mkdtemp(prefix="bench-zasync-")
        self.server = ZEOServer(os.path.join(self.dir, "Data.fs"))
        self.server.start()
        self.db = zasync.open_db(self.server.uri)
        zasync.install(self.db)
        self.tm = transaction.TransactionManager()
        self.conn = self.db.open(transaction_manager=self.tm)
        self.tm.begin()
        self.queue = zasync.get_queue(self.conn)
        self.noops = []
        self.producer_conflicts = 0
        self.status_before = self.db.storage.server_status()

    def _put(self, func, *args):
        while True:
            try:
                job = self.queue.put(func, *args)
                self.tm.commit()
                return job._p_oid
            except ConflictError:
                self.producer_conflicts += 1
                self.tm.abort()

    def enqueue_noop(self, i):
        oid = self._put(noop, i)
        self.noops.append(oid)
        return oid

    def enqueue_stamp(self):
        return self._put(stamp)

    def worker_command(self):
        return [sys.executable, "-m", "zasync", "worker", "--db", self.server.uri,
                "--threads", str(self.args.threads), "--log-level", "WARNING",
                # its own id: by default a worker keeps one in a file of the
                # current folder (here, the bench's), shared by every run
                "--id", f"bench-zasync-{os.getpid()}", *self.args.worker_arg]

    def _check_server(self):
        """Fail at once if the ZEO server is gone (e.g. run_all.sh's timeout
        signalled this process group), instead of waiting on a reconnect."""
        process = self.server.process
        if process is None or process.poll() is not None:
            raise RuntimeError("the ZEO server is no longer running")

    def stored(self, oids):
        self._check_server()
        self.tm.begin()          # a fresh snapshot: the worker's commits
        flags = completed_flags(self.conn, oids)
        self.tm.abort()
        return flags

    def value(self, oid):
        self._check_server()
        self.tm.begin()
        job = self.conn.get(oid)
        value = job.result if job.status == COMPLETED else None
        self.tm.abort()
        return value

    def diagnostics(self):
        """Every noop job read back, and the ConflictErrors the server raised."""
        facts = {"producer_conflicts": self.producer_conflicts}
        self._check_server()
        self.tm.begin()
        lost = twice = wrong = 0
        for index, oid in enumerate(self.noops):
            job = self.conn.get(oid)
            if job.status != COMPLETED:
                lost += 1
                continue
            starts = sum(1 for status, *_ in job.status_history if status == ACTIVE)
            if job.attempt_count != 1 or starts != 1:
                twice += 1
            if job.failure is not None or job.result != index:
                wrong += 1
        self.tm.abort()
        facts.update(jobs=len(self.noops), lost=lost, run_twice=twice, wrong_or_failed=wrong)
        after = self.db.storage.server_status()
        facts["server_conflicts"] = after["conflicts"] - self.status_before["conflicts"]
        facts["server_commits"] = after["commits"] - self.status_before["commits"]
        return facts

    def close(self):
        conn = getattr(self, "conn", None)
        if conn is not None:
            self.tm.abort()
            conn.close()
            self.db.close()
        server = getattr(self, "server", None)
        if server is not None:
            server.stop()
        if getattr(self, "dir", None):
            shutil.rmtree(self.dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(benchlib.main(ZasyncPeer))
