"""The child process of a `ProcessAgent`: runs one job, then exits.

    python -m zasync.worker.child URI OID_HEX DISPATCHER_ID [BEGAN_FD]

It opens the database by URI (or the databases of a multi-database, which
URI then names as `zasync.queue.multidb.Databases.to_argument` does) and runs the
job as the dispatcher's thread would (the same `JobRunner`), committing the
outcome itself; progress is
written from here.  Its exit status says only whether it got that far.
Just before the job runs, it writes a byte to the file descriptor
BEGAN_FD, if given: the parent counts the job's time limit from there.
First it imports the modules named in ZASYNC_APP (space-separated), as
`zasync -A MODULE worker` did.
"""

import importlib
import logging
import os
import signal
import sys
import threading

import transaction

from zasync.queue.database import close_connection, open_connection


class _ChildDispatcher:
    """What a `JobRunner` needs of its dispatcher, inside the child."""

    def __init__(self, db, dispatcher_id):
        self.db = db
        self.id = dispatcher_id
        self._lock = threading.Lock()
        self._tm = transaction.TransactionManager()
        self._conn = open_connection(db, self._tm)

    poll_interval = 0.5

    def hand_result(self, *args, **kwargs):
        return False            # no group commit here: commit it ourselves

    def note_job_problem(self, error):
        pass                    # the job handed back says so to the next claim

    def note_started(self, *args):
        pass                    # the outcome's transaction records the start

    def progress_writer(self, live_oid, deadline=None):
        from zasync.worker.dispatcher import write_progress
        import time

        def write(fraction, message):
            if deadline is not None and time.monotonic() > deadline:
                from zasync.job.local import current_job
                from zasync.worker.runner import timed_out
                raise timed_out(current_job())
            with self._lock:
                return write_progress(self._tm, self._conn, live_oid, fraction, message)
        return write


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) not in (3, 4):
        sys.stderr.write("usage: python -m zasync.worker.child URI OID_HEX DISPATCHER_ID "
                         "[BEGAN_FD]\n")
        return 2
    uri, oid_hex, dispatcher_id = argv[:3]
    began_fd = int(argv[3]) if len(argv) == 4 else None
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s [child] %(message)s")
    # SIGTERM from the parent: end like an interruption, without cleanup
    # that could commit half a job.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    from zasync.queue.database import close_databases
    from zasync.queue.multidb import Databases
    from zasync.worker.runner import JobRunner
    # The modules the worker imported at start (zasync -A MODULE worker);
    # it checked that they import.
    for name in os.environ.get("ZASYNC_APP", "").split():
        importlib.import_module(name)
    db = Databases.from_argument(uri).open()
    try:
        runner = JobRunner(_ChildDispatcher(db, dispatcher_id))
        oid = bytes.fromhex(oid_hex)
        tm = transaction.TransactionManager()
        conn = open_connection(db, tm)
        tm.begin()
        job_id = conn.get(oid).id
        tm.abort()
        close_connection(conn)
        if began_fd is not None:
            os.write(began_fd, b"1")
            os.close(began_fd)
        runner([(oid, job_id)])
    finally:
        close_databases(db)
    return 0


if __name__ == "__main__":
    sys.exit(main())
