"""A BTree shaped for how the queue's ordered structures are written.

The pending jobs and the history are written at their ends: claims take
the first keys of ``_pending``, the history's keeper adds each newly
completed job before the first key of ``_by_end``.  A bucket split in the
middle keeps half its keys, so buckets filled from one end stay half full,
and every bucket that splits or empties rewrites the tree's root, whose
pickle holds a key per bucket.  With OOBTree's 30 keys a bucket, draining
a backlog of 5,000 jobs rewrote one of the two roots 436 times in 313
commits, 9 kB each, a third of what the dispatcher wrote.  With 60: 279
times, 4.4 kB each, a bucket's own rewrite still a few kB; bytes written
per job fell from 2,380 to 1,950 (with 120, 1,990: the buckets then cost
what the roots saved).

Only the size of a bucket differs from `OOBTree`: same keys, same
conflict resolution.  Queues made before this class keep their OOBTrees.
"""

from BTrees.OOBTree import OOBTree


class WideTree(OOBTree):
    max_leaf_size = 60
