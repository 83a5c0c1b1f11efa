"""Example jobs, used by `zasync demo`, the tutorial in docs/ and tests.

Job callables must be importable by the workers, so examples live in a
module rather than in a script or a doctest.
"""

import time

import persistent

import zasync


def add(a, b):
    """Return a + b."""
    return a + b


def noop(i=None):
    """Do nothing; return the argument (the benchmark's job)."""
    return i


def stamp():
    """Return the time at which the job started (the benchmark's latency job)."""
    return time.time()


def send_report(quarter, parts=4, pause=0.05):
    """Pretend to send a quarterly report in parts, reporting progress."""
    for i in range(parts):
        time.sleep(pause)
        zasync.progress((i + 1) / parts, f"part {i + 1} of {parts}")
    return f"report {quarter} sent"


def fail(message="something went wrong"):
    """Raise ValueError(message)."""
    raise ValueError(message)


def record_outcome(outcome, log_key="outcomes"):
    """A callback: return a description of the outcome it receives."""
    if isinstance(outcome, zasync.Failure):
        return f"failed: {outcome}"
    return f"succeeded: {outcome!r}"


class Counter(persistent.Persistent):
    """A persistent counter whose method a job can call."""

    def __init__(self):
        self.value = 0

    def increment(self, by=1):
        self.value += by
        return self.value
