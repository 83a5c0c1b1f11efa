"""The operators' commands of the `zasync` command line: `status`, `jobs`,
`job`, `put`, `cancel`, `retry`, `dismiss`, `remove` and `wait` (and, from
`zasync.cli.schedule_commands`, `schedules`, `schedule` and `unschedule`).

They are registered on `zasync.cli.cli.main` when `zasync.cli` imports this module.
Each opens the database named by ``--db`` (an existing one: they never
create a database), does one short read or one transaction (retried on
conflicts), and closes it again.  What they show is made by
`zasync.cli.report`; ``--json`` writes the vocabulary of the web view's JSON
API, and actions reply ``{"task_id": ..., "result": "ok"}`` or
``{"task_id": ..., "result": "fail", "message": ...}``.

Exit statuses: 0 when done; 1 when the command was understood but could
not be done (an unknown job, a job in the wrong status, a job waited for
that failed); 2 for bad input, and for `wait` giving up or given an
unknown job.  No traceback is shown for any of them.
"""

import contextlib
import datetime
import json
import os
import re
import time
import urllib.parse

import click
import transaction
from rich.progress import (
    BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn)
from rich.text import Text

from zasync.job import clock, storable

from zasync.cli import report
from zasync.cli.cli import (
    CONTEXT_SETTINGS, open_database, database_options, import_named, main)
from zasync.queue.database import (
    close_connection, close_databases, get_queues, open_connection)
from zasync.job.job import Job
from zasync.interfaces import (
    ACTIVE, ASSIGNED, CALLBACKS, COMPLETED, NEW, PENDING, SIMPLE_FAILURE,
    SIMPLE_STARTED, SIMPLE_SUCCESS, NotInstalledError, ZasyncError)
from zasync.queue.multidb import missing_database, missing_database_hint

#: How often a transaction that conflicts is tried before giving up.
ATTEMPTS = 5
#: Seconds between two looks at the job waited for by `zasync wait`.
WAIT_POLL = 0.1
#: Seconds to wait for a ZEO server that does not answer.
ZEO_WAIT = 10

JOB_ID = re.compile(r"[0-9a-f]{20}")
JOB_STATUSES = (NEW, PENDING, ASSIGNED, ACTIVE, CALLBACKS, COMPLETED)
SIMPLE_STATUSES = (SIMPLE_STARTED, SIMPLE_SUCCESS, SIMPLE_FAILURE)


# -- helpers -----------------------------------------------------------------

def db_option(function):
    return database_options(
        "The database: a FileStorage path or a zodburi URI (zeo://HOST:PORT, "
        "file://..., postgres://... for RelStorage).")(function)


def json_option(function):
    return click.option("--json", "as_json", is_flag=True,
                        help="Write JSON for scripts instead of tables.")(function)


def job_id_argument(function):
    return click.argument("job_id", metavar="ID")(function)


def _check_exists(target):
    """Refuse a FileStorage that does not exist: these commands read or
    change a database, they never create one."""
    if not isinstance(target, str):
        for each in target.uris():
            _check_exists(each)
        return
    if "://" in target:
        parts = urllib.parse.urlsplit(target)
        path = parts.path if parts.scheme == "file" else None
    else:
        path = target
    if path is not None and not os.path.exists(path):
        raise click.BadParameter(
            f"no database at {target!r}; expected an existing FileStorage path "
            f"or a URI such as zeo://127.0.0.1:8100", param_hint="'--db'")


def _with_wait_timeout(target):
    """A ZEO URI that gives up after ZEO_WAIT seconds without a server,
    unless it says otherwise: ZEO's own 30 s suit a worker, not a command
    an operator waits for."""
    if not isinstance(target, str):
        return target.replace(_with_wait_timeout)
    if not target.startswith("zeo://") or "wait_timeout=" in target:
        return target
    return f"{target}{'&' if '?' in target else '?'}wait_timeout={ZEO_WAIT}"


@contextlib.contextmanager
def opened_database(target):
    """Open `target`; yield (transaction manager, connection); close both."""
    _check_exists(target)
    try:
        db = open_database(_with_wait_timeout(target), "'--db'", wait=False)
    except click.BadParameter as error:
        # name the URIs as the user gave them
        for uri in target.uris():
            error.message = error.message.replace(_with_wait_timeout(uri), uri)
        raise
    try:
        tm = transaction.TransactionManager()
        conn = open_connection(db, tm)
        try:
            try:
                get_queues(conn)
            except NotInstalledError:
                raise click.BadParameter(
                    f"zasync is not installed in {target!r}; expected a database "
                    f"a worker has served (`zasync worker` installs the queues)",
                    param_hint="'--db'") from None
            try:
                yield tm, conn
            except Exception as error:
                missing = missing_database(error)
                if missing is None:
                    raise
                raise click.BadParameter(
                    f"{target!r}: {missing_database_hint(missing)}",
                    param_hint="'--db'") from None
        finally:
            tm.abort()
            close_connection(conn)
    finally:
        close_databases(db)


def _check_id(job_id):
    if not JOB_ID.fullmatch(job_id):
        raise click.BadParameter(
            f"{job_id!r}: expected a job id of 20 hex digits, as `zasync put` "
            f"and `zasync jobs` print", param_hint="'ID'")
    return job_id


def command_error(message, exit_code=1):
    """A one-line error: click prints "Error: MESSAGE" and exits with
    `exit_code`."""
    error = click.ClickException(message)
    error.exit_code = exit_code
    return error


def _find(conn, job_id, exit_code=1):
    job = get_queues(conn).find_job(job_id)
    if job is None:
        raise command_error(f"no job {job_id} in this database (it may have been removed, "
                     f"or pruned from the history)", exit_code)
    return job


def check_queue(container, name):
    if name not in container:
        raise click.BadParameter(
            f"no queue named {name!r}; expected one of "
            + ", ".join(repr(n) for n in container.keys()), param_hint="'--queue'")
    return container[name]


def echo_json(value):
    click.echo(json.dumps(value, indent=2))


# -- status ------------------------------------------------------------------

@main.command(context_settings=CONTEXT_SETTINGS)
@db_option
@json_option
def status(target, as_json):
    """Show the queues' counts and the workers' health.

    For each queue: jobs pending (waiting for their time or a worker),
    active (held by a worker: claimed, running, or running callbacks),
    failed (not yet dismissed) and completed (kept in the history).  For
    each worker: its id, host, pid, load (jobs held / threads), last
    heartbeat and health: alive, late (a heartbeat missed), dead (silent
    past its death interval) or stopped.

    \b
    Examples:
      zasync status --db zeo://127.0.0.1:8100
      zasync status --db var/Data.fs --json
    """
    with opened_database(target) as (tm, conn):
        container = get_queues(conn)
        queues = report.queue_counts(container)
        workers = report.worker_views(container)
    if as_json:
        echo_json({"database": str(target), "queues": queues,
                    "workers": [w.as_json() for w in workers]})
    else:
        out = report.console()
        out.print(Text(f"Database: {target}"))
        report.print_status(out, queues, workers)


# -- jobs ----------------------------------------------------------------------

def _matches(job, wanted_status, callable_name):
    if wanted_status in SIMPLE_STATUSES:
        if job.simple_status != wanted_status:
            return False
    elif wanted_status is not None and job.status != wanted_status:
        return False
    return callable_name is None or callable_name in job.callable_name


@main.command(context_settings=CONTEXT_SETTINGS)
@db_option
@click.option("--status", "wanted_status", metavar="STATUS",
              type=click.Choice(JOB_STATUSES + SIMPLE_STATUSES),
              help="Only jobs in this status: " + ", ".join(JOB_STATUSES)
                   + " (the job's own), or " + ", ".join(SIMPLE_STATUSES) + ".")
@click.option("--queue", "queue_name", default=None, metavar="NAME",
              help="Only jobs of this queue ('' is the default queue).  [default: all]")
@click.option("--callable", "callable_name", default=None, metavar="NAME",
              help="Only jobs whose callable's dotted name contains NAME "
                   "(MODULE:FUNCTION is read as MODULE.FUNCTION).")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(min=0),
              help="Show at most this many jobs; 0 shows all.")
@json_option
def jobs(target, wanted_status, queue_name, callable_name, limit, as_json):
    """List jobs, newest first.

    Every job the queues hold: pending, running and those completed within
    the history's retention.  The job's own statuses are new, pending,
    assigned, active, callbacks and completed; --status started, success or
    failure selects by the simple status instead (a completed job either
    succeeded or failed), which --json gives as each job's "state".

    \b
    Examples:
      zasync jobs --db zeo://127.0.0.1:8100
      zasync jobs --db zeo://127.0.0.1:8100 --status failure --queue mail
      zasync jobs --db var/Data.fs --callable myapp.reports --limit 0 --json
    """
    if callable_name is not None:
        callable_name = callable_name.replace(":", ".")
    with opened_database(target) as (tm, conn):
        container = get_queues(conn)
        names = container.keys() if queue_name is None else [queue_name]
        if queue_name is not None:
            check_queue(container, queue_name)
        found = [job for name in names for job in container[name].jobs()
                 if _matches(job, wanted_status, callable_name)]
        found.sort(key=lambda job: (job.created_at, job.id), reverse=True)
        shown = found[:limit] if limit else found
        if as_json:
            echo_json({"jobs": [report.job_to_dict(job) for job in shown],
                        "total": len(found)})
        else:
            with_queue = queue_name is None and len(container) > 1
            report.print_jobs(report.console(), shown, len(found), with_queue)


# -- job -----------------------------------------------------------------------

@main.command(context_settings=CONTEXT_SETTINGS)
@job_id_argument
@db_option
@json_option
def job(job_id, target, as_json):
    """Show everything about one job.

    Its callable and arguments (as repr), queue, status and status history,
    progress and message, attempts, result, annotations and, for a failure,
    the exception with its whole traceback.  An unknown ID exits with
    status 1, a malformed one with status 2.

    \b
    Examples:
      zasync job 0192f0c3a1b00a1b2c3d4 --db zeo://127.0.0.1:8100
      zasync job 0192f0c3a1b00a1b2c3d4 --db var/Data.fs --json
    """
    _check_id(job_id)
    with opened_database(target) as (tm, conn):
        found = _find(conn, job_id)
        if as_json:
            echo_json(report.job_to_dict(found, detail=True))
            return
        report.print_job(report.console(), found)


# -- put -----------------------------------------------------------------------

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text):
    """'90s', '10m', '2h', '1d', '1h30m' as a timedelta; ValueError else."""
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text.strip():
        raise ValueError(text)
    return datetime.timedelta(seconds=sum(float(n) * _UNITS[u] for n, u in parts))


