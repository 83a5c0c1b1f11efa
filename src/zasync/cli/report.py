"""What the command line shows of jobs, queues and workers: the JSON of
``--json`` and the rich tables.

The JSON vocabulary is the web view's JSON API's, made by the same
presenters (`zasync.web.present`), so that a script reads the same fields
from ``zasync job ID --json`` as from ``/api/jobs/ID``: a job has its
`status` (the job's own: new, pending, assigned, active, callbacks,
completed) and its `state` (the simple one: pending, started, success,
failure), a `message`, its `progress` in [0, 1], its start time and its
duration.  Rejected: a second set of dicts here, which would drift from the
API's.  The presenters are imported when needed, so that `zasync worker`
does not load the web package.

In tables, every value that comes from a job or a worker is a
`rich.text.Text`, so that markup in a message or an argument is shown as
written, never interpreted.
"""

import os

from rich.console import Console
from rich.table import Table
from rich.text import Text

from zasync.job import clock
from zasync.interfaces import ACTIVE, CALLBACKS, COMPLETED


# -- JSON ----------------------------------------------------------------------

def job_to_dict(job, detail=False):
    """A job as the JSON API gives it; `detail` as /api/jobs/ID does."""
    from zasync.web.present import JobView
    return JobView(job, clock.now()).as_json(detail=detail)


def worker_views(container):
    """The dispatcher records as the web view presents them, with their
    health (failing, alive, late, dead or stopped) and load."""
    from zasync.web.present import WorkerView
    now = clock.now()
    return [WorkerView(record, now) for record in container.dispatchers.values()]


def queue_counts(container):
    """Per queue: its name and jobs pending, active (held by workers),
    failed (not dismissed) and completed (in the history)."""
    from zasync.web import survey
    held = survey.held_jobs(container)
    return [dict(name=name, **survey.queue_counts(queue, held))
            for name, queue in container.items()]


# -- text ------------------------------------------------------------------------

def console(stderr=False):
    """A console: the terminal's width, or 120 columns for a file or a pipe
    (rich would assume 80)."""
    found = Console(stderr=stderr, highlight=False)
    if not found.is_terminal and "COLUMNS" not in os.environ:
        found = Console(stderr=stderr, highlight=False, width=120)
    return found


def queue_label(name):
    return "(default)" if name == "" else str(name)


def when(moment, format="%Y-%m-%d %H:%M:%S"):
    """An aware datetime in UTC, or '-'."""
    return "-" if moment is None else moment.astimezone(clock.UTC).strftime(format)


def seconds(value):
    if value is None:
        return "-"
    return f"{value:.3f} s" if value < 10 else f"{value:.1f} s"


def status_label(job):
    """'active', or 'completed (failure)' where the simple status says more."""
    status, simple = job.status, job.simple_status
    return status if simple in (status, "pending") else f"{status} ({simple})"


def short(text, limit=1000):
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def call_repr(job):
    """The job's call as Python would write it: module.function(1, 'a', b=2)."""
    parts = [repr(arg) for arg in job.args]
    parts += [f"{name}={value!r}" for name, value in job.kwargs.items()]
    return short(f"{job.callable_name}({', '.join(parts)})")


def print_status(out, queues, workers):
    """The tables of `zasync status`, from `queue_counts` and `worker_views`."""
    table = Table(title="Queues", title_justify="left")
    table.add_column("queue")
    for column in ("pending", "active", "failed", "completed"):
        table.add_column(column, justify="right")
    for q in queues:
        table.add_row(Text(queue_label(q["name"])), str(q["pending"]), str(q["active"]),
                      str(q["failed"]), str(q["completed"]))
    out.print(table)
    if not workers:
        out.print("No worker has served this database yet.")
        return
    table = Table(title="Workers", title_justify="left")
    for column in ("id", "host", "pid", "queues", "load", "last ping", "health"):
        table.add_column(column, no_wrap=column == "id")
    for w in sorted(workers, key=lambda w: (w.health != "alive", w.id)):
        table.add_row(Text(w.id), Text(w.host), str(w.pid), Text(w.queue_labels),
                      f"{w.load}/{w.slots}", f"{w.ping_age:.0f} s ago", w.health)
    out.print(table)
    for w in sorted(workers, key=lambda w: w.id):
        if w.health == "failing":
            out.print(Text(f"Worker {w.id} cannot claim jobs: {w.claim_error}"))


