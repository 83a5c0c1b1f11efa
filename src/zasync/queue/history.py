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

Failures not dismissed are listed apart, in ``_failures``, by kind
(failed, or cancelled), then newest end first, with a `BTrees.Length` of
each kind, so that every page's banner reads two counts and the few newest
failures instead of loading and sorting them all (with 25,000 failures,
1.7 s a page).  A count changes in the transaction that adds or removes an
entry: filing, a dismissal, a retry, pruning.  Two of them on one job
conflict, so a count cannot drift: they write its key in ``_failures``
(or ``_by_end``), the job itself, or both remove it from ``_done``.
A dismissal of a job that is not filed yet also adds it to
``_dismissed_early``, a set that merges: a claim filing the job at the same
moment read it as not dismissed and listed it, and both commit (the
dismissal is an operator's transaction, which must not conflict with
workers); the next claim takes it off the list again, and meanwhile
`failed` and `newest_failures` skip it (the counts include it until then).
Rejected: a mark at the job's key, which made that race conflict, on the
dismissal's side when the claim committed first (an operator's dismissal
failed in a test); counting in the finishing job's transaction (`add`),
which adds a writer to every failure's commit and still races a dismissal
the same way.
"""

import datetime
import heapq
import itertools

import BTrees.Length
import persistent

from zasync.job import clock
from zasync.queue.claim import prefetch
from zasync.interfaces import Cancelled, ConfigurationError
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
#: The kinds of failures not dismissed, the first part of their keys.
FAILED, CANCELLED = 0, 1


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
        # (kind, -end micros, id) -> filed failed job not dismissed; and a
        # count of each kind
        self._failures = WideTree()
        self._failure_counts = (BTrees.Length.Length(), BTrees.Length.Length())
        # failed jobs dismissed before a claim filed them, for the next
        # claim to take off `_failures` should a racing claim list them
        self._dismissed_early = JobSet()
        self._length = BTrees.Length.Length()
        self._words = WordTree()
        self._callables = WordTree()

    # Histories made before search have no indexes until `archive` makes
    # them; the jobs filed before are not found by a search.
    _words = None
    _callables = None
    # Histories made before `_failures` list failures in `_failed` (id ->
    # job) until `install`, or a change to the list, indexes them
    # (`index_failures`).
    _failures = None
    _failure_counts = None
    _failed = None
    _dismissed_early = None

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
        if self._done or self._dismissed_early:
            return True
        if self._by_end:
            return -self._by_end.maxKey()[0] < now_us - _micros(self.retention)
        return False

    def archive(self, index):
        """Move newly completed jobs into the time-ordered store."""
        self.index_failures()
        if not self._done:
            self._unlist_dismissed_early()
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
            if failed:
                self._list_failure(job)
            if job_id not in index:
                index[job_id] = job
        self._done.remove_all([job_id for job_id, _, _ in entries])
        self._unlist_dismissed_early()
        return len(entries)

    def _unlist_dismissed_early(self):
        """Take off the list the jobs dismissed before they were filed,
        once filed (a claim racing the dismissal may have listed them)."""
        early = self._dismissed_early
        if not early:
            return
        filed = []
        for job_id, _, job in early.noted():
            if job_id in self._done:
                continue        # a later claim files it, and reads it dismissed
            if getattr(job, "dismissed", False):   # (not retried since)
                self._unlist_failure(job)
            filed.append(job_id)
        early.remove_all(filed)

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
            self._unlist_failure(job)
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
        if getattr(job, "dismissed", False):
            return
        self.index_failures()
        job.dismissed = True
        if job.id in self._done:
            # not filed yet: a claim filing it now may list it all the same
            self._dismissed_early.add(job)
        else:
            self._unlist_failure(job)

    def forget(self, job):
        """Take a job out of the history (it is retried)."""
        self.index_failures()
        self._done.discard(job.id)
        self._unlist_failure(job)
        if job._ended_at_us is not None:
            key = (-job._ended_at_us, job.id)
            if self._by_end.pop(key, None) is not None:
                self._length.change(-1)
                self._unindex_words(job)

    def failed(self):
        """Failed jobs not dismissed, newest first."""
        return list(self.iter_failed())

    def iter_failed(self, kind=None):
        """Failed jobs not dismissed, newest end first (`failure_order`),
        of one `kind` (FAILED or CANCELLED) or both; a job is loaded only
        when it is reached, but for those no claim filed yet."""
        if self._failures is None:
            yield from (job for job in self._failed_before_index()
                        if kind is None or _kind(job) == kind)
            return
        fresh = self._unfiled_failures()
        kinds = (FAILED, CANCELLED) if kind is None else (kind,)
        for _, job in heapq.merge(*(self._newest(each, fresh) for each in kinds),
                                  key=lambda entry: entry[0][1:]):
            yield job

    def failure_counts(self):
        """(failed, cancelled): how many failed jobs not dismissed were not
        cancelled, and how many were.  Only the jobs not yet filed are
        loaded (a claim files them)."""
        if self._failures is None:
            failed = self._failed_before_index()
            cancelled = sum(1 for job in failed if _kind(job) == CANCELLED)
            return len(failed) - cancelled, cancelled
        counts = [count() for count in self._failure_counts]
        for job in self._unfiled_failures():
            counts[_kind(job)] += 1
        return tuple(counts)

    def newest_failures(self, count, kind=FAILED):
        """The `count` newest failed jobs not dismissed of one `kind`
        (FAILED or CANCELLED), newest end first.  Only those are loaded,
        and the jobs not yet filed."""
        if self._failures is None:
            return list(itertools.islice(
                (job for job in self._failed_before_index() if _kind(job) == kind), count))
        found = self._newest(kind, self._unfiled_failures())
        return [job for _, job in itertools.islice(found, count)]

    def _newest(self, kind, fresh):
        """(key, job) of the failures of `kind` not dismissed, newest end
        first: those filed, read in key order, and those of `fresh` (not
        yet filed)."""
        fresh = sorted(((_failure_key(job), job) for job in fresh if _kind(job) == kind),
                       key=_first)
        # (no upper bound: a range's end would load the bucket holding it)
        filed = ((key, job) for key, job in itertools.takewhile(
            lambda item: item[0][0] == kind, self._failures.items((kind,)))
                 # (listed by a claim racing its dismissal, until the next)
                 if not getattr(job, "dismissed", False))
        return heapq.merge(fresh, filed, key=_first)

    def _list_failure(self, job):
        """List a failed job that is being filed (unless dismissed)."""
        key = _failure_key(job)
        if key in self._failures:
            return
        if not getattr(job, "dismissed", False):   # (before it was added)
            self._failures[key] = job
            self._failure_counts[key[0]].change(1)

    def _unlist_failure(self, job):
        if job._failure is None:
            return
        if self._failures.pop(_failure_key(job), None) is not None:
            self._failure_counts[_kind(job)].change(-1)

    def _unfiled_failures(self):
        """Failed jobs not dismissed that no claim filed yet (loaded)."""
        return [job for _, note, job in self._done.noted()
                if (note is None or note[1]) and job._failure is not None
                and not getattr(job, "dismissed", False)]

    def index_failures(self):
        """Give a history made before `_failures` its list and counts of
        failures, from `_failed` (once: it loads every failed job).

        `zasync.install` does it in a transaction of its own; every change
        to the list (filing, a dismissal, a retry) calls this first, for a
        database not installed again since.  Indexing writes the history
        itself: two transactions doing it at once conflict, and one whose
        snapshot was taken before the index was made cannot commit after
        it, so none changes the old list once it was copied.
        """
        if self._failures is not None:
            return
        failures = WideTree()
        counts = (BTrees.Length.Length(), BTrees.Length.Length())
        if self._failed is not None:
            listed = list(self._failed.values())
            prefetch(self._p_jar, listed)
            for job in listed:
                # a dismissal racing the claim that filed the job left it
                if not getattr(job, "dismissed", False):
                    key = _failure_key(job)
                    failures[key] = job
                    counts[key[0]].change(1)
        self._failures, self._failure_counts = failures, counts
        self._dismissed_early = JobSet()
        if "_failed" in self.__dict__:
            del self._failed

    def _failed_before_index(self):
        """`failed` of a history made before `_failures`: every failed job
        loaded and sorted."""
        jobs = [job for job in self._done if job.failure is not None
                and not getattr(job, "dismissed", False)]
        if self._failed is not None:
            # a dismissal racing the claim that filed the job left it here
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


def _kind(job):
    return CANCELLED if job._failure.check(Cancelled) is not None else FAILED


def _failure_key(job):
    """A failed job's key in `History._failures`: its kind, then newest end
    first."""
    return (_kind(job), -(job._ended_at_us or 0), job.id)


def failure_order(job):
    """The order of `History.iter_failed`, as a sort key: newest end first,
    then by id."""
    return _failure_key(job)[1:]


def _first(entry):
    return entry[0]


def _micros(delta):
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds
