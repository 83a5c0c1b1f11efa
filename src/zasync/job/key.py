"""Unique jobs: a queue's index of the keys its jobs were put with.

The index maps a key to the job that holds it, from the `put` that gave it
(in the producer's transaction, unlike the rest of the queue) to the end
of that job: the transaction that stores its outcome (a worker's), its
removal from the queue, or its cancellation while pending.

It is written by producers and workers alike, so its conflicts must
resolve: `KEY_LANES` small `HeldKeys` sets, a key's lane chosen by its
CRC-32, each a dict of key to job merged by `zasync.job.jobset.merge_job_states`.
Additions and removals of different keys merge; two transactions adding
one key conflict, so of two producers putting the same key one commit
raises ConflictError and its retry finds the other's job, the one outcome
that keeps a key to one job.

Rejected: a BTree (the first version, still read in queues made before
`install` gave them lanes).  Its conflict resolution gave the same check,
but a BTree cannot merge the removal of a bucket's first key with an
insertion into that bucket, nor a change that splits or empties a bucket:
a producer's put meeting a worker's completion in one bucket conflicted,
in the producer's transaction, where zasync cannot retry it.
"""

import zlib

import persistent

from zasync.interfaces import ConfigurationError, JobStateError
from zasync.job.jobset import merge_job_states

#: Lanes of a new queue's key index.
KEY_LANES = 64


class HeldKeys(persistent.Persistent):
    """Keys (of one lane) and the jobs holding them; concurrent changes of
    different keys merge, two additions of one key conflict."""

    def __init__(self):
        self._jobs = {}         # key -> job ('_jobs': the resolver's name)

    def get(self, key):
        return self._jobs.get(key)

    def set(self, key, job):
        self._jobs[key] = job
        self._p_changed = True

    def discard(self, key):
        if key in self._jobs:
            del self._jobs[key]
            self._p_changed = True

    def items(self):
        return list(self._jobs.items())

    def _p_resolveConflict(self, old, saved, new):
        return merge_job_states(old, saved, new)


def check_key(key):
    """A key: a non-empty str."""
    if not isinstance(key, str) or not key:
        raise ConfigurationError(f"key={key!r}: expected a non-empty str")
    return key


def key_index():
    """A new, empty index of keys: its lanes."""
    return tuple(HeldKeys() for _ in range(KEY_LANES))


def _lane(lanes, key):
    return lanes[zlib.crc32(key.encode()) % len(lanes)]


def holder_of(queue, key):
    """The job holding `key` in `queue`, or None (reads only)."""
    lanes = queue._key_lanes
    if lanes is not None:
        return _lane(lanes, key).get(key)
    if queue._keys is not None:     # a queue made before lanes
        return queue._keys.get(key)
    return None


def take_key(queue, job, checked=False):
    """Make `job` the holder of its key; refuse if another job holds it
    (unless the caller has just `checked` that none does)."""
    holder = None if checked else queue.get_by_key(job.key)
    if holder is not None and holder is not job:
        raise JobStateError(
            f"job {job.id}: its key {job.key!r} is held by job {holder.id} "
            f"({holder.status}); wait for that one to complete")
    if queue._key_lanes is None and queue._keys is None:   # an older database
        queue._key_lanes = key_index()
    if queue._key_lanes is not None:
        _lane(queue._key_lanes, job.key).set(job.key, job)
    else:
        queue._keys[job.key] = job


def release_key(queue, job):
    """Free the job's key, if the job holds it."""
    if job.key is None or holder_of(queue, job.key) is not job:
        return
    if queue._key_lanes is not None:
        _lane(queue._key_lanes, job.key).discard(job.key)
    else:
        del queue._keys[job.key]


def give_lanes(queue):
    """Move a queue's key BTree (of a database made before lanes) into
    lanes; for `install`, in a transaction of its own."""
    if queue._key_lanes is not None:
        return
    lanes = key_index()
    if queue._keys is not None:
        for key, job in queue._keys.items():
            if key:             # the BTree's '' sentinel
                _lane(lanes, key).set(key, job)
    queue._key_lanes = lanes
    queue._keys = None
