"""Example jobs, used by `zasync demo`, the tutorial in docs/ and tests.

Job callables must be importable by the workers, so examples live in a
module rather than in a script or a doctest.
"""

import threading
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


def add_in_a_child(a, b):
    """Put a job adding a and b in this job's queue and return it: this job
    completes with that job's result, holding no worker while it waits."""
    return zasync.current_job().queue.put(zasync.Job(add, a, b))


def total(parts):
    """A group's postprocess: the sum of its parts' results."""
    return sum(part.result for part in parts)


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


# -- used by the tutorial (docs/tutorial.rst) ---------------------------------

def flaky(failures, error=None, result="done at last"):
    """Raise `error` (ConflictError by default) on each of the first
    `failures` attempts of the running job, then return `result`.

    The attempt number comes from the running job, so the same job fails
    and then succeeds as its retry policy runs it again.
    """
    if error is None:
        from ZODB.POSException import ConflictError
        error = ConflictError
    job = zasync.current_job()
    attempt = 1 if job is None else job.attempt_count
    if attempt <= failures:
        raise error(f"attempt {attempt} failed")
    return result


_gates = {}
_gates_lock = threading.Lock()


def gate(name):
    """The in-process `threading.Event` called `name`, created if missing.

    Lets a test or a tutorial look at a job while it runs, with no sleeps:
    `wait_at_gate` reports that it arrived, then waits to be let through.
    Only for jobs run by a dispatcher in the same process.
    """
    with _gates_lock:
        event = _gates.get(name)
        if event is None:
            event = _gates[name] = threading.Event()
        return event


def wait_at_gate(name, timeout=30.0):
    """Report progress 0.5, set `gate(name + ':reached')`, wait until
    `gate(name)` is set, report progress 0.9 and return a message.

    Once through, it closes both gates again, so that the name can be used
    again.  The second progress report raises `zasync.Cancelled` if the
    job was cancelled while it waited.
    """
    zasync.progress(0.5, f"waiting at gate {name}")
    gate(f"{name}:reached").set()
    if not gate(name).wait(timeout):
        raise TimeoutError(f"gate {name} stayed closed for {timeout} s")
    gate(name).clear()
    gate(f"{name}:reached").clear()
    zasync.progress(0.9, f"through gate {name}")
    return f"passed gate {name}"


def increment_then_fail(counter, by=1):
    """Increment a persistent `Counter`, then raise ValueError: the failed
    job's increment is rolled back, so the counter is left as it was."""
    counter.increment(by)
    raise ValueError(f"failed after incrementing the counter to {counter.value}")


def spin(seconds):
    """Busy-loop for `seconds` without reporting progress (a job that only
    a process agent can stop early)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass
    return seconds
