"""Jobs, failures and dispatcher records as the pages and the JSON API show
them: text made with repr (truncated), times, health.

Nothing here writes to the database or calls what a job holds, except the
`repr` of its arguments, result and annotations, which is caught.
"""

import datetime
import html
import math

from zasync.job import storable, workflow
from zasync.job.call import BoundedRepr
from zasync.interfaces import (
    ACTIVE, ASSIGNED, CALLBACKS, COMPLETED, NEW, PENDING, Cancelled)

#: Longest text kept of one repr in a list / on a job's page.
SHORT = 160
LONG = 4000

HELD = (ASSIGNED, ACTIVE, CALLBACKS)
RUNNING = (ACTIVE, CALLBACKS)
CANCELLABLE = (NEW, PENDING, ASSIGNED, ACTIVE, CALLBACKS)

HEALTHS = ("failing", "alive", "late", "dead", "stopped")

#: The buttons of the actions, and the question asked before the
#: destructive ones.
LABELS = {"cancel": "Cancel", "retry": "Retry", "dismiss": "Dismiss", "remove": "Remove"}
CONFIRM = {"cancel": "Cancel this job?", "remove": "Remove this pending job from its queue?"}

#: What a page says after an action or a login: only these texts, so that
#: no text from the query string is ever shown.
NOTICES = {
    "cancel": "Job {job}: cancelled (a running job stops at its next progress report).",
    "retry": "Job {job}: put back in its queue to run again.",
    "dismiss": "Job {job}: failure dismissed.",
    "remove": "Job {job}: removed from its queue.",
    "unschedule": "Schedule removed; its pending run is cancelled.",
    "bulk-dismiss": "{count} failures dismissed.",
    "bulk-retry": "{count} failed jobs put back in their queues to run again.",
    "bulk-cancel": "{count} jobs cancelled (running ones stop at their next progress report).",
    "login": "Logged in: actions are enabled.",
    "logout": "Logged out.",
}


#: reprlib with room for real values, still bounded for huge ones.
_repr = BoundedRepr(400, 30, 4)


def safe_repr(value, limit=LONG):
    """repr(value) bounded to `limit` characters; never raises."""
    try:
        text = _repr.repr(value)
    except Exception as error:
        text = f"<unrepresentable {type(value).__name__}: {type(error).__name__}>"
    if len(text) > limit:
        text = text[:limit - 1] + "…"
    return text


def full_repr(value):
    """repr(value) whole, however long; never raises."""
    try:
        return repr(value)
    except Exception as error:
        return f"<unrepresentable {type(value).__name__}: {type(error).__name__}>"


class Value:
    """A value's repr for a page: `text` bounded, `whole` its length, and
    `clipped` when the page shows less than all of it (a link then serves
    the rest)."""

    def __init__(self, value, limit=LONG):
        self.text = safe_repr(value, limit)
        whole = full_repr(value)
        self.length = len(whole)
        self.clipped = self.text != whole

    def __str__(self):
        return self.text


def clip(text, limit):
    if text is None:
        return None
    text = str(text)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def iso(when):
    return None if when is None else when.isoformat()


