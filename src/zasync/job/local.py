"""What a running job can ask of its worker: `current_job`, `progress` and
`check_cancelled`; and what its job contexts make of its call
(`prepared_call`).

The running job is kept per thread, so parallel jobs in one process never see
each other's, and a job that runs another job inline (a callback) gets its
own for the time of that call.
"""

import contextlib
import math
import threading

from zasync.interfaces import Cancelled, ConfigurationError, NotInJobError

_state = threading.local()


class _Run:
    __slots__ = ("job", "writer")

    def __init__(self, job, writer):
        self.job = job
        self.writer = writer


@contextlib.contextmanager
def running(job, writer):
    """Make `job` the current job of this thread while the block runs.

    `writer` writes progress in its own transaction and returns whether
    cancellation was requested; None writes into the job's own transaction
    (a job called directly, not by a worker).
    """
    previous = getattr(_state, "run", None)
    _state.run = _Run(job, writer)
    try:
        yield
    finally:
        _state.run = previous


def current_job():
    """The job running in this thread, or None outside a job."""
    run = getattr(_state, "run", None)
    return None if run is None else run.job


def _current_run(what):
    run = getattr(_state, "run", None)
    if run is None:
        raise NotInJobError(f"zasync.{what}() was called outside a running job")
    return run


def progress(fraction, message=None):
    """Report the running job's progress: `fraction` is clamped to [0, 1].

    A worker commits it at once in a separate, short transaction, so other
    connections see it while the job runs.  Raises `Cancelled` if the job
    was asked to stop.
    """
    run = _current_run("progress")
    fraction = check_fraction(fraction)
    if message is not None:
        message = str(message)
    if run.writer is None:
        live = run.job._live
        live.progress = fraction
        live.progress_message = message
        cancelled = live.cancel_requested
    else:
        cancelled = run.writer(fraction, message)
    if cancelled:
        raise Cancelled(f"job {run.job.id} was cancelled while it ran")


def check_cancelled():
    """Raise `Cancelled` if the running job was asked to stop."""
    run = _current_run("check_cancelled")
    if run.writer is None:
        cancelled = run.job._live.cancel_requested
    else:
        cancelled = run.writer(None, None)
    if cancelled:
        raise Cancelled(f"job {run.job.id} was cancelled while it ran")


def check_fraction(fraction):
    """Check a progress fraction and clamp it to [0, 1]."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)):
        raise ConfigurationError(
            f"progress fraction {fraction!r}: expected a number from 0 to 1")
    if math.isnan(fraction):
        raise ConfigurationError("progress fraction is NaN: expected a number from 0 to 1")
    return min(1.0, max(0.0, float(fraction)))


# -- what the contexts applied make of a call ------------------------------------
# `zasync.job.context` applies the contexts and `Job` reads what they make
# of its call; the contexts module builds jobs (`context.put`), so the list
# the two share is kept here, below both.

def call_preparers():
    """This thread's list of the ``prepare_call`` functions of the contexts
    applied now, outermost first (`zasync.job.context.applied` adds them
    and takes them away)."""
    preparers = getattr(_state, "preparers", None)
    if preparers is None:
        preparers = _state.preparers = []
    return preparers


def prepared_call(callable_, args, kwargs):
    """The callable and arguments a job calls: as stored, or as changed by
    the ``prepare_call`` of the contexts applied in this thread."""
    preparers = getattr(_state, "preparers", None)
    if not preparers:
        return callable_, args, kwargs
    for prepare in preparers:
        callable_, args, kwargs = prepare(callable_, args, kwargs)
    return callable_, args, kwargs