def print_jobs(out, jobs, total, with_queue):
    """The table of `zasync jobs`: `jobs` shown of `total` that matched."""
    columns = ("id",) + ("queue",) * with_queue + (
        "callable", "status", "created (UTC)", "duration", "message")
    table = Table(title="Jobs, newest first", title_justify="left")
    for column in columns:
        # No min_width for the callable: rich would then crop the table
        # rather than fold the other columns.
        table.add_column(column, overflow="fold",
                         no_wrap=column in ("id", "status", "created (UTC)"))
    for job in jobs:
        message = job.failure if job.failure is not None else job.progress_message
        # Narrow: 'success' or 'failure' says 'completed'.
        label = job.simple_status if job.status == COMPLETED else job.status
        if job.status in (ACTIVE, CALLBACKS):
            label += f" {job.progress:.0%}"
        cells = [Text(job.id), Text(queue_label(job.queue_name))][:1 + with_queue]
        table.add_row(*cells, Text(job.callable_name), label,
                      when(job.created_at, "%m-%d %H:%M:%S"), seconds(job.duration),
                      Text(short(str(message or ""), 80)))
    out.print(table)
    more = f"; --limit 0 shows all {total}" if len(jobs) < total else ""
    out.print(f"{len(jobs)} of {total} job(s){more}")


def print_job(out, job):
    """Everything about one job, its tracebacks whole and unwrapped."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    message = f" {job.progress_message}" if job.progress_message else ""
    rows = [
        ("job", job.id), ("call", call_repr(job)),
        ("queue", queue_label(job.queue_name or "")), ("status", status_label(job)),
        ("progress", f"{job.progress:.0%}{message}"), ("priority", str(job.priority)),
        ("created", when(job.created_at) + " UTC"), ("due", when(job.begin_after) + " UTC"),
        ("started", when(job.started_at) + " UTC" if job.started_at else "-"),
        ("ended", when(job.ended_at) + " UTC" if job.ended_at else "-"),
        ("duration", seconds(job.duration)), ("worker", job.dispatcher_id or "-"),
        ("attempts", str(job.attempt_count)),
    ]
    if job.key is not None:
        rows.append(("key", job.key))
    if getattr(job, "schedule", None) is not None:
        rows.append(("schedule", f"{job.schedule.name}, occurrence of "
                                 f"{when(job.occurs_at)} UTC"))
    if job.succeeded:
        rows.append(("result", short(repr(job.result))))
    if job.failure is not None:
        dismissed = " (dismissed)" if job.dismissed else ""
        rows.append(("failure", f"{job.failure}{dismissed}"))
    if job.annotations.cancel_requested and job.status != COMPLETED:
        rows.append(("cancel", "requested"))
    for name, value in rows:
        grid.add_row(name, Text(value))
    out.print(grid)
    history = Table(title="Status history", title_justify="left")
    for column in ("status", "at (UTC)", "worker"):
        history.add_column(column)
    for status, moment, by in job.status_history:
        history.add_row(status, when(moment), Text(by or "-"))
    out.print(history)
    if len(job.annotations):
        notes = Table(title="Annotations", title_justify="left")
        notes.add_column("key")
        notes.add_column("value")
        for key, value in job.annotations.items():
            notes.add_row(Text(str(key)), Text(short(repr(value))))
        out.print(notes)
    for number, failure in enumerate(job.attempts, 1):
        print_failure(out, f"Attempt {number} failed: {failure}", failure)
    if job.failure is not None:
        print_failure(out, f"Failure: {job.failure}", job.failure)


def print_failure(out, title, failure):
    """`title`, then the failure's whole traceback as written."""
    out.print(Text(title))
    out.print(Text(failure.traceback.rstrip()), soft_wrap=True)
