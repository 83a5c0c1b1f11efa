"""Quotas: at most `size` jobs of a quota held by workers at once, across
every worker of the database."""

import persistent
from ZODB.POSException import ConflictError

from zasync.interfaces import ConfigurationError
from zasync.job.jobset import JobSet, merge_job_states


def check_size(size, name):
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ConfigurationError(
            f"quota {name!r} size={size!r}: expected an int of 0 or more")
    return size


def merge_held_states(old, saved, new):
    """Merge two concurrent changes of a quota's `HeldJobs` state: like
    `merge_job_states`, except that two transactions that both added jobs
    conflict.  Plain dicts in, plain dict out."""
    try:
        o, s, n = old["_jobs"], saved["_jobs"], new["_jobs"]
    except (TypeError, KeyError):
        raise ConflictError("held jobs state without '_jobs'") from None
    if s.keys() - o.keys() and n.keys() - o.keys():
        raise ConflictError(
            "two transactions took jobs of one quota at once; each checked "
            "for room without seeing the other's")
    return merge_job_states(old, saved, new)


class HeldJobs(JobSet):
    """The jobs a quota's workers hold.

    Each claim checks for room, then adds: two claims that both added jobs
    did not see each other's, and merging them could exceed the size, so
    they conflict (the later claimer retries and sees the room left).
    Removals still merge, so finishing jobs never conflict with claims.
    Rejected: merging additions up to the size, which would need the size
    in this state, where an operator's change would conflict with claims.
    """

    def _p_resolveConflict(self, old, saved, new):
        return merge_held_states(old, saved, new)


class Quota(persistent.Persistent):
    """A named limit on the jobs held (assigned or running) at once.

    The size is an attribute of this object and the held jobs a separate
    merging `JobSet`, so an operator can change the size while workers
    claim and finish jobs without conflicting with them.
    """

    def __init__(self, name, size):
        self.name = name
        self.size = check_size(size, name)
        self._held = HeldJobs()

    @property
    def held(self):
        """How many jobs of the quota workers hold now."""
        return len(self._held)

    def has_room(self):
        return len(self._held) < self.size

    def take(self, job):
        self._held.add(job)

    def release(self, job_id):
        self._held.discard(job_id)

    def __repr__(self):
        return f"<zasync.Quota {self.name!r} {self.held}/{self.size}>"