def parse_argument(text):
    """A JSON literal if `text` is one (42, 1.5, true, null, "x", [1], {}),
    else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


_KEYWORD = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=(.*)", re.DOTALL)


def parse_arguments(texts):
    """The positional and keyword arguments of `zasync put`: NAME=VALUE is
    a keyword argument, anything else positional; each value is read by
    `parse_argument`.  Return (args, kwargs)."""
    args, kwargs = [], {}
    for text in texts:
        found = _KEYWORD.fullmatch(text)
        if found is None:
            args.append(parse_argument(text))
            continue
        name, value = found.groups()
        if name in kwargs:
            raise click.BadParameter(
                f"{text!r}: {name}= is given twice; expected each keyword once",
                param_hint="'ARGS'")
        kwargs[name] = parse_argument(value)
    return args, kwargs


def import_callable(spec):
    found = import_named(spec, "'MODULE:FUNCTION'", "myapp.jobs:send_report")
    try:
        storable.check_callable(found)
    except ZasyncError as error:
        raise click.BadParameter(f"{spec!r}: {error}",
                                 param_hint="'MODULE:FUNCTION'") from None
    return found


def _begin_after(delay, at):
    if delay is not None and at is not None:
        raise click.UsageError("--in and --at cannot be given together")
    if delay is not None:
        try:
            return clock.now() + parse_duration(delay)
        except ValueError:
            raise click.BadParameter(
                f"{delay!r}: expected a delay such as 30s, 10m, 2h, 1d or 1h30m",
                param_hint="'--in'") from None
    if at is not None:
        try:
            # Python < 3.11 does not read a final Z
            when = datetime.datetime.fromisoformat(re.sub(r"[Zz]$", "+00:00", at))
        except ValueError:
            when = None
        if when is None or when.tzinfo is None:
            raise click.BadParameter(
                f"{at!r}: expected an ISO 8601 time with a timezone, such as "
                f"2030-01-31T09:00:00+01:00 or 2030-01-31T08:00:00Z",
                param_hint="'--at'")
        return when.astimezone(clock.UTC)
    return None


@main.command(context_settings=CONTEXT_SETTINGS)
@click.argument("spec", metavar="MODULE:FUNCTION")
@click.argument("arguments", nargs=-1, metavar="[ARGS | NAME=VALUE]...")
@db_option
@click.option("--in", "delay", default=None, metavar="DELAY",
              help="Run it no sooner than DELAY from now: 30s, 10m, 2h, 1d, 1h30m.")
@click.option("--at", default=None, metavar="TIME",
              help="Run it no sooner than TIME, in ISO 8601 with a timezone.")
@click.option("--queue", "queue_name", default="", metavar="NAME",
              help="The queue to put it in.  [default: '' (the default queue)]")
@click.option("--priority", default=0, show_default=True, type=int,
              help="Higher runs first among the jobs that are due.")
@click.option("--key", default=None, metavar="KEY",
              help="A unique key: while a job put with KEY is pending or running, "
                   "put adds none and prints that job's id instead.")
@json_option
def put(spec, arguments, target, delay, at, queue_name, priority, key, as_json):
    """Put a job calling MODULE:FUNCTION(ARGS...) into a queue.

    An ARG of the form NAME=VALUE is a keyword argument, any other a
    positional one.  Each value is read as a JSON literal if it is one (42,
    1.5, true, null, [1, 2], {"a": 1}), else taken as a string.  To pass a
    string that would be read otherwise, give it as a JSON string in
    quotes: '"42"' and '"true"' are strings, '"a=b"' a positional string
    with an equals sign, note='"[1]"' a keyword whose value is the string
    [1].  Give `--` before arguments that begin with a dash.  The callable
    is imported here, to
    check that a worker can find it again, but never called: a worker runs
    it.  Prints the new job's id on stdout.

    \b
    Examples:
      zasync put myapp.jobs:send_report Q3 --db zeo://127.0.0.1:8100
      zasync put myapp.jobs:send_report Q3 parts=20 dry_run=true --db ...
      zasync put myapp.jobs:resize '[640, 480]' --in 10m --queue images --db ...
      zasync put myapp.jobs:cleanup --at 2030-01-31T02:00:00Z --priority -1 --db ...
      zasync put myapp.jobs:send_report Q3 --key report-Q3 --db ...
      ID=$(zasync put zasync.cli.examples:add 2 3 --db var/Data.fs); zasync wait $ID --db ...
    """
    function = import_callable(spec)
    args, kwargs = parse_arguments(arguments)
    begin_after = _begin_after(delay, at)
    with opened_database(target) as (tm, conn):
        check_queue(get_queues(conn), queue_name)
        for attempt in tm.attempts(ATTEMPTS):
            with attempt:
                queue = get_queues(conn)[queue_name]
                try:
                    held = key is not None and queue.get_by_key(key) is not None
                    # In a Job, every keyword goes to the callable: put's
                    # options come from this command's own options.
                    new = queue.put(Job(function, *args, **kwargs),
                                    begin_after=begin_after, priority=priority,
                                    key=key)
                except ZasyncError as error:
                    raise click.UsageError(str(error)) from None
        if as_json:
            echo_json(report.job_to_dict(new, detail=True))
            return
        if held:
            click.echo(f"job {new.id} ({new.status}) already holds key {key!r}; "
                       f"nothing put", err=True)
            click.echo(new.id)
            return
        due = "" if begin_after is None else f", due {report.when(new.begin_after)} UTC"
        click.echo(f"put job {new.id}: {report.call_repr(new)} in queue "
                   f"{report.queue_label(queue_name)}{due}", err=True)
        click.echo(new.id)


# -- actions: cancel, retry, dismiss, remove -------------------------------------

class ActionError(ZasyncError, click.ClickException):
    """Raised when an action does not apply to the job as it is."""


def _act(target, job_id, as_json, action):
    """Find the job and apply `action(job)` (which returns what it did) in a
    transaction retried on conflicts; report in words or in JSON."""
    _check_id(job_id)

    def run():
        with opened_database(target) as (tm, conn):
            for attempt in tm.attempts(ATTEMPTS):
                with attempt:
                    done = action(_find(conn, job_id))
        return done
    report_action(job_id, as_json, run)


def report_action(task_id, as_json, run):
    """Call `run()`, which acts and returns a line saying what it did, and
    report it in words or as ``{"task_id", "result": "ok", "message"}``;
    an error it raises (not bad usage) is reported as ``"result": "fail"``
    with its exit status."""
    try:
        done = run()
    except click.ClickException as error:
        if not as_json or isinstance(error, click.UsageError):
            raise
        echo_json({"task_id": task_id, "result": "fail", "message": error.message})
        raise SystemExit(error.exit_code) from None
    if as_json:
        echo_json({"task_id": task_id, "result": "ok", "message": done})
    else:
        click.echo(done)


def _action_command(action):
    """Make `action(job)`, which changes the job and returns what it did,
    the command of its name, with its docstring as the command's help."""
    help = action.__doc__.replace("{replies}", _REPLIES)

    @main.command(action.__name__, context_settings=CONTEXT_SETTINGS, help=help)
    @job_id_argument
    @db_option
    @json_option
    def command(job_id, target, as_json):
        _act(target, job_id, as_json, action)
    return command


