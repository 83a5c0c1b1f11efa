"""The contracts of zasync: jobs, queues, workers, retry policies, failures,
lifecycle events, the status values and the exception tree.

No behaviour lives here.  Each of the three components (job, queue, workers)
is a black box to the others: code holding an `IJob` must not assume that an
`IQueue` runs it, and a queue must not assume which `IDispatcher` claims from
it.
"""

import transaction.interfaces
from zope.interface import Attribute, Interface

# -- statuses ---------------------------------------------------------------

NEW = "new"                # not yet in a queue
PENDING = "pending"        # in a queue, waiting for its time or a worker
ASSIGNED = "assigned"      # claimed by an agent, not yet started
ACTIVE = "active"          # running
CALLBACKS = "callbacks"    # result stored, callbacks running
COMPLETED = "completed"    # done: succeeded or failed

STATUSES = (NEW, PENDING, ASSIGNED, ACTIVE, CALLBACKS, COMPLETED)

# The simpler vocabulary of editors' tools and JSON clients.
SIMPLE_PENDING = "pending"
SIMPLE_STARTED = "started"
SIMPLE_SUCCESS = "success"
SIMPLE_FAILURE = "failure"


# -- exceptions -------------------------------------------------------------

class ZasyncError(Exception):
    """Raised for every error that zasync itself reports."""


class ConfigurationError(ZasyncError, ValueError):
    """Raised when a call receives a value it cannot use."""


class UnstorableError(ConfigurationError):
    """Raised when a callable or argument cannot be stored in the database
    and found again by a worker."""


class NaiveDatetimeError(ConfigurationError):
    """Raised when a datetime without a timezone is given as a time."""


class UnknownQueueError(ZasyncError, KeyError):
    """Raised when a queue name is not installed in the database."""

    def __str__(self):
        # KeyError would repr() the message; show it as written.
        return str(self.args[0]) if self.args else ""


class NotInstalledError(ZasyncError):
    """Raised when the database has no zasync queues installed."""


class DatabaseUnavailableError(ZasyncError):
    """Raised when a database cannot be opened now: no ZEO server answers
    at its address, or another process has its FileStorage open."""


class JobStateError(ZasyncError):
    """Raised when a job is asked to do what its status does not allow."""


class AlreadyQueuedError(JobStateError):
    """Raised when a job that is already in a queue is put again."""


class AlreadyCompletedError(JobStateError):
    """Raised when a completed job is called again."""


class NotPendingError(JobStateError):
    """Raised when a job that is not pending is removed from a queue."""


class UnknownScheduleError(ZasyncError, KeyError):
    """Raised when a schedule name is not defined in a queue."""

    def __str__(self):
        return str(self.args[0]) if self.args else ""


class DuplicateScheduleError(ConfigurationError):
    """Raised when a schedule is given a name another schedule of the queue has."""


class NotInJobError(ZasyncError):
    """Raised when job-only calls such as `progress` run outside a job."""


class WaitTimeoutError(ZasyncError, TimeoutError):
    """Raised when `wait_for` gives up before the job completed."""


class DispatcherError(ZasyncError):
    """Raised when a dispatcher cannot start or stop as asked."""


class DispatcherIdInUseError(DispatcherError):
    """Raised when a dispatcher starts under an id a live process runs under."""


class TransientZasyncError(ZasyncError, transaction.interfaces.TransientError):
    """Raised for a passing condition; retrying the transaction may succeed."""


class Cancelled(ZasyncError):
    """Signals that a job was cancelled; a cancelled job fails with it.

    Not named ...Error: it is control flow, raised inside a running job
    by `check_cancelled` and `progress` to stop it.
    """


class JobTimeoutError(ZasyncError):
    """Raised (and recorded as the failure) when a job was not started by
    its `begin_by` deadline, or ran past its time limit."""


class InterruptedJobError(ZasyncError):
    """Recorded as the failure of a job whose worker died while it ran and
    whose retry policy gave up."""


class MissingCodeError(ZasyncError):
    """Raised (and recorded as the job's failure) when a worker cannot
    import the callable of a job, or the class of one of its arguments: it
    loads only as ZODB's placeholder for missing code.  The default retry
    policy tries again after a growing delay, as a later deploy may bring
    the code."""


class UnstorableResultError(ZasyncError):
    """Recorded as the failure of a job whose result cannot be stored."""


class GroupFailedError(ZasyncError):
    """Recorded as the failure of a group without postprocess whose parts failed."""


class UnservedQueueWarning(ZasyncError, UserWarning):
    """Warned when a job is put into a queue that none of the queues this
    process's start-up configuration serves (`zasync.integration.subscriber.configure`,
    the ZCML policies and directive): no dispatcher configured here will
    run it."""


# -- the job ----------------------------------------------------------------

class IFailure(Interface):
    """What is left of an exception that ended a job: text, no frames and
    no live objects, so that it can be stored and shown anywhere."""

    type = Attribute(
        "Dotted name of the exception class, e.g. 'zasync.interfaces.Cancelled'; "
        "builtins are not prefixed: 'ValueError'.")
    type_name = Attribute("The exception class's own name, e.g. 'ValueError'.")
    message = Attribute("str() of the exception.")
    traceback = Attribute("The whole formatted traceback, as text.")
    time = Attribute("Aware UTC datetime at which the failure was recorded.")

    def check(*exception_types):
        """Return the first of the given classes (or dotted names) that
        the failure's exception was an instance of, else None."""


class IJob(Interface):
    """A persistent deferred call.

    Calling the job runs it.  A job knows nothing of queues and workers;
    a queue and its workers use the same methods anyone may use.
    """

    id = Attribute("A stable string, safe in URLs and on the command line.")
    callable = Attribute("What the job calls.")
    args = Attribute("Positional arguments (a tuple).")
    kwargs = Attribute("Keyword arguments (a dict).")
    status = Attribute("One of `STATUSES`.")
    status_history = Attribute(
        "A list of (status, aware UTC datetime, dispatcher id or None), "
        "oldest first.")
    result = Attribute("The callable's return value once succeeded; else None.")
    failure = Attribute("An `IFailure` once failed; else None.")
    succeeded = Attribute("True once completed without failure.")
    failed = Attribute("True once completed with a failure.")
    progress = Attribute("A float in [0, 1]: 0 at start, 1 at completion.")
    progress_message = Attribute("The last message given with progress, or None.")
    annotations = Attribute("A persistent mapping for live information.")
    queue = Attribute("The queue the job is in or ran from, or None.")
    queue_name = Attribute("That queue's name, or None.")
    callable_name = Attribute("A dotted name for the callable, for display.")
    args_summary = Attribute(
        "The arguments as a short text (200 characters at most), read "
        "without loading them; None for a job stored before it was kept.")
    priority = Attribute("An int; higher runs first among due jobs.")
    begin_after = Attribute("Aware UTC datetime before which it must not start.")
    begin_by = Attribute(
        "A timedelta, or None: a job not started by begin_after + begin_by "
        "fails with a `JobTimeoutError`.")
    retry_policy = Attribute("The `IRetryPolicy` that decides about failures.")
    attempts = Attribute(
        "A list of `IFailure`, one for each failed attempt that was retried.")
    attempt_count = Attribute("How many times the job was started.")
    created_at = Attribute("Aware UTC datetime of creation.")
    started_at = Attribute("Aware UTC datetime of the last start, or None.")
    ended_at = Attribute("Aware UTC datetime of completion, or None.")
    duration = Attribute("ended_at - started_at in seconds, or None.")
    dispatcher_id = Attribute("Id of the dispatcher holding the job, or None.")
    callbacks = Attribute("The callback jobs, in the order they were added.")
    quotas = Attribute("Names of the quotas the job counts against (a tuple).")
    timeout = Attribute("Seconds a run may take before it fails, or None.")
    dismissed = Attribute("True once an operator dismissed the job's failure.")
    key = Attribute(
        "The unique key it was put with (a str), or None; see `IQueue.put`.")
    waiting_for = Attribute(
        "The jobs an active job waits for, without holding a worker, since "
        "its callable returned a job (or a group's step waits for parts); "
        "else an empty list.")
    group = Attribute(
        "For a part of a `serial` or `parallel` group, the group's job; "
        "else None.")

    def __call__():
        """Run the callable now, in the caller's transaction, record its
        result or failure and run the callbacks.  Return the result, or
        the `IFailure`.  A completed job raises `AlreadyCompletedError`.

        If the callable returns a job (or is a group), what it waits for is
        run inline too, since a direct call cannot wait without blocking:
        new and pending jobs are called, and a job running elsewhere is an
        error (`JobStateError`)."""

    def add_callback(callback):
        """Add a callable (or an `IJob`) that receives the job's result, or
        its `IFailure`, once the job completes, in its own transaction.
        Added to a completed job, it runs at once.  Return the callback job."""

    def add_callbacks(success=None, failure=None):
        """Add a callback for success (receives the result) and one for
        failure (receives the `IFailure`); either may be None.  Return the
        callback jobs added, as a tuple."""

    def cancel():
        """Cancel the job.  A pending job is removed from its queue and
        completes as failed with `Cancelled`.  A job that waits for others
        cancels them, and completes as cancelled once they did.  The commit
        may raise ConflictError if a worker claimed the job meanwhile: retry
        the transaction (`transaction.TransactionManager.attempts`)."""


class IRetryPolicy(Interface):
    """Decides what happens to a job whose attempt raised."""

    def retry_after(job, error, attempt):
        """Return None to fail the job now, or a `datetime.timedelta` (zero
        or more) after which to run the job again.

        `error` is the exception of the attempt numbered `attempt` (the first
        is 1).  A zero delay runs the job again at once in the same worker;
        a positive one reschedules the job, so no worker thread sleeps.
        """

    def interrupted(job, attempt):
        """Like `retry_after`, for a job whose worker died while it ran."""


# -- the queue --------------------------------------------------------------

class IQueue(Interface):
    """A persistent queue of jobs, in due order: higher priority first, then
    earlier due time.  Absorbs concurrent puts without conflicts reaching
    the caller, and hands jobs to whoever claims them."""

    name = Attribute("The queue's name; '' for the default queue.")

    def put(job, *args, **kwargs):
        """Add a job (or a callable, which is wrapped in a job with `args`
        and `kwargs`) in the caller's transaction, and return the job.

        The keyword arguments named `begin_after`, `begin_by`,
        `retry_policy`, `priority`, `quotas`, `timeout` and `key` are the
        queue's options; any other goes to the callable:
        ``put(send_report, "Q4", parts=20, priority=5)`` calls
        ``send_report("Q4", parts=20)`` with priority 5.  A callable that
        takes a parameter named like an option (``put(f, priority=5)``
        where ``f(priority)``) is refused with `ConfigurationError`, as it
        is unclear which is meant: give its arguments in a `Job`,
        ``put(Job(f, priority="high"), priority=5)``.  A job is put with
        options only (its arguments are in it).

        Nothing else is written: if the transaction aborts, the job never
        existed.  `begin_after` is an aware datetime, `begin_by` a
        non-negative timedelta, `quotas` names of quotas defined with
        `set_quota`, `timeout` the seconds (or a timedelta) a run may take.

        `key`, a non-empty str, makes the job unique: while a job put with
        the same key is pending, assigned or active (until its outcome is
        stored), `put` adds nothing, writes nothing and returns that job.
        Two transactions putting one key at once cannot both commit: the
        later raises ConflictError, and its retry returns the first's job.
        """

    def get_by_key(key, default=None):
        """The job holding `key` (put with it and not yet completed), or
        `default`."""

    def retry(job):
        """Put a failed job back to run again now.  A job put with a key
        takes its key again, or raises `JobStateError` if another job
        holds it."""

    schedules = Attribute("Mapping of name to `ISchedule`, sorted by name.")

    def schedule(callable, *args, every=None, cron=None, name=None,
                 catch_up="one", start=None, priority=0, retry_policy=None,
                 **kwargs):
        """Define a recurring job calling `callable(*args, **kwargs)` every
        `every` (a positive timedelta) or at the times of `cron` (a cron
        expression, in UTC), and return its `ISchedule`.  See `ISchedule`
        for the runs and the `catch_up` policies."""

    def unschedule(name):
        """Remove the schedule `name` and cancel its pending run; raise
        `UnknownScheduleError` if there is none."""

    def set_quota(name, size):
        """Define a quota (or change its size, also while workers run): at
        most `size` jobs naming it are held by workers at once."""

    def dismiss(job):
        """Take a failed job off the list of failures to look at."""

    def failed():
        """Failed jobs not yet dismissed, newest first."""

    def remove(job):
        """Take a pending job out of the queue; it goes back to `NEW`."""

    def get(job_id, default=None):
        """The job with this id that the queue holds or held, or `default`."""

    def __len__():
        """The number of pending jobs."""

    def __iter__():
        """The pending jobs, in the order they would be claimed if all
        were due."""

    def claim(dispatcher_id, count=1, accept=None, now=None):
        """Mark up to `count` due jobs that `accept(job)` agrees to take
        (all, when None) as assigned to the dispatcher and return them,
        in due order.  The caller commits; two claimers conflict rather
        than both get a job.  While several running dispatchers serve it,
        each takes the jobs of its share of the pending lanes first among
        those of the best priority due, so that claims made at once take
        different jobs: due order then holds within each lane."""


