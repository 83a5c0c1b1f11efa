"""Unique jobs: a queue's index of the keys its jobs were put with.

``queue._keys`` maps a key to the job that holds it, from the `put` that
gave it (in the producer's transaction, unlike the rest of the queue) to
the end of that job: the transaction that stores its outcome, its removal
from the queue, or its cancellation while pending.

A BTree, because its conflict resolution is the check itself: two
concurrent puts of one key cannot both insert it, so one commit raises
ConflictError and its retry finds the other's job, the one outcome that
keeps a key to one job.  Puts of different keys merge.  Rejected: a merging
set such as the inbox's `JobSet` that accepts both, as two jobs of one key
would then run.

BTrees cannot merge the removal of a bucket's first key with an insertion
into that bucket, nor a change that empties a bucket.  The first bucket
therefore holds the key '' (which no job may have) for ever, so that a
small index (a single bucket: up to 30 keys held at once) never conflicts
between a completing job and a producer; in a larger one such a conflict
is rare, and retried by whichever transaction commits second.
"""

from BTrees.OOBTree import OOBTree

from zasync.interfaces import ConfigurationError, JobStateError


def check_key(key):
    """A key: a non-empty str."""
    if not isinstance(key, str) or not key:
        raise ConfigurationError(f"key={key!r}: expected a non-empty str")
    return key


def key_index():
    """A new, empty index of keys (with its '' sentinel)."""
    index = OOBTree()
    index[""] = None
    return index


def take_key(queue, job, checked=False):
    """Make `job` the holder of its key; refuse if another job holds it
    (unless the caller has just `checked` that none does)."""
    holder = None if checked else queue.get_by_key(job.key)
    if holder is not None and holder is not job:
        raise JobStateError(
            f"job {job.id}: its key {job.key!r} is held by job {holder.id} "
            f"({holder.status}); wait for that one to complete")
    if queue._keys is None:          # a queue of an older database
        queue._keys = key_index()
    queue._keys[job.key] = job


def release_key(queue, job):
    """Free the job's key, if the job holds it."""
    keys = queue._keys
    if job.key is not None and keys is not None and keys.get(job.key) is job:
        del keys[job.key]