_REPLIES = """Done in one transaction, retried on conflicts.  With --json, replies
    {"task_id": ID, "result": "ok", "message": ...} or, with exit status 1,
    {"task_id": ID, "result": "fail", "message": ...}."""


@_action_command
def cancel(job):
    """Cancel a pending job, or ask a running one to stop.

    A pending job completes as failed with Cancelled.  A running job is
    asked to stop: it fails with Cancelled at its next progress report or
    check_cancelled() call.  Exits with status 1 if the job is unknown or
    has already completed.  {replies}

    \b
    Examples:
      zasync cancel 0192f0c3a1b00a1b2c3d4 --db zeo://127.0.0.1:8100
      zasync cancel 0192f0c3a1b00a1b2c3d4 --db var/Data.fs --json
    """
    status = job.status
    if status == COMPLETED:
        raise ActionError(f"job {job.id} has already completed "
                          f"({job.simple_status}); nothing to cancel")
    job.cancel()
    if status in (NEW, PENDING):
        return f"job {job.id} cancelled before it started"
    return (f"job {job.id} is {status}: cancel requested; its worker stops it at "
            f"its next progress report or check_cancelled()")


@_action_command
def retry(job):
    """Run a failed job again, now, under the same id.

    Its failure is kept among its attempts.  Exits with status 1 if the job
    is unknown or did not fail.  {replies}

    \b
    Examples:
      zasync retry 0192f0c3a1b00a1b2c3d4 --db zeo://127.0.0.1:8100
      zasync retry 0192f0c3a1b00a1b2c3d4 --db var/Data.fs --json
    """
    if job.queue is None:
        raise ActionError(f"job {job.id} is in no queue; it cannot be retried")
    try:
        job.queue.retry(job)
    except ZasyncError as error:
        raise ActionError(str(error)) from None
    name = report.queue_label(job.queue_name)
    return f"job {job.id} put back in queue {name} to run again"


@_action_command
def dismiss(job):
    """Take a failed job off the list of failures to look at.

    It stays in the history; `zasync status` no longer counts it as failed.
    Exits with status 1 if the job is unknown or did not fail.  {replies}

    \b
    Examples:
      zasync dismiss 0192f0c3a1b00a1b2c3d4 --db zeo://127.0.0.1:8100
      zasync dismiss 0192f0c3a1b00a1b2c3d4 --db var/Data.fs --json
    """
    if job.status != COMPLETED or job.failure is None:
        raise ActionError(f"job {job.id} is {report.status_label(job)}: only a "
                          f"failed job can be dismissed")
    if job.dismissed:
        return f"job {job.id} was already dismissed"
    job.queue.dismiss(job)
    return f"job {job.id} dismissed"


