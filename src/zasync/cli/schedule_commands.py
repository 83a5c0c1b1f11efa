"""The commands of the `zasync` command line for recurring jobs:
`schedules`, `schedule` and `unschedule`.

Registered on `zasync.cli.cli.main` when `zasync.cli` imports this module;
they use the helpers of `zasync.cli.commands`: the same ``--db``, ``--json`` and exit statuses (0 done, 1 understood
but not done, 2 bad input).  ``--json`` writes what ``/api/schedules``
gives, made by the same presenter (`zasync.web.present.ScheduleView`).
"""

import click
from rich.table import Table
from rich.text import Text

from zasync.job import clock

from zasync.cli import report
from zasync.cli.cli import CONTEXT_SETTINGS, main
from zasync.cli.commands import (
    ATTEMPTS, check_queue, echo_json, command_error, import_callable, opened_database,
    db_option, json_option, parse_arguments, parse_duration, report_action)
from zasync.queue.database import get_queues
from zasync.interfaces import ZasyncError
from zasync.queue.schedule import CATCH_UPS


def queue_option(function):
    return click.option(
        "--queue", "queue_name", default="", metavar="NAME",
        help="The queue of the schedule.  [default: '' (the default queue)]")(function)


def _views(queues):
    from zasync.web.present import ScheduleView
    now = clock.now()
    return [ScheduleView(schedule, now) for queue in queues
            for schedule in queue.schedules.values()]


def print_schedules(out, views):
    """The table of `zasync schedules`."""
    if not views:
        out.print("No schedule is defined.")
        return
    table = Table(title="Schedules", title_justify="left")
    for column in ("queue", "name", "callable", "when", "catch up", "next (UTC)",
                   "last (UTC)", "runs", "skipped"):
        table.add_column(column, overflow="fold",
                         no_wrap=column in ("when", "next (UTC)", "last (UTC)"),
                         justify="right" if column in ("runs", "skipped") else "left")
    for view in views:
        last = "-" if view.last_at is None else (
            f"{report.when(view.last_at)} {view.last_outcome}")
        table.add_row(Text(report.queue_label(view.queue)), Text(view.name),
                      Text(view.callable), Text(view.timing), view.catch_up,
                      "stalled" if view.stalled else report.when(view.next_at), last,
                      str(view.runs), str(view.skipped))
    out.print(table)


@main.command(context_settings=CONTEXT_SETTINGS)
@db_option
@click.option("--queue", "queue_name", default=None, metavar="NAME",
              help="Only the schedules of this queue.  [default: all]")
@json_option
def schedules(target, queue_name, as_json):
    """List the recurring jobs.

    For each schedule: its queue, name, callable, period (every ...) or cron
    expression (UTC), catch-up policy, the time of its next run, the time
    and outcome of its last run, and how many runs ran and were skipped.

    \b
    Examples:
      zasync schedules --db zeo://127.0.0.1:8100
      zasync schedules --db var/Data.fs --queue mail --json
    """
    with opened_database(target) as (tm, conn):
        container = get_queues(conn)
        if queue_name is not None:
            check_queue(container, queue_name)
        names = container.keys() if queue_name is None else [queue_name]
        views = _views(container[name] for name in names)
        if as_json:
            echo_json({"schedules": [view.as_json() for view in views]})
        else:
            print_schedules(report.console(), views)


#: The keyword arguments `queue.schedule` keeps for itself.
_SCHEDULE_OPTIONS = frozenset(("every", "cron", "name", "catch_up", "start", "priority",
                               "retry_policy"))


@main.command(context_settings=CONTEXT_SETTINGS)
@click.argument("spec", metavar="MODULE:FUNCTION")
@click.argument("arguments", nargs=-1, metavar="[ARGS | NAME=VALUE]...")
@db_option
@click.option("--every", default=None, metavar="PERIOD",
              help="Run every PERIOD: 30s, 5m, 2h, 1d, 1h30m.")
@click.option("--cron", default=None, metavar="EXPR",
              help="Run at the times of a cron expression, in UTC: '*/5 * * * *'.")
@click.option("--name", default=None, metavar="NAME",
              help="The schedule's name, unique in its queue.  [default: the "
                   "callable's dotted name]")
@click.option("--catch-up", default="one", show_default=True, type=click.Choice(CATCH_UPS),
              help="What missed runs become: one late run, all of them, or none.")
@queue_option
@click.option("--priority", default=0, show_default=True, type=int,
              help="The priority of each run's job.")
