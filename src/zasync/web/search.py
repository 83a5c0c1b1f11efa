"""Finding the jobs of a listing from the queues' own indexes, without
reading every job.

A listing is the ids of the jobs that match, newest created first (ids
sort by creation time), then one page of them loaded.  The ids come from
what the queues keep anyway: the id index and the merging sets no claim
has filed yet (every job), the pending trees and inbox lanes (pending
jobs), the dispatchers' records (jobs held by workers), the history
(completed jobs), and the history's word and callable indexes (text and
callable search; see `zasync.queue.history`).  So every job is reachable, and a
page costs a pass over ids rather than loading jobs.

Pending and held jobs are not in the word index (it is written as jobs are
filed, after they complete): a search finds them by their callable's name,
read from the jobs themselves.

Filters that no index answers (state success or failure, failures
dismissed or not, one of the held statuses) are checked on the jobs, which
stops after `scan_limit` of them.  Everything here only reads; it is the
one place besides `survey._newest_first` that reads queue internals, and
answers None for another IQueue, whose listing is scanned.
"""

import heapq
import itertools
import re

from zasync.interfaces import ACTIVE, ASSIGNED, CALLBACKS, COMPLETED, NEW, PENDING
from zasync.queue.words import indexed, job_words, words

#: Words of one search that are looked up.
TERM_LIMIT = 10

_TERM = re.compile(r"(\w+)(\*?)")


def terms(text):
    """[(word, prefix)] of a search's text: its words, lower-cased, each
    matching a whole word, or any word it starts if followed by ``*``;
    without the whole words that the index does not keep (ids and long
    numbers, see `zasync.queue.words.indexed`), which no job would match."""
    found = []
    for word, star in _TERM.findall(text.lower()):
        for part in words(word):
            if not (star or indexed(part)):
                continue
            if (part, bool(star)) not in found:
                found.append((part, bool(star)))
    return found[:TERM_LIMIT]


def _supported(queue):
    return all(hasattr(queue, name) for name in ("_index", "_inbox", "_pending_lanes"))\
        and getattr(getattr(queue, "history", None), "_by_end", None) is not None


def _all_ids(queue, index_keys=True):
    index = queue._index
    ids = list(index.keys()) if index_keys else []
    extra = [job_id for lane in queue._inbox for job_id in lane.ids()]
    extra += queue.history._done.ids()
    extra = [job_id for job_id in set(extra) if job_id not in index]
    return ids, extra


def _pending_ids(queue):
    ids = [key[2] for tree in queue._pending_lanes() for key in tree.keys()]
    ids += [job_id for lane in queue._inbox for job_id in lane.ids()]
    taken_out = queue._taken_out
    if taken_out:
        gone = set(taken_out.ids())
        ids = [job_id for job_id in ids if job_id not in gone]
    return ids


def _completed_ids(queue):
    filed, fresh = queue.history.filed_ids()
    return [key[1] for key in filed] + fresh


def _unfiled_jobs(queue):
    """The queue's completed jobs that no claim filed into the history's
    indexes yet (until the next claim; for good where no worker runs)."""
    return iter(queue.history._done)


def _live_jobs(queue, held):
    """The queue's pending jobs (in no order; some, taken out since the
    last claim, no longer pending) and those its workers hold; none if
    `held` is None (a listing of completed jobs).  Then the completed jobs
    not filed yet, which the indexes do not know either."""
    yield from _unfiled_jobs(queue)
    if held is None:
        return
    for tree in queue._pending_lanes():
        yield from tree.values()
    for lane in queue._inbox:
        yield from lane
    for job, _ in held:
        if job.queue_name == queue.name:
            yield job


def _live_names(queue, held):
    """(job id, callable's name) of the live jobs.  The name is kept in the
    job's record: asking the callable for it loaded each job's call (a
    50 MB argument with it)."""
    for job in _live_jobs(queue, held):
        try:
            name = job.callable_name
        except Exception:
            continue
        yield job.id, name


def _text_matches(queue, held, found_terms):
    """(filed, live): ids of the queue's jobs with every term, filed jobs
    from the word index, live ones by their callable's name."""
    matched = None
    for word, prefix in found_terms:
        ids = queue.history.ids_with_word(word, prefix)
        matched = ids if matched is None else matched & ids
        if not matched:
            break
    matched = matched or set()
    live = set()
    # a completed job not filed yet: by all its words, as once filed
    for job in _unfiled_jobs(queue):
        its_words = set(job_words(job))
        if all(any(w.startswith(word) for w in its_words) if prefix
               else word in its_words for word, prefix in found_terms):
            live.add(job.id)
    seen = {}
    for job_id, name in _live_names(queue, held):
        if job_id in live:
            continue
        found = seen.get(name)
        if found is None:
            name_words = words(name)
            found = seen[name] = all(
                any(w.startswith(word) if prefix else w == word for w in name_words)
                for word, prefix in found_terms)
        if found:
            live.add(job_id)
    return matched, live


def _callable_matches(queue, held, part):
    """(filed, live) ids of the queue's jobs whose callable's name
    contains `part`."""
    filed = queue.history.ids_by_callable(part)
    part = part.lower()
    live = {job_id for job_id, name in _live_names(queue, held) if part in name.lower()}
    return filed, live