class ISchedule(Interface):
    """A recurring job of one queue.

    Each run (an *occurrence*) is an ordinary job of the queue, put with
    `begin_after` set to its time.  When it completes, a callback (in its
    own transaction, after the result is stored) puts the next occurrence:
    a schedule has one occurrence waiting or running at a time, so however
    many workers serve the queue, each occurrence runs once and runs never
    overlap.

    When occurrences are missed (no worker ran for several periods, or a
    run took longer than the period), `catch_up` decides:

    - ``"one"`` (the default): the late occurrence runs once, then the
      next occurrence still in the future is scheduled; the occurrences
      passed over meanwhile are counted in `skipped`.
    - ``"all"``: every missed occurrence runs, one after another, until
      the schedule is on time again.
    - ``"none"``: an occurrence that starts late (at or after the time of
      the occurrence that follows it) is skipped: it completes without
      calling the callable; then the next future occurrence is scheduled.
      The late one and those passed over are counted in `skipped`.
    """

    name = Attribute("Unique in its queue.")
    callable = Attribute("What each occurrence calls.")
    args = Attribute("Positional arguments (a tuple).")
    kwargs = Attribute("Keyword arguments (a dict).")
    callable_name = Attribute("A dotted name for the callable, for display.")
    every = Attribute("The period (a timedelta), or None for a cron schedule.")
    cron = Attribute("The cron expression (UTC), or None.")
    catch_up = Attribute("'one', 'all' or 'none'.")
    priority = Attribute("The priority of the occurrences' jobs.")
    retry_policy = Attribute("The occurrences' `IRetryPolicy`, or None.")
    queue = Attribute("The queue it belongs to, or None once removed.")
    created_at = Attribute("Aware UTC datetime of creation.")
    next_at = Attribute("Time of the occurrence waiting or running, or None.")
    next_job = Attribute("That occurrence's `IJob`, or None.")
    last_job = Attribute("The last occurrence that completed, or None.")
    last_at = Attribute("The time of that occurrence, or None.")
    runs = Attribute("How many occurrences ran (succeeded or failed).")
    skipped = Attribute("How many occurrences were passed over or skipped.")

    def next_time(after):
        """The first occurrence time strictly after the aware datetime
        `after`."""

    stalled = Attribute(
        "True if no occurrence waits or runs: the callback that puts the "
        "next one failed (it is retried on conflicts, so this is rare).")

    def resume():
        """Put the next future occurrence of a stalled schedule and return
        its job; None (and nothing written) if it is not stalled."""

    def remove():
        """Remove the schedule from its queue and cancel its pending
        occurrence (see `IQueue.unschedule`)."""


class IQueues(Interface):
    """The container of named queues in a database, with the records of the
    dispatchers that serve them."""

    def __getitem__(name):
        """The queue of this name, or `UnknownQueueError`."""

    def get(name, default=None):
        """The queue of this name, or `default`."""

    def keys():
        """The queue names, sorted."""

    def __contains__(name):
        """Whether a queue of this name exists."""

    def __iter__():
        """The queue names, sorted."""

    def __len__():
        """The number of queues."""

    def add(name):
        """Create the queue `name` if missing; return it."""

    def find_job(job_id, default=None):
        """The job of this id in any queue, or `default`."""

    dispatchers = Attribute("Mapping of dispatcher id to `IDispatcherRecord`.")


