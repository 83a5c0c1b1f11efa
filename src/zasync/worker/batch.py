"""Running several short claimed jobs in one transaction of one thread.

Each job of a worker thread costs transaction boundaries besides its own
work: opening a connection, beginning, ending, and at each boundary every
connection polls the storage for invalidations, under the storage's lock,
which a FileStorage holds through each fsync.  For jobs of a millisecond,
those boundaries were most of a worker's time (py-spy: a quarter of the
samples waited for that lock).  So an agent whose recent jobs are short
gives a thread the jobs it holds ahead, up to `Agent.batch` at a time, and
the thread runs them one after the other in one transaction:

- each job runs after a savepoint; if it raises, its changes are rolled
  back to that savepoint and, once the others committed, its retry policy
  decides as for a job run alone;
- a job's outcome is written in the transaction its changes are in, so each
  job's effect and result still commit atomically, together with the
  batch's other jobs;
- if nothing in the batch wrote to the database, the results are handed to
  the dispatcher, which commits them with its next claim (as for one job);
- if the commit fails (a conflict), every job of the batch had its attempt
  fail with that error, and each is retried by its policy, alone;
- jobs that need transactions of their own (callbacks to run, waiting for
  other jobs, a cancel request, no longer this dispatcher's) run alone,
  after the batch.

Rejected: running short jobs in the dispatcher's own thread and
transaction.  A job that turns out long would stop the heartbeat, and a
claim conflicting would roll back jobs that already ran.
"""

import logging
import time

from ZODB.POSException import ConflictError

from zasync.job import clock, events, storable

from zasync.queue.claim import prefetch
from zasync.interfaces import ACTIVE, ASSIGNED

logger = logging.getLogger(__name__)


def joined(tm):
    """Whether the running transaction has anything to commit.

    ZODB connections join a transaction when an object is first changed,
    and other data managers (SQL sessions, mail) join when used; a job whose
    transaction nobody joined changed nothing.  `_resources` is private to
    `transaction`; if it is ever missing, every job counts as writing.
    """
    return bool(getattr(tm.get(), "_resources", True))


def _batchable(runner, job):
    return (job._status in (ACTIVE, ASSIGNED)
            and job.dispatcher_id == runner.dispatcher_id
            and job._wait_mode is None and not job._callbacks
            and not job._live.cancel_requested)


class _Ran:
    """What one job of a batch did."""

    __slots__ = ("oid", "job_id", "job", "began", "started", "value", "error",
                 "outcome", "log", "finished")

    def __init__(self, oid, job_id, job):
        self.oid, self.job_id, self.job = oid, job_id, job
        self.began = time.monotonic()
        # still assigned in the database: the outcome records its start
        self.started = clock.now() if job._status == ASSIGNED else None
        self.value = self.error = self.outcome = self.log = None
        # returned a value: its outcome is the batch's to store, so the
        # dispatcher need not show it as running (see `note_started`)
        self.finished = False


def _taking(tasks):
    """A function giving the next task, or None: an agent's `Batch` (which
    ends early when a job runs long, leaving the rest to other threads),
    or a plain list, in order."""
    take = getattr(tasks, "take", None)
    if take is not None:
        return take
    return iter(list(tasks) + [None]).__next__


