"""Read-only surveys of a database's queues: counts, the last hour's
completions per minute, the jobs held by workers, and the filtered,
newest-first listing of jobs.

Everything here only reads.  Where the queue's public API would load every
job to sort it, `_newest_first` reads the queue's id index instead (ids
sort by creation time), a read-only use of the queue's internals kept in
this one function.
"""

import datetime
import heapq

from zasync.interfaces import COMPLETED, STATUSES, ConfigurationError
from zasync.web.present import HELD, RUNNING, ScheduleView
from zasync.web.search import find_ids, terms
from zasync.queue.history import CANCELLED, FAILED, failure_order
from zasync.queue.words import job_words

STATES = ("pending", "started", "success", "failure")

#: Minutes of the overview's chart.
CHART_MINUTES = 60
#: The chart stops after reading this many completed jobs of one queue.
CHART_SCAN_LIMIT = 5000
#: A listing that checks its filters on the jobs themselves (those no
#: index answers, see `zasync.web.search`) stops after reading this many.
SCAN_LIMIT = 20_000
#: Jobs on one page of a listing.
PER_PAGE = 50
MAX_PER_PAGE = 500


class FilterError(ConfigurationError):
    """Raised when a listing's filter or page is not understood."""


def held_jobs(container):
    """[(job, record)] of the jobs that dispatchers hold (assigned, active
    or running callbacks), oldest start first."""
    found = {}
    for record in container.dispatchers.values():
        for job in record.jobs:
            if job.id not in found and job.status in HELD:
                found[job.id] = (job, record)
    return sorted(found.values(), key=lambda pair: (
        pair[0].started_at or pair[0].created_at, pair[0].id))


def failure_counts(container):
    """(failures, cancellations) not dismissed, of every queue: a cancelled
    job completes as failed, but the banner counts it apart.  The
    histories keep the counts; no filed job is loaded."""
    failed = cancelled = 0
    for queue in container.values():
        counts = queue.history.failure_counts()
        failed += counts[0]
        cancelled += counts[1]
    return failed, cancelled


def newest_failures(container, count):
    """The `count` newest failures not dismissed (cancellations left out)
    of every queue, newest end first; only those are loaded."""
    jobs = [job for queue in container.values()
            for job in queue.history.newest_failures(count)]
    jobs.sort(key=lambda job: (job.ended_at or job.created_at, job.id), reverse=True)
    return jobs[:count]


def schedule_views(ctx):
    """Every queue's schedules, by queue then name."""
    return [ScheduleView(schedule, ctx.now) for queue in ctx.container.values()
            for schedule in queue.schedules.values()]


#: Healths of a worker that still claims jobs.
SERVING = ("alive", "late", "failing")


def unserved_queues(container, workers):
    """Names of the queues that no live worker of `workers` (`WorkerView`s)
    serves."""
    live = [worker for worker in workers if worker.health in SERVING]
    if any(worker.serves_every_queue for worker in live):
        return set()
    served = {name for worker in live for name in worker.queues}
    return {queue.name for queue in container.values()
            if queue.name not in served}


def running_count(held):
    return sum(1 for job, _ in held if job.status in RUNNING)


def queue_counts(queue, held):
    """{'pending', 'active', 'failed', 'completed'} of one queue.

    'active' counts the jobs held by workers (assigned, running, or
    running their callbacks); 'failed' the failures not yet dismissed;
    'completed' the jobs kept in the history, failed or not.
    """
    return {
        "pending": len(queue),
        "active": sum(1 for job, _ in held if job.queue_name == queue.name),
        "failed": sum(queue.history.failure_counts()),
        "completed": len(queue.history),
    }