class IDispatcherRecord(Interface):
    """What a queue keeps of a dispatcher that claims from it."""

    id = Attribute("The dispatcher's id.")
    started_at = Attribute("Aware UTC datetime the dispatcher last started.")
    last_ping = Attribute("Aware UTC datetime of the last heartbeat.")
    stopped_at = Attribute("Aware UTC datetime of a clean stop, or None.")
    jobs = Attribute("The jobs the dispatcher holds (assigned or running).")
    info = Attribute("A dict: host, pid, threads and other descriptions.")
    claim_error = Attribute(
        "None, or while the dispatcher's claims fail, why (the exception's "
        "type and message), e.g. a multi-database it did not open whole.")
    claim_error_at = Attribute(
        "Aware UTC datetime the claim error was last recorded, or None.")


# -- the workers ------------------------------------------------------------

class IJobRunner(Interface):
    """What a dispatcher gives its agents to run the jobs it claimed for
    them (`IAgent.start`): it opens its own connection and transaction,
    runs each job as the running job of the calling thread and records its
    outcome, so an agent needs no more than to call it."""

    dispatcher = Attribute("The `IDispatcher` whose claimed jobs it runs.")
    db = Attribute("The dispatcher's database.")
    dispatcher_id = Attribute("The dispatcher's id.")

    def __call__(tasks):
        """Run claimed jobs, a list of (oid, job id) pairs, in the calling
        thread: one alone, several in one transaction.  Returns when their
        outcomes are recorded (or handed to the dispatcher to commit);
        a failure of the worker itself is logged, not raised."""

    def begin(oid, job_id):
        """For an agent that calls a job itself (an ``async def`` job on
        its event loop, say): note that the claimed job starts and return
        ``(started, callable, args, kwargs, timeout)`` to call it with, or
        None when the job must go through ``run([(oid, job_id)])`` instead
        (its callbacks are due, it resumes after waiting, it was cancelled
        or is no longer this dispatcher's).  Commits nothing; the call runs
        in no transaction of zasync's."""

    def record(oid, job_id, began, started, value=None, error=None):
        """Record what calling the job gave, its `value` or the `error` it
        raised, for a job `begin` handed out (`began`: `time.monotonic()`
        before `begin`; `started`: what `begin` returned), as `run` would
        have: the result, or the error through the job's retry policy.
        Return 'again' (call the job again, after `begin`), 'callbacks'
        (let ``run([(oid, job_id)])`` run them) or another word for done."""


class IAgent(Interface):
    """Claims jobs for a dispatcher by its own load, and runs them.

    The whole contract between a dispatcher and a worker: the dispatcher
    asks `free`, `room` and `ahead` before each claim, `accepts` for each
    job, hands it the jobs it claimed with `submit`, and stops it with
    `drop_waiting`, `wait_idle` and `stop`.  Thread agents
    (`zasync.Agent`) and process agents
    (`zasync.worker.process.ProcessAgent`) implement it separately; any
    object that provides it can serve a dispatcher (docs/internals.rst,
    "Writing an agent").

    One attribute is optional, so that agents written before it still
    serve: `short`, whether the agent's recent jobs were short.  Below a
    backlog the dispatcher then still takes some jobs ahead of its slots
    (holding ahead no more than stay pending beyond two per slot); an
    agent without it counts as running long jobs."""

    name = Attribute("The agent's name, unique within its dispatcher.")
    size = Attribute("How many jobs it runs at once.")
    filter = Attribute("None, or a callable job -> bool choosing what it takes.")
    batch = Attribute(
        "How many short jobs claimed ahead one thread runs in one transaction "
        "(1: each in its own).")
    free = Attribute("How many more jobs it can take now.")
    room = Attribute(
        "How many more jobs it may hold now, counting those it takes ahead "
        "of a free slot under a backlog (at least `free`).")
    ahead = Attribute(
        "How many jobs beyond its free slots it takes under a backlog (0: "
        "never more than `free`).")
    running = Attribute("The ids of the jobs it holds now.")
    on_free = Attribute(
        "None, or a callable (no arguments) the agent calls each time a slot "
        "frees; the dispatcher sets it to its `wake` before `start`.")

    def accepts(job):
        """Whether the agent takes this job (its filter agrees)."""

    def start(run, thread_name):
        """Start running jobs: from now on each job `submit` hands over is
        run by calling `run` (an `IJobRunner`) with ``[(oid, job_id)]`` (or
        several pairs, to run in one transaction).  `thread_name` prefixes
        the names of the threads it starts."""

    def submit(oid, job_id, ahead=False):
        """Take a job the dispatcher claimed for it (and committed as
        assigned to the dispatcher); `ahead` says it was taken ahead of a
        free slot and may wait for one.  Counted in `running` at once."""

    def drop_waiting():
        """Forget the jobs submitted that have not begun to run; return
        their ids (the dispatcher puts them back in their queues)."""

    def wait_idle(timeout=None):
        """Wait until no job runs; return whether that happened within
        `timeout` seconds (None: no limit)."""

    def stop():
        """Stop taking jobs; let those running finish on their own."""