def run_batch(runner, tm, conn, tasks):
    """Run `tasks` ((oid, job id) pairs claimed by `runner`'s dispatcher)
    in `conn`, whose transaction manager is `tm`.

    A batch from an agent (`zasync.worker.agent.Batch`) gives its jobs one at a
    time: once it ran `BATCH_SECONDS`, those not started go back to the
    agent, and while one of its jobs runs past that, an idle thread takes
    them; the jobs that ran commit without waiting for them.
    """
    tm.begin()
    jobs = {oid: runner.job(conn, oid) for oid, _ in tasks}
    prefetch(conn, list(jobs.values()))
    # Each job's live state says whether it was cancelled before it ran,
    # and its call record what to run.
    prefetch(conn, [job._live for job in jobs.values()]
             + [job._call for job in jobs.values() if job._call is not None])
    alone, ran = [], []
    take = _taking(tasks)
    while True:
        task = take()
        if task is None:
            break
        oid, job_id = task
        job = jobs[oid]
        if not _batchable(runner, job):
            alone.append((oid, job_id))
            continue
        try:
            savepoint = tm.savepoint()
        except TypeError:
            # something joined that cannot roll back a part: this one alone
            alone.append((oid, job_id))
            continue
        each = _Ran(oid, job_id, job)
        if each.started is not None:
            # Shown as started while it runs, by the dispatcher's next
            # cycle (not woken for it: most of these end first and their
            # outcome records the start).
            runner.dispatcher.note_started(oid, job_id, each.started, wake=False,
                                           ran=each)
        try:
            _call(runner, each)
        except Exception as error:
            savepoint.rollback()
            each.error = error
        else:
            each.finished = each.outcome is None
        ran.append(each)
    succeeded = [each for each in ran if each.error is None]
    if succeeded and _hand(runner, tm, succeeded):
        tm.abort()
    elif succeeded:
        _commit(runner, tm, conn, succeeded)
    else:
        tm.abort()
    for each in succeeded:
        if each.log is not None:
            each.log()
    for each in ran:
        if each.error is not None:
            outcome = runner.after_error(tm, conn, each.oid, each.job_id, each.error,
                                          each.began, each.started)
            runner.go_on(tm, conn, each.oid, each.job_id, outcome)
        elif each.outcome == "callbacks":
            runner.run_callbacks(tm, conn, each.oid)
    for oid, job_id in alone:
        runner.run(tm, conn, oid, job_id)


def _call(runner, each):
    """Run one job in the batch's transaction (raising what it raised)."""
    job = each.job
    logger.debug("dispatcher %s: job %s (%s) started in a batch, attempt %d",
                 runner.dispatcher_id, each.job_id, job.callable_name, job.attempt_count)
    kind, value = runner.execute(job, each.job_id, each.began)
    if kind != "value":
        each.outcome, each.log = runner.record_wait_or_failure(
            job._p_jar, job, kind, value, each.started, each.began)
        return
    each.value = value


def _hand(runner, tm, succeeded):
    """Hand the results to the dispatcher if the batch wrote nothing else;
    return whether it took them all."""
    if joined(tm) or any(each.outcome is not None or storable.holds_persistent(each.value)
                          for each in succeeded):
        return False
    handed = []
    last = succeeded[-1]
    for each in succeeded:
        # Woken by the last only: a dispatcher woken by the first would
        # commit it alone, and the rest in the next transaction.
        if not runner.dispatcher.hand_result(each.oid, each.job_id, each.value,
                                             each.began, each.started,
                                             wake=each is last):
            break       # the dispatcher stopped: the rest commit here
        handed.append(each)
    if len(handed) == len(succeeded):
        return True
    # Those handed are the dispatcher's now; store the others here.
    del succeeded[:len(handed)]
    return False


def _commit(runner, tm, conn, succeeded):
    """Write the outcomes into the batch's transaction and commit it; on
    failure every job's attempt failed with the commit's error."""
    txn = tm.get()
    for each in succeeded:
        if each.outcome is not None:        # waits, or failed after waiting
            continue
        job = each.job
        if each.started is not None:
            job._ensure_started(runner.dispatcher_id, each.started)
        if job._complete(result=each.value, dispatcher_id=runner.dispatcher_id):
            each.outcome = "callbacks"      # the job added one to itself
        else:
            each.outcome = "done"
            runner.file_completed(conn, job)
            events.notify_after_commit(txn, events.JobSucceeded(job))
        each.log = _success_log(runner, each)
    try:
        tm.commit()
    except Exception as error:
        tm.abort()
        (logger.info if isinstance(error, ConflictError) else logger.exception)(
            "dispatcher %s: the commit of a batch of %d job(s) failed: %s",
            runner.dispatcher_id, len(succeeded), error)
        for each in succeeded:
            each.error, each.outcome, each.log = error, None, None


def _success_log(runner, each):
    name = each.job.callable_name

    def log():
        logger.info("dispatcher %s: job %s (%s) succeeded in %.3fs", runner.dispatcher_id,
                    each.job_id, name, time.monotonic() - each.began)
    return log
