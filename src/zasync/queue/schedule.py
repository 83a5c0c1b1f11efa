"""Recurring jobs: a `Schedule` kept in its queue, and its occurrences.

Each occurrence is an ordinary job of the queue (an `Occurrence`, which
knows its schedule and its time), put with `begin_after` set to its time.
Its one callback, which a worker runs in a transaction of its own once the
occurrence's outcome is stored (and which recovery hands on if that worker
dies), puts the next occurrence.  So a schedule has one occurrence waiting
or running at a time: however many workers claim from the queue, each
occurrence is claimed once, and two runs never overlap.

Rejected: a scheduler thread in each dispatcher putting the due
occurrences, which needs a lock or a leader across processes to put each
one once, and keeps putting while the runs pile up.

Who writes what: `Queue.schedule` and `Queue.unschedule` write the queue's
tree of schedules (an operator's or an application's transaction); each
callback writes its schedule (the counts, the next occurrence) and puts
the next job; nothing else writes a schedule, so they do not conflict.

The catch-up policies (see `ISchedule`) decide what a missed occurrence
becomes; an occurrence is *late* if it starts at or after the time of the
occurrence that follows it.
"""

import datetime
import logging

import persistent
from BTrees.OOBTree import OOBTree
from zope.interface import implementer

from zasync.job import clock, storable
from zasync.interfaces import (
    COMPLETED, Cancelled, ConfigurationError, DuplicateScheduleError, ISchedule,
    JobStateError, UnknownScheduleError)
from zasync.job.job import Job, check_call
from zasync.job.options import check_priority, check_retry_policy

logger = logging.getLogger(__name__)

CATCH_UPS = ("one", "all", "none")

#: Missed cron occurrences counted one by one at most; past that the count
#: is a lower bound (a minute's cron missed for months).
COUNT_LIMIT = 100_000

_TICK = datetime.timedelta(microseconds=1)


def check_name(name):
    """A schedule name: a non-empty str without '/' or control characters
    (it appears in URLs and on the command line)."""
    if (not isinstance(name, str) or not name or len(name) > 200 or "/" in name
            or any(ord(c) < 32 or ord(c) == 127 for c in name)):
        raise ConfigurationError(
            f"schedule name {name!r}: expected a non-empty str of at most 200 "
            f"characters, without '/' or control characters")
    return name


def check_cron(expression):
    """Check a cron expression (5 fields, or 6 with seconds last)."""
    from croniter import croniter
    if not isinstance(expression, str) or not croniter.is_valid(expression):
        raise ConfigurationError(
            f"cron={expression!r}: expected a cron expression such as "
            f"'*/5 * * * *' (minute hour day month weekday, in UTC)")
    return expression


def cron_next(expression, after):
    """The first time of `expression` strictly after `after` (UTC)."""
    from croniter import croniter
    found = croniter(expression, after.astimezone(clock.UTC)).get_next(datetime.datetime)
    return found.astimezone(clock.UTC)


def _check_timing(every, cron, catch_up):
    if (every is None) == (cron is None):
        raise ConfigurationError(
            f"every={every!r}, cron={cron!r}: give exactly one of every (a "
            f"timedelta) and cron (an expression)")
    if every is not None and (not isinstance(every, datetime.timedelta)
                              or every <= datetime.timedelta(0)):
        raise ConfigurationError(f"every={every!r}: expected a positive datetime.timedelta")
    if cron is not None:
        check_cron(cron)
    if catch_up not in CATCH_UPS:
        raise ConfigurationError(
            f"catch_up={catch_up!r}: expected one of " + ", ".join(map(repr, CATCH_UPS)))


