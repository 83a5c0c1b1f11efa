"""What a queue keeps of its completed jobs.

A finishing job's own transaction only adds the job to a merging `JobSet`
(so that the results of concurrent jobs never conflict there); the workers'
claims file them by end time and prune what is older than the retention.
Failed jobs are also listed apart until someone dismisses them, so that an
operator's banner can count them.

Filing and pruning are done by one dispatcher at a time, the keeper: two
workers filing the same jobs insert the same keys at the same end of the
time-ordered tree, and one of the two claims conflicts, every time.  The
keeper holds a lease that its claims renew; when it stops, or its claims
stop for `KEEPER_LEASE`, the next claimer takes over.  So that the set of
newly completed jobs stays small (each result's commit rewrites it), any
claim files it once it holds `FILE_ANYWAY` jobs.

Filing also indexes the job for search (see `zasync.queue.words`):
``_callables`` holds a (callable's name, job id) key for each filed job, and
``_words`` a (word, job id) key for each word of its arguments, result and
failure (both `WordTree`s, whose small nodes keep a batch's scattered keys
from rewriting big parents).  The words of the name are found through
``_callables``, each distinct name read once: every job of a callable has
them, and as keys of ``_words`` (four of a noop job's five) they rewrote a
bucket per word at each filing, a fifth to a quarter of the objects and
bytes an in-process drain wrote per job (jobs filed before keep them
there too).
A finishing job reads its own words and name into a `Words` record, in its
own transaction, which its note refers to, so the keeper need not load the
job, and later completions, which rewrite the set of jobs waiting to be
filed, do not rewrite its words; only filing and pruning write the two
trees, so they add no writer, and so no conflict, to those the history had.
Rejected: the keeper reading the words from the jobs it files, which made
completions no slower and wrote a fifth fewer bytes, but loaded every job
(over ZEO, jobs other workers ran) in the claims, the transactions every
worker of a queue waits on.  Sets
of (word, id) keys rather than a tree of id sets per word: one persistent
object per rare word (most words of arguments are rare) would cost more
than the keys themselves.
"""

import datetime

import BTrees.Length
import persistent
from BTrees.OOBTree import OOBTree

from zasync.job import clock
from zasync.queue.claim import prefetch
from zasync.interfaces import ConfigurationError
from zasync.job.jobset import JobSet
from zasync.queue.trees import WideTree, WordTree
from zasync.queue.words import Words, indexed, job_words, words

#: The largest character, to end a range of (word, id) keys.
_LAST = "\U0010ffff"

DEFAULT_RETENTION = datetime.timedelta(days=7)
#: Microseconds a keeper's lease lasts after its last renewal.
KEEPER_LEASE = 10_000_000
#: Newly completed jobs that any claim files, keeper or not.
FILE_ANYWAY = 256


class Keeper(persistent.Persistent):
    """Which dispatcher files and prunes a history, and until when."""

    dispatcher_id = None
    until = 0           # microseconds since the epoch


