"""Job functions and helpers for the scenario tests.

Jobs are stored by their module and name, so they must live in an importable
module (not in a test function).  The dispatchers under test run in the
test's own process, so a test and its running jobs meet through the
module-level objects here, found by a name that the test passes as the job's
argument.  Every wait has a timeout: a test fails, it never hangs.
"""

import collections
import threading
import uuid

import persistent
import transaction
from ZODB.POSException import ConflictError

import zasync
from zasync.job import clock, events

import process_jobs

#: The longest any helper or job waits for anything.
TIMEOUT = 10.0

_lock = threading.Lock()


def unique(prefix="scenario"):
    """A name no other test uses, to key the module-level records."""
    return f"{prefix}-{uuid.uuid4().hex}"


# -- rendezvous between a test and its running jobs ---------------------------

class Rendezvous:
    """Jobs `pause(label)` here until the test releases them.

    The test waits until jobs arrived (`wait_arrived`), looks at the
    database while they are held, then `release`s them.
    """

    def __init__(self):
        self._cond = threading.Condition()
        self.arrived = []
        self._released = set()
        self._all_released = False

    def pause(self, label):
        with self._cond:
            self.arrived.append(label)
            self._cond.notify_all()
            released = self._cond.wait_for(
                lambda: self._all_released or label in self._released, TIMEOUT)
        if not released:
            raise RuntimeError(f"rendezvous: {label!r} was not released in {TIMEOUT} s")

    def wait_arrived(self, count=1, label=None, timeout=TIMEOUT):
        """Wait until `count` jobs (or the one paused at `label`) arrived;
        return whether they did in time."""
        def ready():
            if label is not None:
                return label in self.arrived
            return len(self.arrived) >= count
        with self._cond:
            return self._cond.wait_for(ready, timeout)

    def release(self, label=None):
        """Let the job paused at `label` (all of them if None) go on."""
        with self._cond:
            if label is None:
                self._all_released = True
            else:
                self._released.add(label)
            self._cond.notify_all()


_rendezvous = {}


def rendezvous(name):
    with _lock:
        found = _rendezvous.get(name)
        if found is None:
            found = _rendezvous[name] = Rendezvous()
        return found


# -- records of what jobs did -------------------------------------------------

#: name -> list of values recorded by jobs and callbacks
records = collections.defaultdict(list)

#: name -> how many times a job keyed by that name was called
calls = collections.Counter()


def record(name, value):
    with _lock:
        records[name].append(value)


def count_call(name):
    """Count one call under `name`; return the count so far."""
    with _lock:
        calls[name] += 1
        return calls[name]


# -- plain jobs -----------------------------------------------------------------

def add(a, b):
    return a + b


def mark(name):
    """Record that the job ran, and return its name."""
    count_call(name)
    record(name, clock.now())
    return name


def count_by_job_id(name):
    """Count a call under the running job's id (in `calls`) and list that
    id under `name` (in `records`)."""
    job_id = zasync.current_job().id
    count_call(job_id)
    record(name, job_id)
    return job_id


def pause(name, label):
    """Count the call, wait at the rendezvous `name`, return `label`."""
    count_call(name)
    rendezvous(name).pause(label)
    return label


def raise_value_error(message):
    raise ValueError(message)


def current_job_id():
    """What `zasync.current_job()` says inside a running job."""
    job = zasync.current_job()
    return job.id


def timed(name):
    """Record the time inside the job, between its start and its end."""
    record(name, clock.now())
    return "timed"


# -- progress -------------------------------------------------------------------

def progress_then_pause(name, *steps):
    """For each (fraction, message) step: report it, then pause at the
    rendezvous under the step's index; return the number of steps."""
    meeting = rendezvous(name)
    meeting.pause("start")
    for index, (fraction, message) in enumerate(steps):
        zasync.progress(fraction, message)
        meeting.pause(index)
    return len(steps)


def write_with_progress(key, rounds):
    """Change persistent data between many progress reports."""
    job = zasync.current_job()
    root = job._p_jar.root()
    counter = root[key]
    for index in range(rounds):
        counter.value += 1
        counter.log.append(index)
        counter._p_changed = True
        zasync.progress((index + 1) / rounds, f"round {index + 1} of {rounds}")
    return counter.value


# -- persistent objects -----------------------------------------------------------

class Counter(persistent.Persistent):
    """A persistent counter whose methods are jobs."""

    def __init__(self):
        self.value = 0
        self.log = []

    def increment(self):
        self.value += 1
        return self.value

    def increment_then_pause(self, name):
        """Increment, and on the first call wait at the rendezvous `name`
        (the test changes the counter meanwhile)."""
        self.value += 1
        if count_call(name) == 1:
            rendezvous(name).pause("wrote")
        return self.value

    def increment_then_fail(self):
        self.value += 1
        raise ValueError(f"failed after setting the counter to {self.value}")