def per_minute(queue, now, minutes=CHART_MINUTES, limit=CHART_SCAN_LIMIT):
    """Jobs that completed in each of the last `minutes` minutes, oldest
    minute first: ([succeeded], [failed], complete) where `complete` is
    False if more than `limit` jobs were read and older ones left out."""
    succeeded = [0] * minutes
    failed = [0] * minutes
    start = now.replace(second=0, microsecond=0) - datetime.timedelta(minutes=minutes - 1)
    read = 0
    for job in queue.history:    # newest first
        ended = job.ended_at
        if ended is None:
            continue
        if ended < start:
            break
        read += 1
        if read > limit:
            return succeeded, failed, False
        index = int((ended - start).total_seconds() // 60)
        if 0 <= index < minutes:
            if job.failure is not None:
                failed[index] += 1
            else:
                succeeded[index] += 1
    return succeeded, failed, True


def chart(succeeded, failed, width=300, height=56):
    """Bars of the per-minute chart as numbers for an inline SVG: one slot
    per minute, succeeded at the bottom and failed stacked on it."""
    minutes = len(succeeded)
    top = max([s + f for s, f in zip(succeeded, failed)] + [1])
    slot = width / minutes
    bars = []
    for index, (ok, bad) in enumerate(zip(succeeded, failed)):
        ok_h = ok / top * height
        bad_h = bad / top * height
        bars.append({
            "x": f"{index * slot + 0.5:.1f}", "w": f"{max(slot - 1, 1):.1f}",
            "ok_y": f"{height - ok_h:.1f}", "ok_h": f"{ok_h:.1f}",
            "bad_y": f"{height - ok_h - bad_h:.1f}", "bad_h": f"{bad_h:.1f}",
            "title": f"{minutes - index - 1} min ago: {ok} succeeded, {bad} failed",
            "ok": ok, "bad": bad,
        })
    return {"bars": bars, "top": top, "width": width, "height": height,
            "succeeded": sum(succeeded), "failed": sum(failed)}


# -- listing -------------------------------------------------------------------

class Filters:
    """A listing's filters and page, checked, from a request's query."""

    def __init__(self, params, queue_names):
        self.status = _choice(params, "status", STATUSES)
        self.state = _choice(params, "state", STATES)
        dismissed = _choice(params, "dismissed", ("yes", "no"))
        self.dismissed = None if dismissed is None else dismissed == "yes"
        cancelled = _choice(params, "cancelled", ("yes", "no"))
        self.cancelled = None if cancelled is None else cancelled == "yes"
        queue = params.get("queue")
        if queue is None or queue == "*":
            self.queue = None
        elif queue in queue_names:
            self.queue = queue
        else:
            raise FilterError(
                f"queue={queue!r}: no such queue; expected one of "
                + ", ".join(repr(name) for name in queue_names) + " or '*' for all")
        self.callable = (params.get("callable") or "").strip()[:200]
        self.q = (params.get("q") or "").strip()[:200]
        if self.q and not terms(self.q):
            raise FilterError(
                f"q={self.q!r}: expected words (letters or digits) to search for; "
                f"ids and numbers of 8 or more hex digits are not searched "
                f"(the job-id box finds a job by its id)")
        self.page = _number(params, "page", 1, 1, 1_000_000)
        self.per_page = _number(params, "per_page", PER_PAGE, 1, MAX_PER_PAGE)

    def query(self, **changes):
        """The filters as query parameters, with `changes` applied."""
        found = {"status": self.status, "state": self.state,
                 "dismissed": None if self.dismissed is None else (
                     "yes" if self.dismissed else "no"),
                 "cancelled": None if self.cancelled is None else (
                     "yes" if self.cancelled else "no"),
                 "queue": self.queue, "callable": self.callable or None,
                 "q": self.q or None,
                 "page": self.page if self.page != 1 else None,
                 "per_page": self.per_page if self.per_page != PER_PAGE else None}
        found.update(changes)
        return {key: value for key, value in found.items() if value is not None}

    @property
    def active(self):
        return any(value is not None for value in (
            self.status, self.state, self.dismissed, self.cancelled, self.queue)) \
            or bool(self.callable) or bool(self.q)

    def accepts(self, job):
        if self.status is not None and job.status != self.status:
            return False
        if self.state is not None and job.simple_status != self.state:
            return False
        if self.dismissed is not None and (
                job.failure is None or bool(job.dismissed) != self.dismissed):
            return False
        if self.cancelled is not None and bool(job.cancelled) != self.cancelled:
            return False
        if self.callable:
            try:
                name = job.callable_name
            except Exception:
                return False
            if self.callable.lower() not in name.lower():
                return False
        if self.q:
            found = job_words(job)
            for word, prefix in terms(self.q):
                if not any(w.startswith(word) if prefix else w == word for w in found):
                    return False
        return True


def _choice(params, name, allowed):
    value = params.get(name)
    if value is None or value == "":
        return None
    if value not in allowed:
        raise FilterError(f"{name}={value!r}: expected one of {', '.join(allowed)}")
    return value


def _number(params, name, default, low, high):
    value = params.get(name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise FilterError(f"{name}={value!r}: expected a whole number") from None
    if not low <= number <= high:
        raise FilterError(f"{name}={number}: expected {low} to {high}")
    return number


def _newest_first(queue):
    """The queue's jobs, newest created first, loading a job only when it
    is reached: the small merging sets that no claim has filed yet (the
    inbox: new puts and retries; the history's: jobs cancelled while
    pending) merged with the id index."""
    inbox = getattr(queue, "_inbox", None)
    index = getattr(queue, "_index", None)
    done = getattr(getattr(queue, "history", None), "_done", None)
    if inbox is None or index is None or done is None:   # another IQueue
        yield from sorted(queue.jobs(), key=lambda job: job.id, reverse=True)
        return
    waiting = {}
    for job_set in (*inbox, done):
        for job in job_set:
            waiting[job.id] = job
    fresh = sorted(waiting.items(), reverse=True)
    indexed = ((job_id, None) for job_id in reversed(index.keys())
               if job_id not in waiting)
    for job_id, job in heapq.merge(fresh, indexed, key=lambda pair: pair[0],
                                   reverse=True):
        if job is None:
            job = index.get(job_id)
            if job is None:
                continue
        yield job


def _failures(queue, kind):
    """A queue's failed jobs not dismissed, of `kind` (or all), in
    `failure_order`."""
    history = getattr(queue, "history", None)
    if history is None or not hasattr(history, "iter_failed"):     # another IQueue
        return sorted(queue.failed(), key=failure_order)
    return history.iter_failed(kind)


def candidate_jobs(container, filters):
    queues = container.values() if filters.queue is None else [container[filters.queue]]
    if filters.dismissed is False and filters.state in (None, "failure") \
            and filters.status in (None, COMPLETED):
        # failures not dismissed: the histories list them apart, newest
        # end first, as the banner does, and load a job when it is reached
        kind = None if filters.cancelled is None else (
            CANCELLED if filters.cancelled else FAILED)
        return heapq.merge(*(_failures(queue, kind) for queue in queues),
                           key=failure_order)
    return heapq.merge(*(_newest_first(queue) for queue in queues),
                       key=lambda job: job.id, reverse=True)


def list_jobs(container, filters, scan_limit=SCAN_LIMIT, held=None):
    """(jobs of the page, has_next, complete, total): newest first;
    `complete` is False if the search stopped after `scan_limit` jobs;
    `total` is the number of jobs that match, or None where the filters
    were checked job by job (see `zasync.web.search`)."""
    skip = (filters.page - 1) * filters.per_page
    queues = container.values() if filters.queue is None else [container[filters.queue]]
    found = find_ids(queues, filters, held_jobs(container) if held is None else held)
    if found is not None and found.check is None:
        total = found.total
        page = [job for job in (container.find_job(job_id) for job_id
                                in found.window(skip, filters.per_page))
                if job is not None]
        return page, skip + filters.per_page < total, True, total
    if found is not None:
        candidates = (job for job in (container.find_job(job_id) for job_id in found.ids)
                      if job is not None and found.check(job))
        accepts = None
    else:
        candidates = candidate_jobs(container, filters)
        accepts = filters.accepts
    page = []
    scanned = 0
    for job in candidates:
        scanned += 1
        if scanned > scan_limit:
            return page, False, False, None
        if accepts is not None and not accepts(job):
            continue
        if skip:
            skip -= 1
            continue
        if len(page) == filters.per_page:
            return page, True, True, None
        page.append(job)
    return page, False, True, None
