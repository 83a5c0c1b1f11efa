"""Jobs: persistent deferred calls.

A job is written once by the transaction that creates it, then only by the
worker that holds it.  What changes while it runs (progress, its message,
annotations, a request to cancel) lives in a separate `LiveState` object, so
that those short transactions never touch the object the job's own
transaction writes at its end.
"""

import collections.abc
import random
import threading
import time

import persistent
import persistent.mapping
from ZODB.POSException import ConflictError
from zope.interface import implementer

from zasync.job import call as calls
from zasync.job import clock, events, ledger, local, storable, waiting
from zasync.job.failure import Failure
from zasync.interfaces import (
    ACTIVE, ASSIGNED, CALLBACKS, COMPLETED, NEW, PENDING, STATUSES,
    AlreadyCompletedError, Cancelled, ConfigurationError, IJob,
    JobStateError, MissingCodeError, SIMPLE_FAILURE, SIMPLE_PENDING, SIMPLE_STARTED,
    SIMPLE_SUCCESS, UnstorableResultError)
from zasync.job.key import release_key
from zasync.job.retry import RetryTransient

DEFAULT_RETRY_POLICY = RetryTransient()

_id_lock = threading.Lock()
_last_id_ms = 0
_id_counter = 0


def _moment(name, doc):
    """A datetime attribute of a job, stored as integer microseconds.

    A job is pickled at each change of its status and loaded by every
    connection that looks at it; an aware datetime pickles as several
    objects, and a job has up to nine, which made them most of the cost of
    a job's pickle (34 us per job, 19 us with integers).
    """
    stored = f"_{name}_us"

    def get(self):
        micros = getattr(self, stored)
        return None if micros is None else clock.from_micros(micros)

    def set(self, when):
        setattr(self, stored, None if when is None else clock.to_micros(when))
    return property(get, set, doc=doc)


#: the datetime attributes that `_moment` stores as microseconds
_MOMENTS = ("created_at", "begin_after", "started_at", "ended_at")


def new_job_id():
    """A new job id: 20 hex digits, time-ordered, unique across processes.

    Milliseconds since the epoch (11 digits) make ids sort by creation, which
    keeps a queue's id index appending at its end; a per-process counter
    within the millisecond and random bits keep them unique.
    """
    global _last_id_ms, _id_counter
    with _id_lock:
        ms = int(time.time() * 1000)
        if ms <= _last_id_ms:
            ms = _last_id_ms
            _id_counter += 1
        else:
            _last_id_ms = ms
            _id_counter = 0
        counter = _id_counter
    # the three fields (11, 2 and 7 hex digits) formatted at once
    return f"{(ms << 36) | ((counter & 0xff) << 28) | random.getrandbits(28):020x}"


def _merge_live_states(old, saved, new):
    """Merge two concurrent writes of a `LiveState`: changes to different
    fields both hold; where both changed one field, the later commit wins
    (progress and messages only ever move on)."""
    merged = dict(old)
    for state in (saved, new):
        for key in set(old) | set(state):
            if key == "data":
                continue
            if state.get(key, _MISSING) != old.get(key, _MISSING):
                if key in state:
                    merged[key] = state[key]
                else:
                    merged.pop(key, None)
    data = dict(old.get("data", {}))
    for state in (saved, new):
        sdata = state.get("data", {})
        odata = old.get("data", {})
        for key in set(odata) | set(sdata):
            if sdata.get(key, _MISSING) != odata.get(key, _MISSING):
                if key in sdata:
                    data[key] = sdata[key]
                else:
                    data.pop(key, None)
    merged["data"] = data
    return merged


_MISSING = object()


def _merge_job_states(old, saved, new):
    """Merge two concurrent writes of a `Job` where one of them only gave
    the job its live state (see `Job._live`): the other's state, with that
    live state.  Anything else raises `ConflictError`."""
    if "_live" in old:
        raise ConflictError("both changed the job")
    adders = [state for state in (saved, new) if "_live" in state]
    if len(adders) != 1:
        raise ConflictError("both gave the job a live state" if adders
                            else "both changed the job")
    adder = adders[0]
    rest = dict(adder)
    live = rest.pop("_live")
    # (references compare by oid; different ones raise ValueError)
    if rest != old:
        raise ConflictError("both changed the job")
    merged = dict(new if adder is saved else saved)
    merged["_live"] = live
    return merged


