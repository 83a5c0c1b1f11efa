"""Process agents: each job runs in a child process of its own.

For CPU-bound work (no GIL shared with the other jobs) and for hard limits:
a child that overruns its job's `timeout`, or does not stop within a grace
period after its job was cancelled, is terminated.  The child opens the
database by URI (so the storage must be one several processes can open:
ZEO or RelStorage) and runs the job exactly as a thread would, committing
its outcome itself.  A child that dies without committing an outcome counts
as an interruption of its job, which the job's retry policy handles.

The parent keeps one thread per slot, which starts the child, watches it
and, when it is gone, checks what it left.
"""

import logging
import os
import select
import signal
import subprocess
import sys
import time

import transaction
from zope.interface import implementer

from zasync.worker import recovery
from zasync.worker.agent import Agent
from zasync.queue.database import close_connection, open_connection
from zasync.job.failure import Failure
from zasync.interfaces import (
    ACTIVE, ASSIGNED, CALLBACKS, Cancelled, ConfigurationError, IAgent,
    JobTimeoutError)

logger = logging.getLogger(__name__)

_WATCH_INTERVAL = 0.1


@implementer(IAgent)
class ProcessAgent:
    """An agent whose `size` slots each run jobs in child processes.

    `uri` is the database's URI for the children, or, for a
    multi-database, a `zasync.queue.multidb.Databases` (its `to_argument()` string
    will do too) naming every database of it; `grace` the seconds a child
    gets between SIGTERM and SIGKILL.

    Each slot is a thread that starts a child process and waits for it.
    The threads, and the count of what they hold, are a thread agent's
    (`zasync.Agent`) used through `IAgent` alone: this class provides the
    interface itself, and reaches no further into that agent.
    """

    def __init__(self, size, uri, filter=None, name="processes", prefetch=0,
                 grace=5.0):
        # batch=1: each job has a child process of its own
        self._slots = Agent(size, filter=filter, name=name, prefetch=prefetch, batch=1)
        if hasattr(uri, "to_argument"):
            uri = uri.to_argument()
        if not isinstance(uri, str) or "://" not in uri and not uri.startswith("{"):
            raise ConfigurationError(
                f"uri={uri!r}: child processes need a database URI they can "
                f"open (zeo://..., postgres://...)")
        if isinstance(grace, bool) or not isinstance(grace, (int, float)) or grace < 0:
            raise ConfigurationError(f"grace={grace!r}: expected seconds >= 0")
        self.uri = uri
        self.grace = float(grace)

    def __repr__(self):
        return f"<zasync ProcessAgent {self.name!r} size={self.size}>"

    # -- IAgent, through the slots -------------------------------------------

    name = property(lambda self: self._slots.name)
    size = property(lambda self: self._slots.size)
    filter = property(lambda self: self._slots.filter)
    batch = property(lambda self: self._slots.batch)
    free = property(lambda self: self._slots.free)
    room = property(lambda self: self._slots.room)
    ahead = property(lambda self: self._slots.ahead)
    short = property(lambda self: self._slots.short)
    running = property(lambda self: self._slots.running)

    @property
    def on_free(self):
        return self._slots.on_free

    @on_free.setter
    def on_free(self, callback):
        self._slots.on_free = callback

    def accepts(self, job):
        """See `IAgent`."""
        return self._slots.accepts(job)

    def start(self, run, thread_name):
        """See `IAgent`; `run` is the dispatcher's runner, whose
        dispatcher the children stand in for."""
        dispatcher = run.dispatcher
        self._slots.start(lambda tasks: self._run_child(dispatcher, *tasks[0]), thread_name)

    def submit(self, oid, job_id, ahead=False):
        """See `IAgent`."""
        self._slots.submit(oid, job_id, ahead=ahead)

    def drop_waiting(self):
        """See `IAgent`."""
        return self._slots.drop_waiting()

    def wait_idle(self, timeout=None):
        """See `IAgent`."""
        return self._slots.wait_idle(timeout)

    def stop(self):
        """See `IAgent`."""
        self._slots.stop()

    # -- one job -------------------------------------------------------------

    def _run_child(self, dispatcher, oid, job_id):
        # The child writes to this pipe when its job begins: a job's time
        # limit counts from there, not from the start of a new interpreter
        # (most of a second), as it does in a thread.
        began_read, began_write = os.pipe()
        try:
            command = [sys.executable, "-m", "zasync.worker.child", self.uri,
                       oid.hex(), dispatcher.id, str(began_write)]
            try:
                # In a session of its own: a Ctrl-C at the worker's terminal
                # must not reach the child, which gets the worker's grace.
                child = subprocess.Popen(command, stdin=subprocess.DEVNULL,
                                         pass_fds=(began_write,),
                                         start_new_session=True)
            finally:
                os.close(began_write)
            logger.info("dispatcher %s: job %s runs in child process %d",
                        dispatcher.id, job_id, child.pid)
            why = self._watch(dispatcher, child, oid, job_id, began_read)
        finally:
            os.close(began_read)
        self._settle(dispatcher, oid, job_id, child.returncode, why)

    def _watch(self, dispatcher, child, oid, job_id, began_fd):
        """Wait for the child; terminate it on cancellation or timeout
        (counted from when `began_fd` becomes readable).
        Return None, 'cancelled' or 'timeout'."""
        tm = transaction.TransactionManager()
        conn = open_connection(dispatcher.db, tm)
        try:
            tm.begin()
            job = conn.get(oid)
            timeout = job.timeout
            # A child that runs the callbacks of a job already completed
            # (cancelled or timed out, perhaps) is not held to the job's
            # cancel request or time limit: it would be terminated again
            # and again, and the callbacks would never run.
            callbacks = job.status == CALLBACKS
            tm.abort()
            began = None
            why = None
            cancel_seen = None
            while child.poll() is None:
                time.sleep(_WATCH_INTERVAL)
                if why is not None or callbacks:
                    continue
                if began is None and select.select([began_fd], [], [], 0)[0]:
                    began = time.monotonic()
                if (timeout is not None and began is not None
                        and time.monotonic() - began > timeout):
                    why = "timeout"
                elif cancel_seen is None:
                    tm.begin()
                    if conn.get(oid)._live.cancel_requested:
                        # The job may stop by itself at its next progress()
                        # or check_cancelled(); it gets the grace to do so.
                        cancel_seen = time.monotonic()
                    tm.abort()
                elif time.monotonic() - cancel_seen > self.grace:
                    why = "cancelled"
                if why is not None:
                    logger.warning("dispatcher %s: job %s %s; terminating child %d",
                                   dispatcher.id, job_id,
                                   "ran past its time limit" if why == "timeout"
                                   else "was cancelled", child.pid)
                    _terminate(child, self.grace)
            return why
        finally:
            tm.abort()
            close_connection(conn)

    def _settle(self, dispatcher, oid, job_id, returncode, why):
        """After the child: if it left the job unfinished, fail or hand on
        the job according to why it ended."""
        tm = transaction.TransactionManager()
        conn = open_connection(dispatcher.db, tm)
        try:
            for attempt in tm.attempts(10):
                with attempt:
                    job = conn.get(oid)
                    if job.dispatcher_id != dispatcher.id or job._status not in (
                            ACTIVE, ASSIGNED):
                        return          # the child finished it
                    from zasync.queue.database import get_queues
                    record = get_queues(conn).dispatchers.get(dispatcher.id)
                    if why == "timeout":
                        error = JobTimeoutError(
                            f"job {job_id} ran longer than its time limit of "
                            f"{job.timeout:g} s; its process was terminated")
                    elif why == "cancelled":
                        error = Cancelled(f"job {job_id} was cancelled while it "
                                          f"ran; its process was terminated")
                    else:
                        error = None
                    if error is None:
                        recovery.recover_job(
                            job, dispatcher.id, f"its process ended with status "
                            f"{returncode} before the job completed", tm.get())
                    else:
                        job._ensure_started(dispatcher.id, job._started_ahead())
                        if job._complete(failure=Failure.from_exception(error),
                                         dispatcher_id=dispatcher.id):
                            job._queue._put_completed(job)
                        else:
                            job._queue.history.add(job)
                    if record is not None:
                        record.jobs.discard(job_id)
        finally:
            tm.abort()
            close_connection(conn)


def _terminate(child, grace):
    try:
        child.send_signal(signal.SIGTERM)
        child.wait(grace)
    except subprocess.TimeoutExpired:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    except ProcessLookupError:
        pass
