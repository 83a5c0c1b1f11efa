"""Quotas: at most `size` jobs of a quota held by workers at once, across
every worker of the database."""

import persistent

from zasync.interfaces import ConfigurationError
from zasync.jobset import JobSet


def check_size(size, name):
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ConfigurationError(
            f"quota {name!r} size={size!r}: expected an int of 0 or more")
    return size


class Quota(persistent.Persistent):
    """A named limit on the jobs held (assigned or running) at once.

    The size is an attribute of this object and the held jobs a separate
    merging `JobSet`, so an operator can change the size while workers
    claim and finish jobs without conflicting with them.
    """

    def __init__(self, name, size):
        self.name = name
        self.size = check_size(size, name)
        self._held = JobSet()

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