def fmt_time(when):
    """'2026-05-04 12:03:04' (UTC), or '—'."""
    if when is None:
        return "—"
    return when.astimezone(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def fmt_seconds(seconds):
    """A duration for people: '0.25 s', '42 s', '3 min 5 s', '2 h 10 min'."""
    if seconds is None:
        return "—"
    if seconds < 10:
        return f"{seconds:.2f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60)} s"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"
    return f"{int(seconds // 86400)} d {int(seconds % 86400 // 3600)} h"


def ago(when, now):
    """'5 s ago', 'in 3 min', or '' for None."""
    if when is None:
        return ""
    delta = (now - when).total_seconds()
    if -1 < delta < 1:
        return "now"
    text = fmt_seconds(abs(delta)) if abs(delta) >= 10 else f"{abs(delta):.0f} s"
    return f"{text} ago" if delta > 0 else f"in {text}"


class Html(str):
    """Markup made here (never from job data unescaped), which Chameleon
    inserts as it is: see its ``__html__`` protocol."""

    def __html__(self):
        return self


def time_tag(when, now, since=False):
    """A <time> the page's script keeps current: '5 s ago' / 'in 3 min'
    (or, with `since`, the time elapsed since `when`: '42 s').  The text
    is right when rendered; the ETag ignores it (see `etag_body`), so a
    page does not count as changed because a second went by."""
    if when is None:
        return ""
    text = fmt_seconds(max(0.0, (now - when).total_seconds())) if since else ago(when, now)
    mode = "since" if since else "ago"
    return Html(f'<time class="live-time" data-mode="{mode}" '
                f'datetime="{html.escape(when.isoformat())}">{html.escape(text)}</time>')


def fraction(value):
    """A progress value as a float in [0, 1] (0 for anything odd)."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return 0.0
    if math.isnan(value):
        return 0.0
    return min(1.0, max(0.0, value))


def _name_of(job):
    try:
        return job.callable_name
    except Exception as error:
        return f"<callable not loadable: {type(error).__name__}>"


def _kind_of(job):
    """'serial' or 'parallel' for a group's job, else None."""
    try:
        return workflow.group_kind(job)
    except Exception:       # a callable that cannot be loaded or compared
        return None


def _short_name(job):
    """A part's name in its group's title: the callable's last name."""
    kind = _kind_of(job)
    if kind is not None:
        return f"{kind} group"
    return _name_of(job).rsplit(".", 1)[-1]


#: How many parts a group's title names.
NAMED_PARTS = 3


def group_title(job, kind):
    """'parallel group of 5: add, add, send, …': what a group's page and
    list row say instead of its private step function.  Loads at most
    `NAMED_PARTS` parts."""
    parts = job.args[0]
    names = [_short_name(part) for part in parts[:NAMED_PARTS]]
    more = ", …" if len(parts) > NAMED_PARTS else ""
    return f"{kind} group of {len(parts)}: {', '.join(names)}{more}"


def _reached(job, failure):
    """How far the job got: its progress, except that a failed job (which
    completes at 1) shows what it had reported before it failed, so that a
    failure or a cancellation never looks like finished work."""
    if failure is None:
        return fraction(job.progress)
    return fraction(getattr(job.annotations, "progress", 0.0))


def _name_of_callable(value):
    try:
        return storable.describe(value)
    except Exception as error:
        return f"<callable not loadable: {type(error).__name__}>"


class FailureView:
    """A stored failure, as text."""

    def __init__(self, failure):
        self.type = str(getattr(failure, "type", "") or "")
        try:
            self.type_name = failure.type_name
        except Exception:
            self.type_name = self.type.rsplit(".", 1)[-1]
        self.message = str(getattr(failure, "message", "") or "")
        self.traceback = str(getattr(failure, "traceback", "") or "")
        self.time = getattr(failure, "time", None)

    @property
    def text(self):
        return f"{self.type_name}: {self.message}" if self.message else self.type_name

    def as_json(self):
        return {"type": self.type, "message": self.message,
                "traceback": self.traceback, "time": iso(self.time)}


class CallbackView:
    """One callback of a job, in the job's page: its status and failure."""

    def __init__(self, callback):
        self.id = callback.id
        self.callable = _name_of(callback)
        self.status = callback.status
        self.state = callback.simple_status
        self.skipped = bool(getattr(callback, "skipped", False))
        failure = callback.failure
        self.failure = None if failure is None else FailureView(failure)

    def as_json(self):
        return {"id": self.id, "callable": self.callable, "status": self.status,
                "state": self.state, "skipped": self.skipped,
                "failure": None if self.failure is None else self.failure.as_json()}


class JobView:
    """One job for a page or the JSON API; reads the job once."""

    def __init__(self, job, now):
        self.id = job.id
        self.now = now
        self.status = job.status
        self.state = job.simple_status
        self.queue = job.queue_name
        self.callable_name = _name_of(job)
        self.group_kind = _kind_of(job)
        self.callable = (self.callable_name if self.group_kind is None
                         else group_title(job, self.group_kind))
        group = getattr(job, "group", None)
        self.group_id = None if group is None else group.id
        self.priority = job.priority
        self.created_at = job.created_at
        self.begin_after = job.begin_after
        self.begin_by = job.begin_by
        self.started_at = job.started_at
        self.ended_at = job.ended_at
        self.duration = job.duration
        self.dispatcher_id = job.dispatcher_id
        self.attempt_count = job.attempt_count
        self.dismissed = bool(job.dismissed)
        failure = job.failure
        self.progress = _reached(job, failure)
        self.progress_message = clip(job.progress_message, LONG)
        self.failure = None if failure is None else FailureView(failure)
        self.cancelled = failure is not None and failure.check(Cancelled) is not None
        self.succeeded = self.status in (CALLBACKS, COMPLETED) and failure is None \
            and not getattr(job, "skipped", False)
        self.result = safe_repr(job.result) if self.succeeded else None
        self.key = job.key
        schedule = getattr(job, "schedule", None)     # an occurrence's
        self.schedule = None if schedule is None else schedule.name
        self.occurs_at = getattr(job, "occurs_at", None)
        self._job = job

    # -- what the job's page adds -------------------------------------------

    def load_detail(self):
        job = self._job
        self.args = [Value(arg) for arg in job.args]
        self.kwargs = [(str(name), Value(value)) for name, value in job.kwargs.items()]
        self.status_history = [
            (status, when, dispatcher_id) for status, when, dispatcher_id in job.status_history]
        self.attempts = [FailureView(failure) for failure in job.attempts]
        self.annotations = [
            (key if isinstance(key, str) else safe_repr(key, SHORT), Value(value))
            for key, value in job.annotations.items()]
        self.result_value = Value(job.result) if self.succeeded else None
        self.callbacks = [CallbackView(cb) for cb in job.callbacks]
        self.waiting_for = [awaited.id for awaited in job.waiting_for]
        self.timeout = job.timeout
        self.quotas = list(job.quotas)
        policy = job.retry_policy
        self.retry_policy = ("default (retries transient errors such as ConflictError)"
                             if policy is None else safe_repr(policy, SHORT))
        parent = job.parent
        self.parent_id = None if parent is None else parent.id
        self.parts = ([JobView(part, self.now) for part in workflow.group_parts(job)]
                      if self.group_kind is not None else [])
        self.parts_done = sum(1 for part in self.parts if part.status in (CALLBACKS, COMPLETED))
        postprocess = job.args[1] if self.group_kind is not None else None
        self.postprocess = None if postprocess is None else _name_of_callable(postprocess)
        self.group_title = self.group_position = None
        group = getattr(job, "group", None)
        if group is not None:
            kind = _kind_of(group)
            self.group_title = group_title(group, kind) if kind else _name_of(group)
            siblings = workflow.group_parts(group)
            self.group_position = next(
                (number for number, part in enumerate(siblings, 1) if part is job), None)
            self.group_size = len(siblings)
        return self

    # -- derived -------------------------------------------------------------

    @property
    def message(self):
        """The simple vocabulary's message: the failure, else the progress
        message."""
        if self.failure is not None:
            return self.failure.text
        return self.progress_message

    @property
    def outcome(self):
        """What the status badge adds for a completed job."""
        if self.cancelled:
            return "cancelled"
        return self.state

    @property
    def percent(self):
        return f"{self.progress * 100:.1f}"

    @property
    def elapsed(self):
        """Seconds since the start for a running job, else the duration."""
        if self.status in RUNNING and self.started_at is not None:
            return max(0.0, (self.now - self.started_at).total_seconds())
        return self.duration

    @property
    def running_since(self):
        """When a running job started (its page counts the time since),
        else None."""
        return self.started_at if self.status in RUNNING else None

    @property
    def queue_label(self):
        return "(default)" if self.queue == "" else (self.queue or "—")

    @property
    def short_args(self):
        summary = getattr(self._job, "args_summary", None)
        if summary is not None:     # kept in the job: its call stays unloaded
            return clip(summary, SHORT)
        parts = [safe_repr(arg, SHORT) for arg in self._job.args]
        parts += [f"{name}={safe_repr(value, SHORT)}" for name, value in self._job.kwargs.items()]
        return clip(", ".join(parts), SHORT)

    @property
    def actions(self):
        """The actions the job's status allows, in display order."""
        found = []
        if self.status in CANCELLABLE:
            found.append("cancel")
        if self.status == PENDING:
            found.append("remove")
        if self.failure is not None and self.status == COMPLETED:
            found.append("retry")
            if not self.dismissed:
                found.append("dismiss")
        return found

    def as_json(self, detail=False):
        data = {
            "id": self.id,
            "queue": self.queue,
            "callable": self.callable_name,
            "status": self.status,
            "state": self.state,
            "message": self.message,
            "progress": self.progress,
            "priority": self.priority,
            "created_at": iso(self.created_at),
            "begin_after": iso(self.begin_after),
            "started_at": iso(self.started_at),
            "ended_at": iso(self.ended_at),
            "duration": self.duration,
            "dispatcher_id": self.dispatcher_id,
            "attempt_count": self.attempt_count,
            "dismissed": self.dismissed,
            "result": self.result,
            "failure": None if self.failure is None else self.failure.as_json(),
            "key": self.key,
        }
        if self.schedule is not None:
            data["schedule"] = self.schedule
            data["occurs_at"] = iso(self.occurs_at)
        if detail:
            self.load_detail()
            data.update({
                "args": [str(arg) for arg in self.args],
                "kwargs": {name: str(value) for name, value in self.kwargs},
                "begin_by": None if self.begin_by is None else self.begin_by.total_seconds(),
                "timeout": self.timeout,
                "quotas": self.quotas,
                "retry_policy": self.retry_policy,
                "parent_id": self.parent_id,
                "group": None if self.group_kind is None else {
                    "kind": self.group_kind, "parts": [part.id for part in self.parts]},
                "group_id": self.group_id,
                "status_history": [
                    {"status": status, "at": iso(when), "dispatcher_id": dispatcher_id}
                    for status, when, dispatcher_id in self.status_history],
                "attempts": [failure.as_json() for failure in self.attempts],
                "annotations": {key: str(value) for key, value in self.annotations},
                "callbacks": [cb.as_json() for cb in self.callbacks],
                "waiting_for": self.waiting_for,
            })
        return data


def fmt_period(delta):
    """A period exactly: '5 min', '1 h 30 min', '1 d', '0.25 s'."""
    rest = delta // datetime.timedelta(microseconds=1)
    parts = []
    for unit, size in (("d", 86_400_000_000), ("h", 3_600_000_000), ("min", 60_000_000)):
        if rest >= size:
            parts.append(f"{rest // size} {unit}")
            rest %= size
    if rest or not parts:
        parts.append(f"{rest / 1e6:g} s")
    return " ".join(parts)


def timing_label(every, cron):
    """'every 5 min' or 'cron */5 * * * *'."""
    if every is not None:
        return "every " + fmt_period(every)
    return f"cron {cron}"


def outcome_of(job):
    """How an occurrence ended: 'success', 'failure', 'cancelled',
    'skipped' (caught up), or its status while it has not."""
    if job.status not in (CALLBACKS, COMPLETED):
        return job.status
    if getattr(job, "late_skipped", False):
        return "skipped"
    failure = job.failure
    if failure is not None and failure.check(Cancelled) is not None:
        return "cancelled"
    return "failure" if failure is not None else "success"


class ScheduleView:
    """One schedule of a queue, for the pages, the JSON API and the
    command line."""

    def __init__(self, schedule, now):
        self.name = schedule.name
        self.now = now
        queue = schedule.queue
        self.queue = None if queue is None else queue.name
        self.callable = _name_of(schedule)
        self.every = schedule.every
        self.cron = schedule.cron
        self.timing = timing_label(schedule.every, schedule.cron)
        self.catch_up = schedule.catch_up
        self.priority = schedule.priority
        self.created_at = schedule.created_at
        self.next_at = schedule.next_at
        job = schedule.next_job
        self.next_job = None if job is None else job.id
        self.next_status = None if job is None else job.status
        self.last_at = schedule.last_at
        last = schedule.last_job
        self.last_job = None if last is None else last.id
        self.last_outcome = None if last is None else outcome_of(last)
        self.runs = schedule.runs
        self.skipped = schedule.skipped
        self.stalled = schedule.stalled

    @property
    def queue_label(self):
        return "(default)" if self.queue == "" else (self.queue or "—")

    def as_json(self):
        return {
            "name": self.name, "queue": self.queue, "callable": self.callable,
            "every": None if self.every is None else self.every.total_seconds(),
            "cron": self.cron, "catch_up": self.catch_up, "priority": self.priority,
            "created_at": iso(self.created_at),
            "next_at": iso(self.next_at), "next_job": self.next_job,
            "next_status": self.next_status,
            "last_at": iso(self.last_at), "last_job": self.last_job,
            "last_outcome": self.last_outcome,
            "runs": self.runs, "skipped": self.skipped, "stalled": self.stalled,
        }


def health(record, now):
    """'alive', 'late', 'dead' or 'stopped', from the record's last ping and
    the ping and death intervals its dispatcher announced; 'failing' for a
    live dispatcher whose claims fail (`claim_error` says why).

    A dispatcher pings every `ping_interval` (plus the time of its loop), so
    a ping older than that by half again, or half-way to the death interval
    if sooner, is late; one older than the death interval is dead, as other
    dispatchers will judge it.
    """
    if record.dead_at is not None:
        return "dead"
    if record.stopped_at is not None:
        return "stopped"
    info = record.info or {}
    ping = info.get("ping_interval") or 60.0
    death = info.get("death_interval") or 3 * ping
    age = max(0.0, (now - record.last_ping).total_seconds())
    if age > death:
        return "dead"
    if getattr(record, "claim_error", None) is not None:
        return "failing"
    if age > min(1.5 * ping, (ping + death) / 2):
        return "late"
    return "alive"


class WorkerView:
    """One dispatcher record."""

    def __init__(self, record, now):
        info = dict(record.info or {})
        self.id = record.id
        self.now = now
        self.health = health(record, now)
        self.host = str(info.get("host") or "?")
        self.pid = info.get("pid")
        self.queues = [str(name) for name in info.get("queues") or ()]
        # a record that does not say claims from every queue (as claim.py reads it)
        self.serves_every_queue = "queues" not in info
        self.agents = [(str(a.get("name", "")), a.get("size", 0))
                       for a in info.get("agents") or () if isinstance(a, dict)]
        self.slots = sum(size for _, size in self.agents if isinstance(size, int))
        self.ping_interval = info.get("ping_interval")
        self.death_interval = info.get("death_interval")
        self.started_at = record.started_at
        self.last_ping = record.last_ping
        self.stopped_at = record.stopped_at
        self.dead_at = record.dead_at
        self.claim_error = getattr(record, "claim_error", None)
        self.claim_error_at = getattr(record, "claim_error_at", None)
        jobs = [job for job in record.jobs if job.status in HELD]
        jobs.sort(key=lambda job: job.id)
        self.job_ids = [job.id for job in jobs]
        self.running = sum(1 for job in jobs if job.status in RUNNING)
        self.load = len(jobs)

    @property
    def load_percent(self):
        if not self.slots:
            return "0"
        return f"{min(1.0, self.load / self.slots) * 100:.0f}"

    @property
    def ping_age(self):
        return max(0.0, (self.now - self.last_ping).total_seconds())

    @property
    def queue_labels(self):
        return ", ".join("(default)" if q == "" else q for q in self.queues) or "—"

    def as_json(self):
        return {
            "id": self.id, "health": self.health, "host": self.host, "pid": self.pid,
            "queues": self.queues,
            "agents": [{"name": name, "size": size} for name, size in self.agents],
            "slots": self.slots, "load": self.load, "running": self.running,
            "jobs": self.job_ids,
            "started_at": iso(self.started_at), "last_ping": iso(self.last_ping),
            "last_ping_age": round(self.ping_age, 3),
            "stopped_at": iso(self.stopped_at), "dead_at": iso(self.dead_at),
            "ping_interval": self.ping_interval, "death_interval": self.death_interval,
            "claim_error": self.claim_error, "claim_error_at": iso(self.claim_error_at),
        }
