"""Running one claimed job in a worker thread, transaction by transaction.

1. The claim that handed the job to this thread already marked it active
   (start time, attempt count), in the dispatcher's transaction.
2. The job runs in its own transaction; its result, its bookkeeping and the
   changes it made to the database commit together, so a job's effect
   happens once.  A job that changed nothing in the database hands its
   result to the dispatcher instead, which commits the results of several
   such jobs with its next claim: one commit for many jobs, and still each
   job's result is all it did.  If the job raises (or its commit
   conflicts), everything it did is aborted and its retry policy decides:
   run again at once, run again later (the job is rescheduled, no thread
   sleeps) or fail.
3. Each callback runs in a transaction of its own; a last one marks the job
   completed.
"""

import datetime
import logging
import time

import transaction
from ZODB.POSException import ConflictError
from zope.interface import implementer

from zasync.worker import batch

from zasync.job import clock, context, events, local, storable, waiting, workflow
from zasync.queue.database import close_connection, open_connection
from zasync.job.failure import Failure
from zasync.interfaces import (
    ACTIVE, ASSIGNED, CALLBACKS, COMPLETED, Cancelled, IJobRunner, JobTimeoutError,
    UnstorableError,
    UnstorableResultError)
from zasync.job.job import DEFAULT_RETRY_POLICY
from zasync.queue.multidb import missing_database

logger = logging.getLogger(__name__)

_BOOKKEEPING_ATTEMPTS = 10
#: Seconds before a job handed back (see `JobRunner._hand_back`) is due again.
HAND_BACK_DELAY = 1.0
ZERO = datetime.timedelta(0)


def timed_out(job):
    return JobTimeoutError(
        f"job {job.id} ran longer than its time limit of {job.timeout:g} s")


def _in_transaction(tm):
    """Whether `tm` has a transaction under way.  Aborting one that has
    none would begin a new one only to abort it, and each makes every
    connection poll the storage for invalidations (under its lock).
    `_txn` is private to `transaction`; if it is ever missing, abort."""
    return getattr(tm, "_txn", True) is not None


def complete_handed(conn, dispatcher_id, oid, value, started, file_completed):
    """Store a handed-over result in the dispatcher's transaction; return
    the job, or None if it is no longer this dispatcher's to complete."""
    job = conn.get(oid)
    if job._status not in (ACTIVE, ASSIGNED) or job.dispatcher_id != dispatcher_id:
        return None
    if started is not None:
        job._ensure_started(dispatcher_id, started)
    if job._complete(result=value, dispatcher_id=dispatcher_id):
        # A callback was added since the job's thread looked (a job waiting
        # for this one): the next claimer runs the callbacks.
        file_completed(conn, job, history=False)
        job._queue._put_completed(job, notify=False)
    else:
        file_completed(conn, job)
    return job


def _policy(job):
    return job.retry_policy if job.retry_policy is not None else DEFAULT_RETRY_POLICY


def _bookkeeping(tm, what, job_id, change):
    """Commit `change()` in its own transaction, retrying conflicts."""
    for attempt in tm.attempts(_BOOKKEEPING_ATTEMPTS):
        with attempt:
            result = change()
    return result


@implementer(IJobRunner)
class JobRunner:
    """Runs the jobs a dispatcher claimed; one instance per dispatcher,
    called from its agents' threads.  See `IJobRunner`."""

    def __init__(self, dispatcher):
        self.dispatcher = dispatcher
        self.db = dispatcher.db
        self.dispatcher_id = dispatcher.id
        self._classes = {}      # oid -> class of the jobs handed, see job()

    def note_class(self, oid, klass):
        """Say (the dispatcher, handing a claimed job to a thread) which
        class the job `oid` is: its thread then reads its record once
        (see `job`)."""
        self._classes[oid] = klass

    def forget_classes(self):
        """Drop what `note_class` said (jobs not run: the dispatcher stops)."""
        self._classes.clear()

    def job(self, conn, oid):
        """The claimed job `oid` in `conn`, its record read once.

        `conn.get(oid)` reads the record to learn the object's class, and
        the job's activation reads it again: two loads where one serves,
        each a lookup and a read under the storage's lock (a FileStorage's
        8 us a job, of a drain's 300).  Told the class by the dispatcher
        that claimed the job (`note_class`), the ghost is made from it, as
        ZODB makes the ghost of an object a loaded record refers to.
        ZODB offers no public call for that: `Connection._reader` and its
        `load_persistent` are private (there since ZODB 3).  If they are
        ever missing, or the class was not told, `conn.get`.
        """
        klass = self._classes.pop(oid, None)
        reader = getattr(conn, "_reader", None)
        if klass is None or reader is None:
            return conn.get(oid)
        return reader.load_persistent(oid, klass)

    # -- entry point -------------------------------------------------------

    def __call__(self, tasks):
        """Run claimed jobs, (oid, job id) pairs: one alone, several in one
        transaction (see `zasync.worker.batch`)."""
        tm = transaction.TransactionManager()
        conn = open_connection(self.db, tm)
        try:
            if len(tasks) == 1:
                self.run(tm, conn, *tasks[0])
            else:
                batch.run_batch(self, tm, conn, tasks)
        except Exception:
            logger.exception("dispatcher %s: job(s) %s: the worker failed to record "
                             "what happened", self.dispatcher_id,
                             ", ".join(job_id for _, job_id in tasks))
        finally:
            if _in_transaction(tm):
                tm.abort()
            close_connection(conn)

    def _record(self, conn):
        """The dispatcher's record, looked up once per transaction of
        `conn`: a commit that stores a hundred results releases a hundred
        jobs from it (the lookup was 2 us a job, under 1% of a drain's
        CPU)."""
        txn = conn.transaction_manager.get()
        try:
            return txn.data(conn)
        except KeyError:
            pass
        from zasync.queue.database import get_queues
        record = get_queues(conn).dispatchers.get(self.dispatcher_id)
        txn.set_data(conn, record)
        return record

    def _release(self, conn, job):
        """Drop the job from the dispatcher's record (a merging set)."""
        record = self._record(conn)
        if record is not None:
            record.jobs.discard(job.id)

    def file_completed(self, conn, job, history=True):
        self._release(conn, job)
        if history and job._queue is not None:
            job._queue.history.add(job)

    def _ours(self, job):
        """Whether this dispatcher still holds the job (recovery may have
        handed it on while it ran)."""
        return (job.dispatcher_id == self.dispatcher_id
                and job._status in (ACTIVE, ASSIGNED))

    # -- the steps ---------------------------------------------------------

    def run(self, tm, conn, oid, job_id):
        tm.begin()
        job = self.job(conn, oid)
        if job.status == CALLBACKS:
            self.run_callbacks(tm, conn, oid)
            return
        if (job._status not in (ACTIVE, ASSIGNED)
                or job.dispatcher_id != self.dispatcher_id):
            logger.warning("dispatcher %s: job %s is %s for %s, not claimed by "
                           "this dispatcher; not running it", self.dispatcher_id,
                           job_id, job.status, job.dispatcher_id)
            tm.abort()
            return
        started = None
        if job._status == ASSIGNED:
            # taken ahead of a free thread: its start is recorded by the
            # transaction that stores its outcome, and meanwhile shown
            # through the live state
            started = clock.now()
            self.dispatcher.note_started(oid, job_id, started)
        # the first attempt goes on in this transaction
        outcome = self._attempt(tm, conn, oid, job_id, started, begin=False)
        self.go_on(tm, conn, oid, job_id, outcome)

    def go_on(self, tm, conn, oid, job_id, outcome):
        """After an attempt: attempt again while its policy says so, then
        run the callbacks if some are due."""
        while outcome == "again":
            outcome = self._attempt(tm, conn, oid, job_id)
        if outcome == "callbacks":
            self.run_callbacks(tm, conn, oid)

    def _attempt(self, tm, conn, oid, job_id, started=None, begin=True):
        """One attempt: 'done', 'callbacks', 'again', 'handed' or 'rescheduled'.

        `started` is the start time of a job still `ASSIGNED` in the
        database, whose start the outcome's transaction records.
        """
        began = time.monotonic()
        if begin:
            tm.begin()
        job = conn.get(oid)
        if not self._ours(job):
            tm.abort()
            return "lost"
        if job._live.cancel_requested:
            awaited = ", ".join(each.id for each in job._waiting_for)
            tm.abort()
            return self._fail(tm, conn, oid, job_id, Failure.from_exception(Cancelled(
                f"job {job_id} was cancelled while it waited for job {awaited}"
                if awaited else f"job {job_id} was cancelled before it started")),
                started=None, before=workflow.cancel_parts)
        awaited = None
        if job._wait_mode is not None:
            # What it waited for completed: it goes on (see zasync.job.workflow).
            if started is not None:
                job._ensure_started(self.dispatcher_id, started)
            awaited = workflow.resume(job)
            logger.info("dispatcher %s: job %s (%s) resumes after waiting", self.dispatcher_id,
                        job_id, job.callable_name)
        else:
            logger.debug("dispatcher %s: job %s (%s) started, attempt %d",
                         self.dispatcher_id, job_id, job.callable_name, job.attempt_count)
        try:
            kind, value = self.execute(job, job_id, began, awaited)
            return self._store(tm, conn, oid, job_id, job, kind, value, began, started)
        except Exception as error:
            tm.abort()
            return self.after_error(tm, conn, oid, job_id, error, began, started)

    def _store(self, tm, conn, oid, job_id, job, kind, value, began, started):
        """Store what an attempt gave (see `execute`) and commit; return as
        `_attempt` does.  Raises what the commit raised."""
        if kind != "value":
            return self._wait_or_fail(tm, conn, job, kind, value, started, began)
        if (not job._callbacks and not batch.joined(tm)
                and not storable.holds_persistent(value)
                and self.dispatcher.hand_result(oid, job_id, value, began, started)):
            # Nothing but the result to store: the dispatcher commits it
            # with others.  The abort only ends this read-only snapshot.
            tm.abort()
            return "handed"
        if started is not None:
            job._ensure_started(self.dispatcher_id, started)
        more = job._complete(result=value, dispatcher_id=self.dispatcher_id)
        if not more:
            self.file_completed(conn, job)
            events.notify_after_commit(tm.get(), events.JobSucceeded(job))
        tm.commit()
        logger.info("dispatcher %s: job %s (%s) succeeded in %.3fs",
                    self.dispatcher_id, job_id, job.callable_name,
                    time.monotonic() - began)
        return "callbacks" if more else "done"

    # -- for agents that call the job themselves (see IJobRunner) -----------

    def begin(self, oid, job_id):
        """See `IJobRunner`."""
        tm = transaction.TransactionManager()
        conn = open_connection(self.db, tm)
        try:
            tm.begin()
            job = conn.get(oid)
            if (job.status == CALLBACKS or not self._ours(job)
                    or job._wait_mode is not None or job._live.cancel_requested):
                return None
            started = None
            if job._status == ASSIGNED:
                started = clock.now()
                self.dispatcher.note_started(oid, job_id, started)
            return started, job.callable, tuple(job.args), dict(job.kwargs), job.timeout
        finally:
            tm.abort()
            close_connection(conn)

    def record(self, oid, job_id, began, started, value=None, error=None):
        """See `IJobRunner`."""
        tm = transaction.TransactionManager()
        conn = open_connection(self.db, tm)
        try:
            tm.begin()
            job = conn.get(oid)
            if not self._ours(job):
                tm.abort()
                return "lost"
            try:
                if error is not None:
                    raise error
                if job.timeout is not None and time.monotonic() > began + job.timeout:
                    raise timed_out(job)
                try:
                    storable.check_value(value, f"the result of job {job_id}:")
                except UnstorableError as unstorable:
                    raise UnstorableResultError(str(unstorable)) from None
                return self._store(tm, conn, oid, job_id, job, "value", value, began, started)
            except Exception as failed:
                tm.abort()
                return self.after_error(tm, conn, oid, job_id, failed, began, started)
        finally:
            if _in_transaction(tm):
                tm.abort()
            close_connection(conn)

    def execute(self, job, job_id, began, awaited=None):
        """Call the job (or take the outcome it waited for) as the running
        job of this thread, within its time limit; return ("value", a
        storable result), ("failure", failure) or ("wait", (jobs, mode)),
        see `waiting.settle`.  Raises what the job raised."""
        deadline = None if job.timeout is None else began + job.timeout
        with local.running(job, self.dispatcher.progress_writer(
                job._live._p_oid or job._p_oid, deadline)):
            with context.applied(job):
                value = awaited if awaited is not None else job._invoke()
                self.dispatcher.note_job_problem(None)     # its job loaded
                kind, value = waiting.settle(job, value, waiting.put_awaited)
        if deadline is not None and time.monotonic() > deadline:
            raise timed_out(job)
        if kind == "value":
            try:
                storable.check_value(value, f"the result of job {job_id}:")
            except UnstorableError as error:
                raise UnstorableResultError(str(error)) from None
        return kind, value

    def _wait_or_fail(self, tm, conn, job, kind, value, started, began):
        """Commit, in the job's transaction, that it waits (holding no
        thread), or that it failed with the failure of a job it waited for
        (which had its own retries).  Return 'waiting', 'done' or 'callbacks'."""
        outcome, log = self.record_wait_or_failure(conn, job, kind, value, started, began)
        tm.commit()
        log()
        return outcome

    def record_wait_or_failure(self, conn, job, kind, value, started, began):
        """Write what `_wait_or_fail` commits; return its outcome and a
        function that logs it once committed."""
        if started is not None:
            job._ensure_started(self.dispatcher_id, started)
        job_id, name = job.id, job.callable_name
        if kind == "wait":
            workflow.begin_waiting(job, *value)
            self._release(conn, job)
            awaited = ", ".join(each.id for each in value[0])
            return "waiting", lambda: logger.info(
                "dispatcher %s: job %s (%s) waits for job %s, holding no thread",
                self.dispatcher_id, job_id, name, awaited)
        more = job._complete(failure=value, dispatcher_id=self.dispatcher_id)
        if not more:
            self.file_completed(conn, job)
            events.notify_after_commit(conn.transaction_manager.get(),
                                       events.completed_event(job))
        took = time.monotonic() - began
        return "callbacks" if more else "done", lambda: logger.warning(
            "dispatcher %s: job %s (%s) failed after %.3fs (after waiting, not "
            "retried): %s", self.dispatcher_id, job_id, name, took, value)

    def after_error(self, tm, conn, oid, job_id, error, began, started=None):
        if missing_database(error) is not None:
            return self._hand_back(tm, conn, oid, job_id, error)
        failure = Failure.from_exception(error)
        tm.begin()
        job = conn.get(oid)
        attempt = job.attempt_count + (1 if job._status == ASSIGNED else 0)
        if not self._ours(job):
            tm.abort()
            logger.warning("dispatcher %s: job %s was handed on while it ran "
                           "(%s); its outcome is dropped", self.dispatcher_id,
                           job_id, failure)
            return "lost"
        if isinstance(error, (Cancelled, JobTimeoutError)):
            delay = None
        else:
            try:
                delay = _policy(job).retry_after(job, error, attempt)
            except Exception:
                logger.exception("dispatcher %s: job %s: retry policy failed; "
                                 "failing the job", self.dispatcher_id, job_id)
                delay = None
        tm.abort()
        if delay is None:
            logger.warning("dispatcher %s: job %s failed after %.3fs on attempt "
                           "%d: %s", self.dispatcher_id, job_id,
                           time.monotonic() - began, attempt, failure)
            return self._fail(tm, conn, oid, job_id, failure, started)
        if delay <= ZERO:
            logger.info("dispatcher %s: job %s: attempt %d raised %s; retrying "
                        "now", self.dispatcher_id, job_id, attempt, failure)

            def record():
                job = conn.get(oid)
                if not self._ours(job):
                    return
                job._ensure_started(self.dispatcher_id, started)
                job._record_attempt(failure)
                job._start(self.dispatcher_id)
                events.notify_after_commit(tm.get(), events.JobRetried(job, failure))
            _bookkeeping(tm, "retry", job_id, record)
            return "again"
        logger.info("dispatcher %s: job %s: attempt %d raised %s; retrying in "
                    "%s", self.dispatcher_id, job_id, attempt, failure, delay)

        def reschedule():
            job = conn.get(oid)
            if not self._ours(job):
                return
            job._ensure_started(self.dispatcher_id, started)
            job._record_attempt(failure)
            job._queue._requeue(job, clock.now() + delay)
            self._release(conn, job)
            events.notify_after_commit(tm.get(), events.JobRetried(job, failure))
        _bookkeeping(tm, "reschedule", job_id, reschedule)
        return "rescheduled"

    def _hand_back(self, tm, conn, oid, job_id, error):
        """Give back a job this worker cannot load because it refers to a
        database the process did not open: the worker's problem, not the
        job's.  It goes back to its queue, its attempt not counted, for a
        worker that opened every database (or this one, once it did), and
        the dispatcher says in its record why it cannot work."""
        def give_back():
            job = conn.get(oid)
            if not self._ours(job):
                return
            if job._status == ACTIVE and job.attempt_count and not job._wait_mode:
                job.attempt_count -= 1      # the claim counted it
            job._queue._requeue(job, clock.now() + datetime.timedelta(
                seconds=max(HAND_BACK_DELAY, self.dispatcher.poll_interval)))
            self._release(conn, job)
        _bookkeeping(tm, "hand back", job_id, give_back)
        self.dispatcher.note_job_problem(error)
        return "handed back"

    def _fail(self, tm, conn, oid, job_id, failure, started=None, before=None):
        def fail():
            job = conn.get(oid)
            if not self._ours(job):
                return False
            if before is not None:
                before(job)
            if started is not None:
                job._ensure_started(self.dispatcher_id, started)
            more = job._complete(failure=failure, dispatcher_id=self.dispatcher_id)
            if not more:
                self.file_completed(conn, job)
                events.notify_after_commit(tm.get(), events.completed_event(job))
            return more
        return "callbacks" if _bookkeeping(tm, "fail", job_id, fail) else "done"

    # -- callbacks ---------------------------------------------------------

    def run_callbacks(self, tm, conn, oid):
        """Run the job's callbacks, each in its own transaction, then mark
        the job completed."""
        tm.begin()
        job = conn.get(oid)
        job_id = job.id
        self._run_callbacks_of(tm, conn, oid)

        def finish():
            job = conn.get(oid)
            job._finish_callbacks(self.dispatcher_id)
            self.file_completed(conn, job)
            events.notify_after_commit(tm.get(), events.completed_event(job))
        _bookkeeping(tm, "finish", job_id, finish)
        logger.info("dispatcher %s: job %s completed with its callbacks",
                    self.dispatcher_id, job_id)

    def _run_callbacks_of(self, tm, conn, parent_oid):
        index = 0
        while True:
            tm.begin()
            parent = conn.get(parent_oid)
            callbacks = parent._callbacks
            if index >= len(callbacks):
                tm.abort()
                return
            callback = callbacks[index]
            index += 1
            if callback.status == COMPLETED:
                tm.abort()
                continue
            if callback._p_oid is None:   # added but not committed yet
                tm.abort()
                continue
            more = self._run_callback(tm, conn, parent_oid, callback._p_oid)
            if more:
                self._run_callbacks_of(tm, conn, callback._p_oid)
                _bookkeeping(tm, "finish callback", callback.id, lambda cb_oid=callback._p_oid:
                             conn.get(cb_oid)._finish_callbacks(self.dispatcher_id))

    def _run_callback(self, tm, conn, parent_oid, oid):
        """Run one callback; return whether it has callbacks of its own to run."""
        attempt = 0
        while True:
            attempt += 1
            tm.begin()
            parent = conn.get(parent_oid)
            callback = conn.get(oid)
            outcome = parent._outcome()
            if not callback._accepts_outcome(outcome):
                callback.skipped = True
                callback.ended_at = clock.now()
                callback._set_status(COMPLETED, callback.ended_at, self.dispatcher_id)
                tm.commit()
                return False
            callback_id, callback_name, parent_id = callback.id, callback.callable_name, parent.id
            callback._start(self.dispatcher_id)
            try:
                with local.running(callback, self.dispatcher.progress_writer(
                        callback._live._p_oid or callback._p_oid)):
                    with context.applied(callback):
                        value = callback._invoke(outcome)
                storable.check_value(value, f"the result of callback {callback.id}:")
                more = callback._complete(result=value, dispatcher_id=self.dispatcher_id)
                tm.commit()
                return more
            except Exception as error:
                tm.abort()
                failure = Failure.from_exception(error)
                retry = (isinstance(error, ConflictError)
                         and attempt < _BOOKKEEPING_ATTEMPTS)
                if retry:
                    continue
                logger.warning("dispatcher %s: callback %s (%s) of job %s failed: %s",
                               self.dispatcher_id, callback_id, callback_name,
                               parent_id, failure)

                def fail():
                    callback = conn.get(oid)
                    callback._start(self.dispatcher_id)
                    return callback._complete(failure=failure,
                                              dispatcher_id=self.dispatcher_id)
                return _bookkeeping(tm, "fail callback", oid, fail)