@implementer(ISchedule)
class Schedule(persistent.Persistent):
    """See `ISchedule`."""

    _queue = None
    every = None
    cron = None
    start = None
    next_job = None
    next_at = None
    last_job = None
    last_at = None
    runs = 0
    skipped = 0

    def __init__(self, callable, *args, every=None, cron=None, name=None,
                 catch_up="one", start=None, priority=0, retry_policy=None,
                 **kwargs):
        check_call(callable, args, kwargs)
        _check_timing(every, cron, catch_up)
        self.name = check_name(storable.describe(callable) if name is None else name)
        self.callable = callable
        self.args = tuple(args)
        self.kwargs = dict(kwargs)
        self.every = every
        self.cron = cron
        self.catch_up = catch_up
        self.priority = check_priority(priority)
        self.retry_policy = check_retry_policy(retry_policy)
        self.created_at = clock.now()
        if start is not None:
            start = clock.aware(start, "start")
        elif every is not None:
            start = self.created_at + every
        # every: the occurrences are start + k * every; cron: none before start
        self.start = start

    def __repr__(self):
        timing = f"every {self.every}" if self.every is not None else f"cron {self.cron!r}"
        return f"<zasync.Schedule {self.name!r} {self.callable_name} {timing}>"

    @property
    def queue(self):
        return self._queue

    @property
    def callable_name(self):
        return storable.describe(self.callable)

    # -- times ---------------------------------------------------------------

    def next_time(self, after):
        """See `ISchedule`."""
        if self.every is not None:
            if after < self.start:
                return self.start
            return self.start + ((after - self.start) // self.every + 1) * self.every
        return cron_next(self.cron, after)

    def first_time(self, now):
        """The first occurrence due at or after `now` (and `start`)."""
        if self.start is not None and self.start > now:
            now = self.start
        return self.next_time(now - _TICK)

    def _count(self, first, until):
        """How many occurrences from `first` to `until`, both included."""
        if first > until:
            return 0
        if self.every is not None:
            return (until - first) // self.every + 1
        count, when = 0, first
        while when <= until and count < COUNT_LIMIT:
            count += 1
            when = self.next_time(when)
        return count

    def is_late(self, occurrence, now):
        """Whether `occurrence` starting at `now` missed its slot."""
        return now >= self.next_time(occurrence.occurs_at)

    # -- occurrences -----------------------------------------------------------

    def _put_next(self, at):
        job = Occurrence(self, at)
        job.add_callback(Job(advance, self, job))
        self._queue.put(job, begin_after=at, priority=self.priority,
                        retry_policy=self.retry_policy)
        self.next_job = job
        self.next_at = at
        return job

    def _occurred(self, occurrence, now=None):
        """Count the completed `occurrence` and put the next one."""
        if self._queue is None or self.next_job is not occurrence:
            logger.info("schedule %r: job %s completed after the schedule was "
                        "removed or moved on; nothing more to put", self.name,
                        occurrence.id)
            return None
        now = now or clock.now()
        at = occurrence.occurs_at
        failure = occurrence.failure
        if occurrence.late_skipped or (failure is not None and failure.check(Cancelled)
                                       and occurrence.attempt_count == 0):
            self.skipped += 1
        else:
            self.runs += 1
        self.last_job = occurrence
        self.last_at = at
        following = self.next_time(at)
        if self.catch_up != "all" and following <= now:
            missed = self._count(following, now)
            self.skipped += missed
            following = self.next_time(now)
            logger.info("schedule %r: job %s (occurrence %s) ended late; %d "
                        "occurrence(s) passed over (catch_up=%r)", self.name,
                        occurrence.id, at.isoformat(), missed, self.catch_up)
        job = self._put_next(following)
        logger.info("schedule %r: job %s (occurrence %s) completed; next "
                    "occurrence %s is job %s", self.name, occurrence.id,
                    at.isoformat(), following.isoformat(), job.id)
        return job

    @property
    def stalled(self):
        """See `ISchedule`."""
        # A healthy chain never shows a completed next run: the callback
        # commits its successor before its job is marked completed.
        job = self.next_job
        return self._queue is not None and (job is None or job.status == COMPLETED)

    def resume(self, now=None):
        """See `ISchedule`."""
        if not self.stalled:
            return None
        job = self._put_next(self.first_time(now or clock.now()))
        logger.warning("schedule %r resumed: its next run is job %s at %s",
                       self.name, job.id, self.next_at.isoformat())
        return job

    def check_removable(self, job):
        """Refuse to take this schedule's pending run out of its queue."""
        if self._queue is not None and self.next_job is job:
            raise JobStateError(
                f"job {job.id} is the next run of schedule {self.name!r}: "
                f"removing it would stop the schedule; cancel it to skip this "
                f"run, or unschedule {self.name!r}")

    def remove(self):
        """See `ISchedule`."""
        if self._queue is None:
            return False
        self._queue.unschedule(self.name)
        return True

    def _detach(self):
        """Leave the queue; cancel the occurrence waiting or running."""
        self._queue = None
        job = self.next_job
        self.next_at = None
        if job is not None and job.status != COMPLETED:
            job.cancel()
            logger.info("schedule %r removed; its occurrence job %s is cancelled",
                        self.name, job.id)


def define(queue, callable, *args, **options):
    """`Queue.schedule`: add a `Schedule` to `queue` and put its first run."""
    if queue._p_jar is None:
        raise JobStateError(f"{queue!r} is not stored in a database")
    made = Schedule(callable, *args, **options)
    if made.name in queue.schedules:
        raise DuplicateScheduleError(
            f"name={made.name!r}: {queue!r} already has a schedule of this "
            f"name; give another name, or unschedule it first")
    if queue._schedules is None:
        queue._schedules = OOBTree()
    queue._schedules[made.name] = made
    made._queue = queue
    made._put_next(made.first_time(clock.now()))
    return made


def undefine(queue, name):
    """`Queue.unschedule`: remove the schedule `name` of `queue`."""
    found = queue.schedules.get(name) if isinstance(name, str) else None
    if found is None:
        raise UnknownScheduleError(
            f"no schedule named {name!r} in {queue!r}; defined: "
            + (", ".join(repr(n) for n in queue.schedules.keys()) or "none"))
    del queue._schedules[name]
    found._detach()
    return found


class Occurrence(Job):
    """One run of a `Schedule`: an ordinary job calling the schedule's
    callable, which knows its schedule and its time (`occurs_at`)."""

    schedule = None
    occurs_at = None
    late_skipped = False     # True if catch_up='none' skipped it

    def __init__(self, schedule, at):
        super().__init__(schedule.callable, *schedule.args, **schedule.kwargs)
        self.schedule = schedule
        self.occurs_at = at

    def _invoke(self, *extra):
        schedule = self.schedule
        if (not extra and schedule is not None and schedule.catch_up == "none"
                and schedule.is_late(self, clock.now())):
            self.late_skipped = True
            logger.info("schedule %r: job %s (occurrence %s) started late; "
                        "skipped (catch_up='none')", schedule.name, self.id,
                        self.occurs_at.isoformat())
            return None
        return super()._invoke(*extra)


def advance(outcome, schedule, occurrence):
    """The callback of every occurrence: count it and put the next one."""
    job = schedule._occurred(occurrence)
    return None if job is None else job.id