@_action_command
def remove(job):
    """Take a pending job out of its queue; it is forgotten.

    Exits with status 1 if the job is unknown or not pending (cancel a
    running job instead).  {replies}

    \b
    Examples:
      zasync remove 0192f0c3a1b00a1b2c3d4 --db zeo://127.0.0.1:8100
      zasync remove 0192f0c3a1b00a1b2c3d4 --db var/Data.fs --json
    """
    if job.queue is None:
        raise ActionError(f"job {job.id} is in no queue; it cannot be removed")
    name = report.queue_label(job.queue_name)
    try:
        job.queue.remove(job)
    except ZasyncError as error:
        raise ActionError(str(error)) from None
    return f"job {job.id} removed from queue {name}"


# -- wait ------------------------------------------------------------------------

@main.command(context_settings=CONTEXT_SETTINGS)
@job_id_argument
@db_option
@click.option("--timeout", default=None, metavar="SECONDS",
              type=click.FloatRange(min=0),
              help="Give up after this many seconds (exit status 2).  "
                   "[default: wait for ever]")
@json_option
def wait(job_id, target, timeout, as_json):
    """Wait for a job to end, showing its progress and message.

    A progress bar (on stderr) follows the job until it completes, then its
    result or its failure with the traceback is printed on stdout (for a
    cancelled job, one line saying how far it got).  Exits
    with status 0 if it succeeded, 1 if it failed, 2 if --timeout passed
    first or ID is not a job.  With --json: no bar, the job's JSON at the
    end.

    \b
    Examples:
      zasync wait 0192f0c3a1b00a1b2c3d4 --db zeo://127.0.0.1:8100
      zasync wait 0192f0c3a1b00a1b2c3d4 --db var/Data.fs --timeout 60 --json
    """
    _check_id(job_id)
    with opened_database(target) as (tm, conn):
        found = _find(conn, job_id, exit_code=2)
        oid = found._p_oid
        deadline = None if timeout is None else time.monotonic() + timeout
        columns = (TextColumn("{task.description}", markup=False), BarColumn(),
                   TaskProgressColumn(), TimeElapsedColumn(),
                   TextColumn("{task.fields[message]}", markup=False))
        bar = Progress(*columns, console=report.console(stderr=True), disable=as_json)
        with bar:
            task = bar.add_task(f"job {job_id} {found.callable_name}", total=1.0,
                                message="")
            while True:
                tm.begin()
                found = conn.get(oid)
                done = found.status == COMPLETED
                message = found.progress_message or found.status
                bar.update(task, completed=_reached(found), message=(
                    f"{found.simple_status}: {message}" if done else message))
                if done:
                    break
                if found.status == NEW:
                    raise command_error(f"job {job_id} was removed from its queue; it "
                                 f"will not run", exit_code=2)
                if deadline is not None and time.monotonic() >= deadline:
                    raise command_error(f"job {job_id} is still {found.status} after "
                                 f"{timeout:g} s (progress {found.progress:.0%})",
                                 exit_code=2)
                time.sleep(WAIT_POLL)
        if as_json:
            echo_json(report.job_to_dict(found, detail=True))
        elif found.failure is None:
            click.echo(f"job {job_id} succeeded in {report.seconds(found.duration)}: "
                       f"{report.short(repr(found.result))}")
        elif found.cancelled:
            # Cancelling is what someone asked for, not a bug to debug: one
            # line, no traceback (`zasync job ID` still shows it).
            click.echo(_cancelled_line(found))
        else:
            click.echo(f"job {job_id} failed: {found.failure}")
            click.echo(found.failure.traceback.rstrip())
        if found.failure is not None:
            raise SystemExit(1)


def _reached(job):
    """How far the job got: a completed job counts as whole (its
    `progress` says 1.0), unless it failed, which stops where it was."""
    if job.failed:
        return job.annotations.progress
    return job.progress


def _cancelled_line(job):
    """One line saying where a cancelled job stopped."""
    if job.attempt_count == 0:
        return f"job {job.id} cancelled before it started"
    message = job.progress_message
    return (f"job {job.id} cancelled at {_reached(job) * 100:.0f} %"
            + (f": {message}" if message else ""))