# -- retries ----------------------------------------------------------------------

def conflict_once(name):
    """Raise ConflictError on the first call, then succeed."""
    if count_call(name) == 1:
        raise ConflictError(f"{name}: a conflict on the first attempt")
    return "resolved"


def always_conflict(name):
    count = count_call(name)
    raise ConflictError(f"{name}: conflict number {count}")


def value_error_twice(name):
    """Raise ValueError on the first two calls, succeed on the third;
    record each call's time and pause at the rendezvous on the first."""
    count = count_call(name)
    record(name, clock.now())
    if count == 1:
        rendezvous(name).pause("first")
    if count <= 2:
        raise ValueError(f"{name}: failure number {count}")
    return f"succeeded on call {count}"


# -- callbacks --------------------------------------------------------------------

def record_outcome(outcome, name):
    """A callback: record what it received, return it."""
    record(name, outcome)
    return outcome


def double(value):
    return value * 2


def failing_callback(outcome):
    raise ValueError(f"the callback refused {outcome!r}")


def look_at_parent(outcome, name):
    """A callback: record how its parent job looks from a connection of its
    own (what other transactions see while the callback runs)."""
    callback = zasync.current_job()
    parent_oid = callback.parent._p_oid
    db = callback._p_jar.db()
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    try:
        tm.begin()
        parent = conn.get(parent_oid)
        seen = {"outcome": outcome, "status": parent.status,
                "result": parent.result, "ended_at": parent.ended_at}
        tm.abort()
    finally:
        conn.close()
    record(name, seen)
    return "looked"


# -- holding a worker thread after its job's commit -------------------------------

#: names of `mark` jobs whose worker thread the subscriber below holds
held_after_commit = set()


def hold_worker_after_commit(event):
    """A zope.event subscriber: when a `mark(name)` job with a name in
    `held_after_commit` completes, keep its worker thread (which sends the
    event after its commit, before it frees its slot) at the rendezvous
    `name`, label "committed", until the test releases it."""
    if not isinstance(event, events.JobSucceeded):
        return
    args = event.job.args
    if args and args[0] in held_after_commit:
        rendezvous(args[0]).pause("committed")


# -- waiting from a test ----------------------------------------------------------

def wait_until(predicate, timeout=TIMEOUT, interval=0.005):
    """`process_jobs.wait_until`, with this module's shorter timeout."""
    return process_jobs.wait_until(predicate, timeout, interval)


class Viewer:
    """A connection of its own, reading each time in a fresh transaction,
    as another client would."""

    def __init__(self, db):
        self.tm = transaction.TransactionManager()
        self.conn = db.open(transaction_manager=self.tm)

    def get(self, obj_or_oid):
        """The object as committed now (a fresh transaction)."""
        oid = getattr(obj_or_oid, "_p_oid", obj_or_oid)
        self.tm.abort()
        self.tm.begin()
        return self.conn.get(oid)

    def root(self):
        self.tm.abort()
        self.tm.begin()
        return self.conn.root()

    def wait_completed(self, jobs, timeout=TIMEOUT):
        """Wait until every job (or oid) completed; return the jobs as
        seen then, in one transaction."""
        oids = [getattr(job, "_p_oid", job) for job in jobs]

        def all_completed():
            self.tm.abort()
            self.tm.begin()
            seen = [self.conn.get(oid) for oid in oids]
            return all(job.status == zasync.COMPLETED for job in seen) and seen
        return wait_until(all_completed, timeout, interval=0.02)

    def close(self):
        self.tm.abort()
        self.conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


class Producer:
    """An application's connection that puts jobs, one committed
    transaction per `put`."""

    def __init__(self, db):
        self.db = db
        self.tm = transaction.TransactionManager()
        self.conn = db.open(transaction_manager=self.tm)

    def queue(self, name=""):
        return zasync.get_queue(self.conn, name)

    def put(self, job, *args, queue="", **put_kwargs):
        """Put `job` in a transaction of its own and commit it."""
        with self.tm:
            return self.queue(queue).put(job, *args, **put_kwargs)

    def close(self):
        self.tm.abort()
        self.conn.close()


def opened(kind, db):
    """A fixture's body: a `kind` (`Producer` or `Viewer`) on `db`,
    closed at the end of the test."""
    connection = kind(db)
    try:
        yield connection
    finally:
        connection.close()