@json_option
def schedule(spec, arguments, target, every, cron, name, catch_up, queue_name,
             priority, as_json):
    """Define a recurring job calling MODULE:FUNCTION(ARGS...).

    Give --every or --cron.  Each run is an ordinary job of the queue, due
    at its time; when it completes, the next is put, so each run happens
    once however many workers serve the queue, and runs never overlap.
    Runs missed while no worker ran (or while a run lasted longer than the
    period) are caught up by --catch-up: 'one' runs the late one once and
    goes on with the next future time, 'all' runs each missed one in turn,
    'none' skips a late run without calling it.  ARGS (and NAME=VALUE
    keyword arguments) are read as by `zasync put`; a keyword cannot be
    named like an option of schedule (every, cron, name, catch_up, start,
    priority, retry_policy).  Prints the schedule's name on stdout.

    \b
    Examples:
      zasync schedule myapp.jobs:cleanup --every 10m --db zeo://127.0.0.1:8100
      zasync schedule myapp.jobs:report Q3 --cron '0 6 * * 1' --name weekly --db ...
    """
    function = import_callable(spec)
    args, kwargs = parse_arguments(arguments)
    for option in _SCHEDULE_OPTIONS.intersection(kwargs):
        given = next(text for text in arguments if text.startswith(option + "="))
        raise click.BadParameter(
            f"{given!r}: {option} is an option of schedule "
            f"(--{option.replace('_', '-')}); a keyword argument of that name "
            f"cannot be given to the callable here", param_hint="'ARGS'")
    period = None
    if every is not None:
        try:
            period = parse_duration(every)
        except ValueError:
            raise click.BadParameter(
                f"{every!r}: expected a period such as 30s, 5m, 2h, 1d or 1h30m",
                param_hint="'--every'") from None
    with opened_database(target) as (tm, conn):
        check_queue(get_queues(conn), queue_name)
        for attempt in tm.attempts(ATTEMPTS):
            with attempt:
                queue = get_queues(conn)[queue_name]
                try:
                    made = queue.schedule(function, *args, every=period, cron=cron,
                                          name=name, catch_up=catch_up, priority=priority,
                                          **kwargs)
                except ZasyncError as error:
                    raise click.UsageError(str(error)) from None
        [view] = [v for v in _views([queue]) if v.name == made.name]
        if as_json:
            echo_json(view.as_json())
            return
        click.echo(f"schedule {made.name!r}: {view.callable} {view.timing} in queue "
                   f"{report.queue_label(queue_name)}, first run "
                   f"{report.when(made.next_at)} UTC", err=True)
        click.echo(made.name)


@main.command(context_settings=CONTEXT_SETTINGS)
@click.argument("name", metavar="NAME")
@db_option
@queue_option
@json_option
def unschedule(name, target, queue_name, as_json):
    """Remove a recurring job and cancel its pending run.

    A run going on is asked to stop, as `zasync cancel` does.  Exits with
    status 1 if the queue has no schedule NAME.  With --json, replies
    {"task_id": NAME, "result": "ok", "message": ...} or, with exit status
    1, {"task_id": NAME, "result": "fail", "message": ...}.

    \b
    Examples:
      zasync unschedule myapp.jobs.cleanup --db zeo://127.0.0.1:8100
      zasync unschedule weekly --queue mail --db var/Data.fs --json
    """
    def remove(queue):
        queue.unschedule(name)
        return f"schedule {name!r} removed; its pending run is cancelled"
    _act_on_schedule(name, target, queue_name, as_json, remove)


@main.command("resume-schedule", context_settings=CONTEXT_SETTINGS)
@click.argument("name", metavar="NAME")
@db_option
@queue_option
@json_option
def resume_schedule(name, target, queue_name, as_json):
    """Put the next run of a stalled recurring job.

    A schedule stalls when the callback that puts its next run failed for
    good (`zasync schedules` shows it as stalled): this puts the run that is
    due next, from now.  A schedule that is not stalled is left as it is.
    Exits with status 1 if the queue has no schedule NAME.  --json replies
    as `zasync unschedule` does.

    \b
    Examples:
      zasync resume-schedule nightly --db zeo://127.0.0.1:8100
      zasync resume-schedule weekly --queue mail --db var/Data.fs --json
    """
    def resume(queue):
        job = queue.schedules[name].resume()
        if job is None:
            return f"schedule {name!r} is not stalled; nothing done"
        return (f"schedule {name!r} resumed: its next run is job {job.id} at "
                f"{report.when(job.begin_after)} UTC")
    _act_on_schedule(name, target, queue_name, as_json, resume)


def _act_on_schedule(name, target, queue_name, as_json, act):
    """Run ``act(queue)`` on the queue holding schedule `name`, in a
    transaction retried on conflicts, and report the line it returns (or
    that there is no such schedule, with exit status 1)."""
    def run():
        with opened_database(target) as (tm, conn):
            check_queue(get_queues(conn), queue_name)
            for attempt in tm.attempts(ATTEMPTS):
                with attempt:
                    queue = get_queues(conn)[queue_name]
                    if name not in queue.schedules:
                        raise command_error(
                            f"no schedule {name!r} in queue "
                            f"{report.queue_label(queue_name)}; defined: "
                            + (", ".join(repr(n) for n in queue.schedules) or "none"))
                    done = act(queue)
        return done
    report_action(name, as_json, run)
