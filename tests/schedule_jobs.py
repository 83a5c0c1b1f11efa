"""Jobs of the schedule tests, importable by workers in other processes.

Each run appends "OCCURRENCE-TIME JOB-ID PID START END" (ISO time, then
time.time() floats) to a file of its process and thread in a folder, so a
test reads back which occurrence ran where and when.
"""

import os
import time

import zasync

from process_jobs import _append, read_lines


def record(log_dir, seconds=0.0):
    """Append this occurrence's line to `log_dir` after working `seconds`;
    return the occurrence's time."""
    job = zasync.current_job()
    start = time.time()
    if seconds:
        time.sleep(seconds)    # the job's work, not a synchronisation
    at = job.occurs_at.isoformat()
    _append(log_dir, "occurrences", f"{at} {job.id} {os.getpid()} {start!r} {time.time()!r}")
    return at


def fail(message):
    raise ValueError(message)


def runs(log_dir):
    """The recorded runs, as (occurrence time, job id, pid, start, end),
    ordered by start."""
    found = []
    for line in read_lines(log_dir, "occurrences"):
        at, job_id, pid, start, end = line.split()
        found.append((at, job_id, int(pid), float(start), float(end)))
    return sorted(found, key=lambda run: run[3])
