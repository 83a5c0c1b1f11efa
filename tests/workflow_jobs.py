"""Jobs for the workflow tests (`test_workflow.py`): jobs that return jobs,
parts of groups and postprocess functions.

Jobs are stored by module and name, so they live here; the worker processes
of the ZEO scenarios import them too (the tests put this folder on their
PYTHONPATH).  Jobs and tests meet through files in a folder the test owns,
and every wait has a timeout: a job that is never released fails.
"""

import datetime
import os

import zasync
from recovery_jobs import touch, wait_for_file

#: The longest a job waits for anything.
TIMEOUT = 30.0


def add(a, b):
    return a + b


def same(value):
    """Return `value` (a job given as argument: wait for it)."""
    return value


def fail(message):
    raise ValueError(message)


def put_child(a, b):
    """Put a child job in this job's queue, in this job's transaction, and
    return it: this job completes with the child's result."""
    return zasync.current_job().queue.put(zasync.Job(add, a, b))


def child_in_quota(a, b, quota):
    """Return a new job counting against `quota`, put in this job's queue."""
    return zasync.current_job().queue.put(zasync.Job(add, a, b), quotas=quota)


def new_child(a, b):
    """Return a new job, not yet queued: the worker puts it."""
    return zasync.Job(add, a, b)


def failing_child(message):
    return zasync.Job(fail, message)


def nested(depth, value):
    """Wait for a job that waits for a job ... `depth` deep."""
    if depth == 0:
        return value
    return zasync.Job(nested, depth - 1, value)


def later_child(seconds):
    """Put a child due in `seconds` and wait for it."""
    due = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=seconds)
    return zasync.current_job().queue.put(zasync.Job(add, 1, 1), begin_after=due)


def gated_child(folder, name):
    """Wait for a child that waits for the file NAME.release."""
    return zasync.Job(gate, folder, name)


def gate(folder, name):
    """Say it arrived (NAME.arrived), wait for NAME.release; return `name`."""
    touch(folder, f"{name}.arrived")
    wait_for_file(os.path.join(folder, f"{name}.release"), TIMEOUT)
    return name


def append(folder, label):
    """Append `label` to the file ``order`` in `folder`; return `label`."""
    with open(os.path.join(folder, "order"), "a") as f:
        f.write(label + "\n")
    return label


def order(folder):
    """The labels `append` wrote, in order."""
    path = os.path.join(folder, "order")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return f.read().split()


def meet(folder, me, other):
    """Say `me` started, then wait until `other` started: completes only
    if both run at once."""
    touch(folder, f"{me}.arrived")
    wait_for_file(os.path.join(folder, f"{other}.arrived"), TIMEOUT)
    return me


def describe(parts):
    """A postprocess: each part as (id, 'ok' or the failure type, result)."""
    return [(part.id, "ok" if part.succeeded else part.failure.type_name,
             part.result) for part in parts]


def total_later(parts):
    """A postprocess that returns a job: the sum of the results, plus 100."""
    return zasync.Job(add, sum(part.result for part in parts), 100)


def always_conflict(parts):
    """A postprocess that always raises ConflictError (retried, then failed)."""
    from ZODB.POSException import ConflictError
    raise ConflictError("the postprocess conflicts")


def results_with_attempts(parts):
    """A postprocess for the crash scenarios: each part's result and attempts."""
    return [(part.result, part.attempt_count) for part in parts]
