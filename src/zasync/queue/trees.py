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

from BTrees.OOBTree import OOBTree, OOTreeSet


class WideTree(OOBTree):
    max_leaf_size = 60


class WordTree(OOTreeSet):
    """A set of keys shaped for the history's search index.

    Filing a batch of jobs adds its keys all over the index, a (word, id)
    key under each word; each bucket that fills splits and rewrites its
    parent, which with `OOTreeSet`'s 250 children held 250 keys, some 11 kB.
    With 6,000 jobs filed 20 at a time, those parents were 4.8 kB of the
    9.2 kB written per job; with at most 16 children, 0.5 kB (bytes written
    per job, parents and leaves: 250 children 6.7 kB, 64 3.2 kB, 24 2.4 kB,
    16 2.3 kB;
    with leaves of 24 or 16 keys instead of 30, 0.2-0.3 kB less, but a
    search for a common word reads its leaves one after the other, a
    quarter more of them).  A split rewrites a few hundred bytes and the
    tree is two levels deeper, which a search, descending once and then
    reading the leaves from its first key on, hardly notices.  Histories
    made before this class keep their `OOTreeSet`.
    """

    max_internal_size = 16