def _matches(queue, held, filters):
    """(filed, live) ids that the search and callable filters keep, or
    None without either."""
    found = None
    if filters.q:
        found = _text_matches(queue, held, terms(filters.q))
    if filters.callable:
        by_name = _callable_matches(queue, held, filters.callable)
        found = by_name if found is None else (
            found[0] & by_name[0], found[1] & by_name[1])
    return found


class Found:
    """The ids of a listing, newest first, and the check still to make
    on each job (None if the indexes answered every filter)."""

    def __init__(self, ids, check):
        self.ids = ids
        self.check = check

    @property
    def total(self):
        return len(self.ids)

    def window(self, skip, count):
        return self.ids[skip:skip + count]


def _before(job_id):
    """A bound just below `job_id`: above every id that sorts before it
    (ids are short and never hold the last character)."""
    last = ord(job_id[-1])
    return job_id[:-1] + (chr(last - 1) + _LAST if last else "")


_LAST = "\U0010ffff"


def _descending(tree):
    """The keys of `tree`, largest first, lazily: each a `maxKey` below the
    one before, reading only the buckets it reaches (BTrees iterate
    lazily only forwards; `reversed` reads every bucket first)."""
    try:
        key = tree.maxKey()
    except ValueError:
        return
    while True:
        yield key
        try:
            key = tree.maxKey(_before(key))
        except ValueError:
            return


class Everything:
    """Every job of one queue, newest first, read lazily from the id
    index's end nearer the page, counted from the queue's counters: the
    first and the last pages read a few buckets of the index, not all.
    (A job cancelled or removed since the last claim is counted as
    pending or completed and still in the index: until that claim, the
    pages counted from the oldest may be one job off.)"""

    check = None

    def __init__(self, queue, held):
        self._index = queue._index
        _, fresh = _all_ids(queue, index_keys=False)
        self._fresh = sorted(fresh)
        own_held = sum(1 for job, _ in held if job.queue_name == queue.name)
        # pending (in the trees and the inbox), held, and completed
        self.total = len(queue) + own_held + len(queue.history)

    @property
    def ids(self):
        return list(self.window(0, self.total))

    def window(self, skip, count):
        fresh = self._fresh
        if skip * 2 <= self.total:
            found = heapq.merge(_descending(self._index), reversed(fresh), reverse=True)
            return list(itertools.islice(found, skip, skip + count))
        start = self.total - skip - count   # counted from the oldest
        if start < 0:
            count += start
            start = 0
        if count <= 0:
            return []     # past the last page
        found = heapq.merge(iter(self._index.keys()), fresh)
        return list(itertools.islice(found, start, start + count))[::-1]


def find_ids(queues, filters, held):
    """A `Found` for `filters` over `queues`, or None if a queue is not
    a `zasync.Queue` or a filter has no index (status 'new')."""
    if not all(_supported(queue) for queue in queues):
        return None
    status, state = filters.status, filters.state
    if status == NEW or filters.dismissed is not None:
        return None      # no index; failures not dismissed have their own path
    residual = []
    if status in (ASSIGNED, ACTIVE, CALLBACKS):
        residual.append(lambda job: job.status == status)
    if state in ("success", "failure"):
        residual.append(lambda job: job.simple_status == state)
    cancelled = getattr(filters, "cancelled", None)
    if cancelled is not None:     # no index: checked on each job
        residual.append(lambda job: bool(job.cancelled) == cancelled)
    if (status, state) in ((PENDING, None), (None, "pending"), (PENDING, "pending")):
        source = "pending"
    elif status in (ASSIGNED, ACTIVE, CALLBACKS) or state == "started":
        if status is not None and state not in (None, "started"):
            return Found([], None)
        source = "held"
    elif status == COMPLETED or state in ("success", "failure"):
        if state in ("pending", "started"):
            return Found([], None)
        source = "completed"
    elif status is None and state is None:
        source = "all"
    else:
        return Found([], None)    # contradicting status and state

    if source == "all" and len(queues) == 1 and not (filters.q or filters.callable):
        return Everything(queues[0], held)
    ids = []
    extra = []
    for queue in queues:
        queue_held = [pair for pair in held if pair[0].queue_name == queue.name]
        own = []
        wanted = _matches(queue, None if source == "completed" else queue_held, filters)
        if wanted is not None:
            # the matches are fewer than the source's jobs: start from them
            filed, live = wanted
            if source == "all":
                fresh = list(filed | live)
            elif source == "completed":
                # (with held None, `live` holds only jobs not filed yet)
                fresh = list(filed | live)
            elif source == "pending":
                fresh = [job_id for job_id in _pending_ids(queue) if job_id in live]
            else:
                fresh = [job.id for job, _ in queue_held if job.id in live]
        elif source == "all":
            own, fresh = _all_ids(queue)
        elif source == "pending":
            fresh = _pending_ids(queue)
        elif source == "held":
            fresh = [job.id for job, _ in queue_held]
        else:
            fresh = _completed_ids(queue)
        ids.extend(own)
        extra.extend(fresh)
    if extra or len(queues) > 1:
        ids.extend(extra)
        ids = sorted(set(ids), reverse=True)
    else:
        ids.reverse()
    check = None
    if residual:
        def check(job):
            return all(test(job) for test in residual)
    return Found(ids, check)
