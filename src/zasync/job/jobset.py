"""A small persistent set of jobs whose concurrent changes merge.

Many transactions add and remove jobs at once: producers add to a queue's
inbox while a worker drains it, and every job a dispatcher runs leaves the
dispatcher's record when its result commits.  A BTree would raise
ConflictError whenever two of them split or empty the same bucket, so these
sets keep a plain dict and resolve conflicts themselves, the way
`BTrees.Length` does: additions and removals of different jobs merge; two
transactions removing (or adding) the same job conflict, which is exactly
how two workers are kept from claiming one job.

The sets stay small: an inbox is drained by every claim, and a record holds
only the jobs its dispatcher is running.

A job may be added with a note: a small tuple of what the set's reader
needs of it (a history's filing needs a job's end time), kept beside the
job so that reading it does not load the job -- over ZEO, one that another
worker wrote, which the reader's cache no longer holds.
"""

import persistent
from ZODB.POSException import ConflictError


def merge_job_states(old, saved, new):
    """Merge two concurrent changes (`saved`, committed first, and `new`)
    of one `JobSet` state, both made from `old`.  Plain dicts in, plain dict
    out; raises ConflictError when they cannot both hold."""
    try:
        o, s, n = old["_jobs"], saved["_jobs"], new["_jobs"]
    except (TypeError, KeyError):
        raise ConflictError("job set state without '_jobs'") from None
    for key in set(old) | set(saved) | set(new):
        if key != "_jobs" and not (old.get(key) == saved.get(key) == new.get(key)):
            raise ConflictError(f"job set attribute {key!r} changed")
    removed_s = o.keys() - s.keys()
    removed_n = o.keys() - n.keys()
    both_removed = removed_s & removed_n
    if both_removed:
        raise ConflictError(
            f"two transactions removed job {sorted(both_removed)[0]!r}")
    added_s = s.keys() - o.keys()
    added_n = n.keys() - o.keys()
    both_added = added_s & added_n
    if both_added:
        raise ConflictError(
            f"two transactions added job {sorted(both_added)[0]!r}")
    merged = {k: v for k, v in o.items()
              if k not in removed_s and k not in removed_n}
    for k in added_s:
        merged[k] = s[k]
    for k in added_n:
        merged[k] = n[k]
    result = dict(new)
    result["_jobs"] = merged
    return result


def _split(value):
    """(note or None, job) of a stored value."""
    return value if value.__class__ is tuple else (None, value)


class JobSet(persistent.Persistent):
    """Jobs by id; concurrent additions and removals of different jobs
    merge instead of conflicting."""

    def __init__(self):
        # id -> job, or (note, job) for a job added with a note
        self._jobs = {}

    def add(self, job, note=None):
        """Add `job`, with `note` (a tuple) if given."""
        self._jobs[job.id] = job if note is None else (note, job)
        self._p_changed = True

    def noted(self):
        """(id, note or None, job) for each job."""
        return [(job_id, *_split(value)) for job_id, value in self._jobs.items()]

    def discard(self, job_id):
        if job_id in self._jobs:
            del self._jobs[job_id]
            self._p_changed = True

    def remove_all(self, job_ids):
        """Remove the given ids (those that are present)."""
        changed = False
        for job_id in job_ids:
            if job_id in self._jobs:
                del self._jobs[job_id]
                changed = True
        if changed:
            self._p_changed = True

    def get(self, job_id, default=None):
        value = self._jobs.get(job_id)
        return default if value is None else _split(value)[1]

    def __contains__(self, job_id):
        return job_id in self._jobs

    def __len__(self):
        return len(self._jobs)

    def __bool__(self):
        return bool(self._jobs)

    def __iter__(self):
        return iter([_split(value)[1] for value in self._jobs.values()])

    def ids(self):
        return list(self._jobs)

    def _p_resolveConflict(self, old, saved, new):
        return merge_job_states(old, saved, new)