class LiveState(persistent.mapping.PersistentMapping):
    """A job's live information: progress, its message, a cancel request
    and, as mapping items, the job's annotations."""

    progress = 0.0
    progress_message = None
    cancel_requested = False
    # A job started while still ASSIGNED (taken ahead of a free thread):
    # when, and the assignment it belongs to (the micros of the job's
    # ASSIGNED status), so that a mark left by an earlier attempt needs no
    # clearing -- a claim would otherwise load every job's live state.
    started_at = None
    started_for = None

    def _p_resolveConflict(self, old, saved, new):
        try:
            return _merge_live_states(old, saved, new)
        except Exception as error:  # a resolver never lets another error out
            raise ConflictError(f"cannot merge live states: {error}") from None


class _NoLiveState(collections.abc.MutableMapping):
    """What `Job._live` gives for a job that has no `LiveState` yet: its
    fields' defaults and no annotations to read; the first write makes the
    job's live state (writing the job) and goes to it."""

    __slots__ = ("_job",)
    progress = LiveState.progress
    progress_message = LiveState.progress_message
    cancel_requested = LiveState.cancel_requested
    started_at = LiveState.started_at
    started_for = LiveState.started_for
    # read as a ghost's would be (`prefetch`, `wait_for`): nothing to load
    _p_oid = _p_jar = None
    _p_changed = False

    def __init__(self, job):
        object.__setattr__(self, "_job", job)

    def _p_activate(self):
        pass

    def _made(self):
        job = self._job
        job._p_activate()
        live = job.__dict__.get("_live")
        if live is None:     # (not made by an earlier write to this stand-in)
            live = job.__dict__["_live"] = LiveState()
            job._p_changed = True
        return live

    def __setattr__(self, name, value):
        setattr(self._made(), name, value)

    def __getitem__(self, key):
        raise KeyError(key)

    def __setitem__(self, key, value):
        self._made()[key] = value

    def __delitem__(self, key):
        raise KeyError(key)

    def __iter__(self):
        return iter(())

    def __len__(self):
        return 0

    def __repr__(self):
        return "{}"


