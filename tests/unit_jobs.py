"""Callables and persistent classes used by the unit tests as jobs.

They live in a module of their own, at module level, because a job stores
its callable by name: a worker must be able to import it again.
"""

import threading

import persistent
from zope.interface import implementer

import zasync
from zasync.job.failure import Failure
from zasync.interfaces import IRetryPolicy


def add(a, b):
    return a + b


def identity(value):
    return value


class DeepTrouble(ValueError):
    """An exception class outside builtins, to check dotted names."""


def _fail_inner(message):
    raise DeepTrouble(message)


def fail_deep(message):
    # A large local: if a failure kept frames (or their locals), pickling
    # it would carry this megabyte along.
    ballast = b"x" * 1_000_000
    _fail_inner(message)
    return len(ballast)


def fail_value(message):
    raise ValueError(message)


def exit_now():
    raise SystemExit(3)


def report_progress(fraction, message=None):
    """Report progress and return what the running job then says."""
    zasync.progress(fraction, message)
    job = zasync.current_job()
    return (job.progress, job.progress_message)


def own_simple_status():
    return zasync.current_job().simple_status


def parent_simple_status(outcome):
    return zasync.current_job().parent.simple_status


def describe_outcome(outcome):
    """A callback: says which outcome it received."""
    if isinstance(outcome, Failure):
        return f"failure:{outcome.type_name}:{outcome.message}"
    return f"success:{outcome!r}"


def count_of(box):
    return box.count


class Counter(persistent.Persistent):
    count = 0

    def increment(self, by=1):
        self.count += by
        return self.count


class Doubler(persistent.Persistent):
    """A persistent callable object."""

    calls = 0

    def __call__(self, value):
        self.calls += 1
        return 2 * value


class Plain:
    """Not persistent: its methods cannot be stored as job callables."""

    def method(self):
        return "plain"


@implementer(IRetryPolicy)
class LockingPolicy:
    """Provides IRetryPolicy but holds a lock, so it cannot be stored."""

    def __init__(self):
        self.lock = threading.Lock()

    def retry_after(self, job, error, attempt):
        return None

    def interrupted(self, job, attempt):
        return None


def make_lock():
    """Returns a result that cannot be stored."""
    return threading.Lock()


def send_report(quarter, parts=4, priority="normal"):
    """A job taking keyword arguments, one named like an option of put."""
    return f"report {quarter} in {parts} parts ({priority})"


def collect(*args, **kwargs):
    """Return what it was called with."""
    return args, kwargs


class Bulky:
    """A big argument that notes, in `Bulky.loads`, the name of each thread
    that loaded it from the database (its job's call record)."""

    loads = []

    def __init__(self, size):
        self.data = b"\0" * size

    def __setstate__(self, state):
        Bulky.loads.append(threading.current_thread().name)
        self.__dict__.update(state)

    def __repr__(self):
        return f"<Bulky of {len(self.data)} bytes>"


def measure(bulky):
    """The size of a `Bulky` and the thread that ran the job."""
    return len(bulky.data), threading.current_thread().name