class IDispatcher(Interface):
    """One per process: registers in the database, claims jobs for its
    agents as they have room, and runs them."""

    id = Attribute("A stable id; the dispatcher's record is kept under it.")
    db = Attribute("The ZODB database it serves.")
    agents = Attribute("The `IAgent` objects, in claim order.")
    queue_names = Attribute("The names of the queues it claims from.")
    running = Attribute("True between start() and stop().")
    ping_interval = Attribute("Seconds between two heartbeats written.")
    death_interval = Attribute(
        "Seconds without a heartbeat after which this dispatcher declares "
        "another dead and recovers its jobs.")

    def start():
        """Register in the database and start claiming.  From then on,
        closing the database (or another of its multi-database) stops the
        dispatcher first (see `zasync.worker.shutdown`)."""

    def stop(timeout=None, hand_back=False):
        """Stop claiming, let running jobs finish (waiting up to `timeout`
        seconds), put assigned jobs that did not start back in the queue
        and mark the record stopped.  Jobs still running after `timeout`
        go on in their threads, or with `hand_back` are handed back to
        their queue at once.  Return True if all jobs finished."""

    def wake():
        """Look for work now instead of at the next poll."""


# -- events -----------------------------------------------------------------

class IJobEvent(Interface):
    """Something happened to a job; sent after the commit that made it so."""

    job = Attribute("The job, as seen by the connection that committed.")


class IJobPut(IJobEvent):
    """A job was put in a queue."""


class IJobStarted(IJobEvent):
    """A worker started running a job."""


class IJobCompleted(IJobEvent):
    """A job completed (succeeded or failed)."""


class IJobSucceeded(IJobCompleted):
    """A job completed with a result."""


class IJobFailed(IJobCompleted):
    """A job completed with a failure."""


class IJobCancelled(IJobFailed):
    """A job was cancelled."""


class IJobRetried(IJobEvent):
    """A failed attempt of a job will be retried."""

    failure = Attribute("The `IFailure` of the attempt.")


class IDispatcherEvent(Interface):
    """Something happened to a dispatcher."""

    dispatcher = Attribute("The dispatcher (or its record).")


class IDispatcherStarted(IDispatcherEvent):
    """A dispatcher registered and started claiming."""


class IDispatcherStopped(IDispatcherEvent):
    """A dispatcher stopped."""


class IDispatcherDied(IDispatcherEvent):
    """A dispatcher was found dead (no heartbeat for its death interval)
    and its jobs were recovered."""


# -- job context (zasync.job.context) -------------------------------------------

class IJobContext(Interface):
    """Something a job needs around its call: a Zope site, a security
    principal.  Stored with the job (so it must pickle: plain attributes
    and references to persistent objects), and applied in the worker's
    thread around each run of the job, within the job's transaction."""

    def set_up(job):
        """Establish the context before the job's callable runs; return a
        value that `tear_down` receives (what to restore)."""

    def tear_down(job, state):
        """Undo `set_up` after the call, whatever its outcome; `state` is
        what `set_up` returned."""