@implementer(IJob)
class Job(persistent.Persistent):
    """See `IJob`."""

    _result = None       # the value, or a `zasync.job.call.Result` holding it
    _failure = None
    # What it calls: a `zasync.job.call.Call`, written once; or, for a
    # small call, `_callable_ref` ('module:qualname') with `args` and
    # `kwargs` in the job's own state (each left out when empty).  Neither
    # in a job stored before calls had a record of their own, whose
    # callable, args and kwargs are in its own state.  (Read by the
    # properties below.)
    _call = None
    _callable_ref = None
    _callable_name = None
    _args_summary = None     # None in a job stored before it was kept
    _queue = None
    _parent = None
    _on = None           # callbacks: 'success', 'failure' or None for both
    dispatcher_id = None
    _status = NEW
    _created_at_us = _begin_after_us = _started_at_us = _ended_at_us = None
    begin_after = _moment("begin_after", "When it falls due.")
    started_at = _moment("started_at", "When its last attempt started.")
    ended_at = _moment("ended_at", "When it ended.")
    # (status, microseconds, dispatcher id) for each change, kept as one
    # string (see `zasync.job.ledger`); see status_history
    _history = ()
    begin_by = None
    retry_policy = None
    priority = 0
    attempt_count = 0
    attempts = ()
    quotas = ()
    timeout = None       # seconds a run may take, or None
    dismissed = False
    _callbacks = ()
    skipped = False
    key = None           # the queue's unique key, while it holds the job
    # Waiting for other jobs (see `zasync.job.workflow`): what it waits for,
    # whether it takes their outcome ("outcome") or calls its callable again
    # ("call") once they completed (both kept until a worker resumed it),
    # whether it waits now, and whether it is back in its queue to resume
    # (its next start is not a new attempt).
    _waiting_for = ()
    _wait_mode = None
    _waiting = False
    _resuming = False
    _arrived = ()        # ids of the awaited jobs that resumed it so far
    _group = None        # for a part of a serial or parallel group, the group

    def __init__(self, callable, *args, **kwargs):
        if isinstance(callable, Job):
            # A job of a job would run the inner one from inside the outer,
            # bypassing its queue, status and retries: almost surely a slip.
            raise ConfigurationError(
                f"Job({callable!r}): a job is not the callable of another job; "
                f"put it (queue.put(job)) or return it from a job to wait for it")
        reference = storable.reference(callable) if calls.small(args, kwargs) else None
        if reference is None:
            check_call(callable, args, kwargs)
        # (else nothing to check: found by its name, with plain arguments)
        self.id = new_job_id()
        if reference is None:
            self._call = calls.Call(callable, args, kwargs)
            self._callable_name = storable.describe(callable)
            self._args_summary = calls.summarize(args, kwargs)
        else:
            # its name and summary are made from these when read
            self._callable_ref = reference
            if args:
                self.__dict__["args"] = tuple(args)
            if kwargs:
                self.__dict__["kwargs"] = dict(kwargs)
        # (`created_at` is the time of this first status: stored apart
        # too, it cost each write of the job a key and a value)
        self._history = ledger.append("", NEW, clock.now_micros(), None)

    @property
    def _live(self):
        """The job's `LiveState`, made on the first write to it.

        Most jobs never report progress, are never cancelled while they run
        and have no annotations: made with every job, the live state was a
        quarter of what a put wrote.  Until then this gives a stand-in with
        the defaults (`_NoLiveState`).  Made by a transaction other than the
        one that ends the job (a progress report, a cancel request), it
        writes the job too, and `_p_resolveConflict` merges that addition
        into the job's own write.
        """
        self._p_activate()
        live = self.__dict__.get("_live")
        return _NoLiveState(self) if live is None else live

    def _p_resolveConflict(self, old, saved, new):
        try:
            return _merge_job_states(old, saved, new)
        except ConflictError:
            raise
        except Exception as error:  # a resolver never lets another error out
            raise ConflictError(f"cannot merge job states: {error}") from None

    def __setstate__(self, state):
        # A job stored before its datetimes were kept as microseconds.
        if "status_history" not in state:
            super().__setstate__(state)
            return
        state = dict(state)
        for name in _MOMENTS:
            if name in state:
                when = state.pop(name)
                state[f"_{name}_us"] = None if when is None else clock.to_micros(when)
        if "status_history" in state:
            state["_history"] = tuple((status, clock.to_micros(when), by) for status, when, by
                                      in state.pop("status_history"))
        super().__setstate__(state)

    # -- reading ---------------------------------------------------------

    @property
    def created_at(self):
        """When the job was made."""
        micros = self._created_at_us     # a job stored before: its own
        if micros is None:
            micros = ledger.first_micros(self._history)
        return None if micros is None else clock.from_micros(micros)

    @property
    def status_history(self):
        """(status, aware datetime, dispatcher id or None) for each change."""
        return tuple((status, clock.from_micros(micros), by)
                     for status, micros, by in ledger.entries(self._history))

    @property
    def status(self):
        status = self._status
        if status == ASSIGNED and self._started_ahead() is not None:
            # Taken ahead of a free thread (see `Agent.prefetch`) and since
            # started: the worker said so in the live state, which the job's
            # own transaction does not write.
            return ACTIVE
        return status

    @status.setter
    def status(self, value):
        self._status = value

    def _inline(self, name, default):
        # (`__dict__` is read after `_call`, which loaded the job's state)
        return self.__dict__.get(name, default)

    @property
    def callable(self):
        """What the job calls (loading its `Call` record, or importing it)."""
        call = self._call
        if call is not None:
            return call.callable
        reference = self._callable_ref
        if reference is not None:
            return calls.resolve(reference)
        return self._inline("callable", None)

    @property
    def args(self):
        call = self._call
        return self._inline("args", ()) if call is None else call.args

    @property
    def kwargs(self):
        call = self._call
        return self._inline("kwargs", {}) if call is None else call.kwargs

    @property
    def callable_name(self):
        # kept in the job's record: naming the job loads no `Call`
        name = self._callable_name
        if name is not None:
            return name
        reference = self._callable_ref
        if reference is not None:
            return calls.reference_name(reference)
        return storable.describe(self.callable)

    @property
    def args_summary(self):
        # kept in the job's record: listing or filing the job loads no `Call`
        summary = self._args_summary
        if summary is None and self._callable_ref is not None:
            return calls.summarize(self.args, self.kwargs)   # its record has them
        return summary

    @property
    def result(self):
        return calls.unwrap_result(self._result)

    @property
    def failure(self):
        return self._failure

    @property
    def succeeded(self):
        return self.status == COMPLETED and self._failure is None and not self.skipped

    @property
    def failed(self):
        return self.status == COMPLETED and self._failure is not None

    @property
    def cancelled(self):
        return self.failed and self._failure.check(Cancelled) is not None

    @property
    def progress(self):
        if self.status == COMPLETED:
            return 1.0
        return self._live.progress

    @property
    def progress_message(self):
        return self._live.progress_message

    @property
    def annotations(self):
        return self._live

    @property
    def queue(self):
        return self._queue

    @property
    def queue_name(self):
        return None if self._queue is None else self._queue.name

    @property
    def parent(self):
        """For a callback, the job whose result it receives."""
        return self._parent

    @property
    def group(self):
        """For a part of a serial or parallel group, the group's job."""
        return self._group

    @property
    def callbacks(self):
        return list(self._callbacks)

    @property
    def waiting_for(self):
        """The jobs this running job waits for (not holding a worker)."""
        return list(self._waiting_for) if self._waiting else []

    @property
    def duration(self):
        if self.started_at is None or self.ended_at is None:
            return None
        return (self.ended_at - self.started_at).total_seconds()

    @property
    def simple_status(self):
        """The job's status in the words of editors' tools: 'pending',
        'started', 'success' or 'failure'."""
        if self.status in (NEW, PENDING, ASSIGNED):
            return SIMPLE_PENDING
        if self.status == ACTIVE or (self.status == CALLBACKS and self._failure is None):
            return SIMPLE_STARTED if self.status == ACTIVE else SIMPLE_SUCCESS
        return SIMPLE_FAILURE if self._failure is not None else SIMPLE_SUCCESS

    def __repr__(self):
        return f"<zasync.Job {self.id} {self.callable_name} {self.status}>"

    # -- changing status ---------------------------------------------------

    def _set_status(self, status, when=None, dispatcher_id=None):
        assert status in STATUSES, status
        when = when or clock.now()
        self._status = status
        self._history = ledger.append(self._history, status, clock.to_micros(when),
                                      dispatcher_id)
        return when

    def _start(self, dispatcher_id=None, when=None):
        """Mark the job active for a new attempt; its progress starts at 0."""
        if self._status == COMPLETED:
            raise AlreadyCompletedError(f"job {self.id} has already completed")
        self.started_at = self._set_status(ACTIVE, when, dispatcher_id)
        self.dispatcher_id = dispatcher_id
        # Only a running job writes its progress: before a first attempt it
        # has none, and its live state need not be loaded to say so.
        again = self._resuming or self.attempt_count > 0
        if self._resuming:      # a job that waited goes on: the same attempt
            self._resuming = False
        else:
            self.attempt_count += 1
        if self._ended_at_us is not None:   # (a None stored costs each write)
            self.ended_at = None
        if again:
            live = self._live
            if live.progress != 0.0 or live.progress_message is not None:
                live.progress = 0.0
                live.progress_message = None

    def _ensure_started(self, dispatcher_id, when):
        """Record the start of a job its worker took ahead of a free thread
        (still `ASSIGNED` in the database) at the time it really started."""
        if self._status == ASSIGNED:
            self._start(dispatcher_id, when)
            if self._wait_mode is None:   # a job that waited started before
                events.notify_after_commit(
                    self._p_jar.transaction_manager.get(), events.JobStarted(self),
                    once=(self.id, when))

    def _assign(self, dispatcher_id, when=None):
        """Mark the job claimed by a dispatcher, not yet started."""
        self._set_status(ASSIGNED, when, dispatcher_id)
        self.dispatcher_id = dispatcher_id

    def _mark_started_ahead(self, when):
        """Say in the live state that this assigned job has started (its
        own record is written by the transaction that ends it)."""
        live = self._live
        live.started_at = when
        live.started_for = ledger.last_micros(self._history)

    def _started_ahead(self):
        """When this assigned job started, if its worker said so for the
        current assignment; else None."""
        if self._status != ASSIGNED:
            return None
        live = self._live
        if live.started_for != ledger.last_micros(self._history):
            return None
        return live.started_at

    def _loaded_call(self):
        """(callable, args, kwargs), or `MissingCodeError` if this process
        lacks their code (ZODB loaded a placeholder instead)."""
        try:
            callable, args, kwargs = self.callable, self.args, self.kwargs
        except Exception as error:  # e.g. a method of an object it cannot load
            if calls.missing_database(error) is not None:
                raise   # the worker's problem (a database it did not open)
            where = (f"on worker {self.dispatcher_id}" if self.dispatcher_id
                     else "in this process")
            raise MissingCodeError(
                f"cannot load the call of job {self.id} ({self.callable_name}) "
                f"{where}: {type(error).__name__}: {error}") from error
        calls.check_loadable(callable, args, kwargs, self.callable_name,
                             self.dispatcher_id)
        return callable, args, kwargs

    def _invoke(self, *extra):
        """Call the callable; callbacks get the parent's outcome in `extra`."""
        call, args, kwargs = local.prepared_call(*self._loaded_call())
        return call(*extra, *args, **kwargs)

    def _complete(self, result=None, failure=None, dispatcher_id=None):
        """Store the outcome; return True if callbacks remain to run."""
        if failure is None:
            try:
                storable.check_value(result, f"the result of job {self.id}:")
            except Exception as error:
                failure = Failure.from_exception(UnstorableResultError(str(error)))
                result = None
        # (a None stored, the class's default, would cost each write)
        if result is not None or self._result is not None:
            self._result = calls.wrap_result(result)
        if failure is not None or self._failure is not None:
            self._failure = failure
        if self._wait_mode is not None or self._resuming:
            self._waiting_for, self._wait_mode, self._arrived = (), None, ()
            self._waiting = self._resuming = False
        self.ended_at = clock.now()
        if self._queue is not None:
            if self.quotas:
                self._queue._release_quotas(self)
            if self.key is not None:
                release_key(self._queue, self)
        if self.started_at is None:
            self.started_at = self.ended_at
        pending = [cb for cb in self._callbacks if cb.status != COMPLETED]
        if pending:
            self._set_status(CALLBACKS, self.ended_at, dispatcher_id)
        else:
            self._set_status(COMPLETED, self.ended_at, dispatcher_id)
        return bool(pending)

    def _reset(self):
        """Make a completed callback ready to run again (its job is retried)."""
        self._result = self._failure = None
        self.ended_at = self.started_at = None
        self.skipped = False
        self._set_status(NEW)

    def _record_attempt(self, failure):
        self.attempts = self.attempts + (failure,)

    def _outcome(self):
        return self._failure if self._failure is not None else self.result

    def _finish_callbacks(self, dispatcher_id=None):
        """Mark a job whose callbacks have all run as completed."""
        if self.status == CALLBACKS:
            self._set_status(COMPLETED, dispatcher_id=dispatcher_id)

    # -- the public calls --------------------------------------------------

    def __call__(self):
        """See `IJob`."""
        if self.status == COMPLETED:
            raise AlreadyCompletedError(
                f"job {self.id} ({self.callable_name}) has already completed; "
                f"a job runs once")
        if self._parent is not None:
            raise JobStateError(
                f"job {self.id} is a callback of job {self._parent.id}; "
                f"it runs when that job completes")
        # A pending job run here leaves its queue (as cancel() does), or a
        # later claim would assign the completed job and run it again.
        queued = self._queue if self.status == PENDING else None
        if queued is not None:
            queued._take_out(self)
        self._start()
        with local.running(self, writer=None):
            try:
                value = self._invoke()
                # A returned job (or a group's next step) is run here too:
                # a direct call waits by running what it waits for inline.
                kind, value = waiting.settle(self, value, waiting.run_inline)
            except Exception as error:
                self._complete(failure=Failure.from_exception(error))
            else:
                if kind == "failure":
                    self._complete(failure=value)
                else:
                    self._complete(result=value)
        for callback in self._callbacks:
            if callback.status != COMPLETED:
                callback._run_callback(self._outcome())
        self._finish_callbacks()
        if queued is not None:
            queued._put_completed(self)
        return self._outcome()

    def _accepts_outcome(self, outcome):
        if self._on is None:
            return True
        return (self._on == "failure") == isinstance(outcome, Failure)

    def _run_callback(self, outcome, dispatcher_id=None):
        """Run this callback job inline with its parent's outcome."""
        if not self._accepts_outcome(outcome):
            self.skipped = True
            self.ended_at = clock.now()
            self._set_status(COMPLETED, self.ended_at, dispatcher_id)
            return
        self._start(dispatcher_id)
        with local.running(self, writer=None):
            try:
                value = self._invoke(outcome)
            except Exception as error:
                self._complete(failure=Failure.from_exception(error),
                               dispatcher_id=dispatcher_id)
            else:
                self._complete(result=value, dispatcher_id=dispatcher_id)
        for callback in self._callbacks:
            if callback.status != COMPLETED:
                callback._run_callback(self._outcome(), dispatcher_id)
        self._finish_callbacks(dispatcher_id)

    def add_callback(self, callback, *, _on=None):
        """See `IJob`."""
        if not isinstance(callback, Job):
            callback = Job(callback)
        elif callback.status != NEW or callback._parent is not None:
            raise JobStateError(
                f"job {callback.id} is {callback.status} and cannot become a "
                f"callback; give a new job or a callable")
        callback._parent = self
        callback._on = _on
        callback._queue = self._queue
        self._callbacks = self._callbacks + (callback,)
        if self.status == COMPLETED:
            callback._run_callback(self._outcome())
        elif self.status == CALLBACKS:
            # the worker running the callbacks reads the tuple afresh
            pass
        return callback

    def add_callbacks(self, success=None, failure=None):
        """See `IJob`."""
        if success is None and failure is None:
            raise ConfigurationError(
                "add_callbacks() needs a success or a failure callback")
        added = []
        if success is not None:
            added.append(self.add_callback(success, _on="success"))
        if failure is not None:
            added.append(self.add_callback(failure, _on="failure"))
        return tuple(added)

    def cancel(self):
        """See `IJob`.

        A job waiting for others (`waiting_for`) cancels them; it completes
        as cancelled when they did.
        """
        if self.status == COMPLETED:
            return False
        if self.status in (NEW, PENDING):
            self._cancel(f"job {self.id} was cancelled before it started")
            return True
        if self.status == ACTIVE and self._waiting:
            for awaited in self._waiting_for:
                awaited.cancel()
        # assigned, active or running callbacks: ask the holder to stop
        self._live.cancel_requested = True
        return True

    def _cancel(self, message, file_in=None):
        """Complete a new or pending job as cancelled with `message`; a new
        one is filed in `file_in` (a queue), if given, as if it was put."""
        queued = self._queue is not None and self.status == PENDING
        if queued:
            self._queue._take_out(self)
        elif file_in is not None and self._queue is None:
            self._queue = file_in
            for callback in self._callbacks:
                callback._queue = file_in
            queued = True
        self._complete(failure=Failure.from_exception(Cancelled(message)))
        if queued:
            self._queue._put_completed(self)
        elif self.status == CALLBACKS:
            for callback in self._callbacks:
                callback._run_callback(self._outcome())
            self._finish_callbacks()


def check_call(callable, args, kwargs):
    """Raise `UnstorableError` unless a worker can find the callable and
    its arguments again."""
    storable.check_callable(callable)
    for index, arg in enumerate(args):
        storable.check_value(arg, f"argument {index} of {storable.describe(callable)}:")
    for name, arg in kwargs.items():
        storable.check_value(arg, f"argument {name!r} of {storable.describe(callable)}:")

