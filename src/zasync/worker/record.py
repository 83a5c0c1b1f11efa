"""What the database keeps of each dispatcher."""

import persistent
from zope.interface import implementer

from zasync.job import clock
from zasync.interfaces import IDispatcherRecord
from zasync.job.jobset import JobSet


@implementer(IDispatcherRecord)
class DispatcherRecord(persistent.Persistent):
    """See `IDispatcherRecord`.

    Written rarely (start, stop and a heartbeat every `ping_interval`); the
    jobs it holds are a separate merging set that claims add to and finishing
    jobs remove from.
    """

    stopped_at = None
    dead_at = None       # when another dispatcher found it dead
    session = None       # changes at each start; a process that finds
                         # another session in its record was taken over
    claim_error = None   # why its claims fail, while they do
    claim_error_at = None

    def __init__(self, id):
        self.id = id
        self.started_at = clock.now()
        self.last_ping = self.started_at
        self.info = {}
        self.jobs = JobSet()

    def __repr__(self):
        return f"<zasync.DispatcherRecord {self.id}>"