class History(persistent.Persistent):
    """Completed jobs of one queue, newest first."""

    def __init__(self, retention=DEFAULT_RETENTION):
        self.retention = clock.duration(retention, "retention", allow_none=False)
        self._done = JobSet()
        # (-end micros, id) -> job: iterating gives the newest first, and
        # the oldest, to prune, is the largest key
        self._by_end = WideTree()
        self._failed = OOBTree()        # id -> failed job not dismissed
        self._length = BTrees.Length.Length()
        self._words = WordTree()
        self._callables = WordTree()

    # Histories made before search have no indexes until `archive` makes
    # them; the jobs filed before are not found by a search.
    _words = None
    _callables = None

    def set_retention(self, retention):
        retention = clock.duration(retention, "retention", allow_none=False)
        if retention <= datetime.timedelta(0):
            raise ConfigurationError(
                f"retention={retention!r}: expected a positive timedelta")
        self.retention = retention

    # -- written by finishing jobs ------------------------------------------

    def add(self, job):
        """File a completed job (merges with concurrent additions), with
        what its filing needs, so that the keeper need not load it."""
        name = job.callable_name
        self._done.add(job, note=(job._ended_at_us, job._failure is not None,
                                  Words(job_words(job, of_name=False), name)))

    # -- written by workers' claims -----------------------------------------

    _keeper = None

    def keeps(self, dispatcher_id, now_us):
        """Whether a claim of `dispatcher_id` files and prunes (taking or
        renewing the keeper's lease if so)."""
        keeper = self._keeper
        if keeper is None:
            keeper = self._keeper = Keeper()
        if keeper.dispatcher_id == dispatcher_id:
            if keeper.until - now_us < KEEPER_LEASE // 2:
                keeper.until = now_us + KEEPER_LEASE
            return True
        if keeper.until > now_us:
            # another dispatcher keeps it
            return len(self._done) >= FILE_ANYWAY
        keeper.dispatcher_id = dispatcher_id
        keeper.until = now_us + KEEPER_LEASE
        return True

    def release(self, dispatcher_id):
        """A stopping dispatcher gives up the lease, so that the next
        claimer takes over at once."""
        keeper = self._keeper
        if keeper is not None and keeper.dispatcher_id == dispatcher_id:
            keeper.dispatcher_id = None
            keeper.until = 0

    def has_work(self, now_us):
        if self._done:
            return True
        if self._by_end:
            return -self._by_end.maxKey()[0] < now_us - _micros(self.retention)
        return False

    def archive(self, index):
        """Move newly completed jobs into the time-ordered store."""
        if not self._done:
            return 0
        entries = self._done.noted()
        # The keeper files jobs other workers ran.  Added with a note (their
        # end, whether they failed), they are not loaded; those added
        # before notes are, asked for all at once (one request over ZEO).
        prefetch(self._p_jar, [job for _, note, job in entries if note is None]
                 + [note[2] for _, note, _ in entries
                    if note is not None and len(note) == 3])
        now_us = None
        if self._words is None:
            self._words = WordTree()
            self._callables = WordTree()
        for job_id, note, job in entries:
            if note is None:
                note = (job._ended_at_us, job._failure is not None)
            end, failed = note[:2]
            if end is None:
                now_us = now_us or clock.to_micros(clock.now())
                end = now_us
            key = (-end, job_id)
            if key not in self._by_end:
                self._by_end[key] = job
                self._length.change(1)
                if len(note) == 3:
                    found, name = note[2].words, note[2].name
                elif len(note) == 4:      # words noted before `Words`
                    found, name = note[2:]
                else:   # notes made before search have no words: read the job
                    found, name = job_words(job, of_name=False), job.callable_name
                self._index_words(job_id, found, name)
            if failed and not getattr(job, "dismissed", False):
                self._failed[job_id] = job
            if job_id not in index:
                index[job_id] = job
        self._done.remove_all([job_id for job_id, _, _ in entries])
        return len(entries)

    def prune(self, now_us, index, limit=500):
        """Forget up to `limit` jobs that ended before the retention."""
        cutoff = now_us - _micros(self.retention)
        removed = 0
        while self._by_end and removed < limit:
            key = self._by_end.maxKey()
            if -key[0] >= cutoff:
                break
            job = self._by_end.pop(key)
            self._length.change(-1)
            self._unindex_words(job)
            self._failed.pop(job.id, None)
            if index.get(job.id) is job:
                del index[job.id]
            removed += 1
        return removed

    def _index_words(self, job_id, found, name):
        words = self._words
        for word in found:
            if indexed(word):       # words noted before `indexed` may not be
                words.add((word, job_id))
        self._callables.add((name, job_id))

    def _unindex_words(self, job):
        if self._words is None:
            return
        # an index made before `WordTree` may hold words not `indexed` now,
        # and one filed before names had their own index, its name's words
        every = not isinstance(self._words, WordTree)
        for word in job_words(job, every=every):
            key = (word, job.id)
            if key in self._words:
                self._words.remove(key)
        key = (job.callable_name, job.id)
        if key in self._callables:
            self._callables.remove(key)

    # -- searched ------------------------------------------------------------

    def ids_with_word(self, word, prefix=False):
        """Ids of the filed jobs that have `word` (or a word that starts
        with it, if `prefix`): a set.  The words of a job's callable's name
        are found through `_callables`, each distinct name read once;
        `_words` holds the others (and, for jobs filed before, those too)."""
        if self._words is None or not word:
            return set()
        if not prefix:
            found = {job_id for _, job_id in self._words.keys((word,), (word, _LAST))}
        else:
            found = set()
            for found_word, job_id in self._words.keys((word,)):
                if not found_word.startswith(word):
                    break
                found.add(job_id)
        for name in self._names():
            name_words = words(name)
            if (any(w.startswith(word) for w in name_words) if prefix
                    else word in name_words):
                found.update(self._ids_named(name))
        return found

    def ids_by_callable(self, part):
        """Ids of the filed jobs whose callable's name contains `part`
        (case-insensitive): a set.  Reads each distinct name once, then
        the ids of the names that match."""
        found = set()
        part = part.lower()
        for name in self._names():
            if part in name.lower():
                found.update(self._ids_named(name))
        return found

    def _names(self):
        """The distinct callables' names of the filed jobs, each read once
        (jumping over the keys of the name before)."""
        keys = self._callables
        if keys is None:
            return
        low = None
        while True:
            try:
                name, _ = keys.minKey() if low is None else keys.minKey((low, _LAST))
            except ValueError:
                return
            yield name
            low = name

    def _ids_named(self, name):
        return (job_id for _, job_id in self._callables.keys((name,), (name, _LAST)))

    def filed_ids(self):
        """The ids of the filed jobs, newest end first (a lazy sequence of
        (-end, id) keys, which can be sliced), and those completed but not
        yet filed."""
        return self._by_end.keys(), self._done.ids()

    # -- read and acted on by operators -------------------------------------

    def dismiss(self, job):
        """Take a failed job off the list of failures to look at."""
        job.dismissed = True
        if self._done.get(job.id) is not None:
            return
        self._failed.pop(job.id, None)

    def forget(self, job):
        """Take a job out of the history (it is retried)."""
        self._done.discard(job.id)
        self._failed.pop(job.id, None)
        if job._ended_at_us is not None:
            key = (-job._ended_at_us, job.id)
            if self._by_end.pop(key, None) is not None:
                self._length.change(-1)
                self._unindex_words(job)

    def failed(self):
        """Failed jobs not dismissed, newest first."""
        jobs = [job for job in self._done if job.failure is not None
                and not getattr(job, "dismissed", False)]
        # a dismissal racing the claim that filed the job leaves it here
        jobs.extend(job for job in self._failed.values()
                    if not getattr(job, "dismissed", False))
        return sorted(jobs, key=lambda j: (j.ended_at or clock.now(), j.id),
                      reverse=True)

    def __len__(self):
        return self._length() + len(self._done)

    def __iter__(self):
        """Completed jobs, newest first."""
        fresh = sorted(self._done, key=lambda j: (j.ended_at or clock.now(), j.id),
                       reverse=True)
        yield from fresh
        yield from self._by_end.values()


def _micros(delta):
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds
