"""`zasync demo`: an embedded FileStorage, an in-process dispatcher and
example jobs, shown live in the terminal and in the web view (served from a
thread of the same process, with a token made for the run).

Until Ctrl-C, the demo puts a new round of examples every `ROUND_EVERY`
seconds (a slow report with progress, a failure, a job retried by its
policy, a parallel group, a delayed job, a counter with a callback), so
that whoever opens the web view, seconds or minutes later, finds jobs
running and progress bars moving.  `--once` puts one round and waits for it.

The jobs come from `zasync.cli.examples` (workers must be able to import a job's
callable, so they cannot live here in a closure).  The display reads the
jobs from a connection of its own, with its own transaction manager: each
refresh begins a transaction (which brings in what the workers committed),
copies what it shows into plain `JobView` records and aborts.  It never
writes, so it cannot conflict with the jobs it watches.

Rejected: a `rich.live.Live` with ``get_renderable`` refreshed by rich's own
thread, which would read the ZODB connection from two threads at once.  The
main thread renders instead, between waits on the event that a signal sets.
"""

import dataclasses
import datetime
import logging
import os
import secrets
import signal
import threading
import time
from typing import Optional

import transaction
from rich.console import Console, Group
from rich.markup import escape
from rich.live import Live
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from zasync.job import clock

from zasync.cli import examples
from zasync.queue.database import get_queue, get_queues, install, open_db
from zasync.worker.dispatcher import Dispatcher
from zasync.interfaces import (
    ACTIVE, ASSIGNED, CALLBACKS, COMPLETED, NEW, PENDING, DatabaseUnavailableError,
    ZasyncError)
from zasync.job.job import Job

logger = logging.getLogger(__name__)

#: Where the demo keeps its persistent counter in the database root.
COUNTER_KEY = "zasync-demo-counter"

#: A stable dispatcher id: a new run takes over the record of the last one
#: and gives back the jobs it had claimed but not started.
DISPATCHER_ID = "zasync-demo"

#: Seconds between two refreshes of the display.
REFRESH = 0.15

#: Seconds that `--once` waits for the examples before giving up.
ONCE_TIMEOUT = 120.0

#: Seconds that stopping waits for running jobs after cancelling them.
STOP_GRACE = 10.0

#: Seconds between two rounds of examples, until Ctrl-C: about the time the
#: slow report takes, so that one report always runs.
ROUND_EVERY = 10.0

#: Rounds of examples the live table shows (the web view has them all).
ROUNDS_SHOWN = 2

#: What the examples' callables are called in the table.
_NAMES = {"zasync.job.workflow._parallel_step": "parallel group",
          "zasync.job.workflow._serial_step": "serial group"}

_STATE_STYLES = {
    "retrying": "magenta", "succeeded": "green", "failed": "bold red", "cancelled": "red",
    "skipped": "dim", "active": "yellow", "callbacks": "yellow",
    "assigned": "cyan", "pending": "cyan", "waiting": "dim cyan",
}


class DemoDatabaseError(ZasyncError):
    """Raised when the demo's database cannot be opened or prepared."""


@dataclasses.dataclass
class JobView:
    """What the display shows of a job, copied out of the database."""

    id: str
    callable: str
    status: str
    state: str
    progress: float
    detail: str
    traceback: Optional[str] = None
    is_callback: bool = False

    @property
    def done(self):
        return self.status == COMPLETED


def short_name(job):
    """The job's callable without the examples' module prefix."""
    name = job.callable_name
    if name in _NAMES:
        return _NAMES[name]
    prefix = examples.__name__ + "."
    return name[len(prefix):] if name.startswith(prefix) else name


def _clip(text, limit=70):
    """`text` on one line, cut to `limit` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def view_of(job, now, is_callback=False):
    """A `JobView` of `job` as its connection sees it at `now`."""
    detail = ""
    traceback = None
    if job.status == COMPLETED:
        if job.skipped:
            state = "skipped"
        elif job.failed:
            state = "cancelled" if job.cancelled else "failed"
            detail = str(job.failure)
            traceback = job.failure.traceback
        else:
            state = "succeeded"
            detail = f"-> {job.result!r}"
    elif job.status == PENDING and job.attempts:
        state = "retrying"
        wait = max(0.0, (job.begin_after - now).total_seconds())
        detail = (f"attempt {len(job.attempts)} failed "
                  f"({job.attempts[-1].type_name}); runs again in {wait:.0f} s")
    elif job.status == PENDING and job.begin_after is not None and job.begin_after > now:
        state = "waiting"
        detail = f"starts in {(job.begin_after - now).total_seconds():.0f} s"
    elif is_callback and job.status == NEW:
        state = "waiting"
        detail = f"runs when job {job.parent.id} completes"
    else:
        state = job.status
        if job.status == ACTIVE:
            detail = job.progress_message or "running"
        elif job.status == CALLBACKS:
            detail = "running its callbacks"
        elif job.status == ASSIGNED:
            detail = "claimed by a worker"
        elif job.status == PENDING:
            detail = "waiting for a free worker"
    name = short_name(job) + (" (callback)" if is_callback else "")
    return JobView(job.id, name, job.status, state, job.progress, _clip(detail),
                   traceback, is_callback)


def put_examples(db, delay=4.0, round=1, pause=0.5):
    """Put one round of example jobs in one transaction; return their oids,
    in the order they are shown.  The report takes 20 x `pause` seconds."""
    from zasync.job.retry import Backoff
    from zasync.job.workflow import parallel
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    try:
        for attempt in tm.attempts(5):
            with attempt:
                root = conn.root()
                counter = root.get(COUNTER_KEY)
                if counter is None:
                    counter = root[COUNTER_KEY] = examples.Counter()
                queue = get_queue(conn)
                now = clock.now()
                jobs = [
                    queue.put(examples.send_report, f"round {round}", parts=20, pause=pause),
                    queue.put(examples.fail, "a deliberate failure, to show its traceback"),
                    # fails twice with ConnectionError, then succeeds
                    queue.put(Job(examples.flaky, 2, error=ConnectionError),
                              retry_policy=Backoff(ConnectionError, attempts=3, initial=1.0)),
                    queue.put(parallel(Job(examples.add, 1, 2), Job(examples.add, 3, 4),
                                       Job(examples.add, 5, 6), postprocess=examples.total)),
                    queue.put(examples.add, 40, 2,
                              begin_after=now + datetime.timedelta(seconds=delay)),
                    queue.put(counter.increment, 5),
                ]
                with_callback = queue.put(examples.add, 1, 2)
                with_callback.add_callback(examples.record_outcome)
                jobs.append(with_callback)
        return [job._p_oid for job in jobs]
    finally:
        tm.abort()
        conn.close()


class Demo:
    """One run of the demo: the database, the dispatcher and the display."""

    def __init__(self, directory, threads=4, console=None, delay=4.0, bind=None,
                 pause=0.5):
        self.directory = directory
        self.bind = bind                 # where to serve the web view, or None
        self.web = None                  # its waitress server, once listening
        self.web_line = None
        self.web_token = None
        self.path = os.path.join(directory, "Data.fs")
        self.threads = threads
        self.delay = delay
        self.pause = pause               # between the slow report's parts
        self.console = console or _default_console()
        self.live_display = (self.console.is_terminal
                             and not self.console.is_dumb_terminal)
        self.stop_requested = threading.Event()
        self.signal_name = None
        self.db = None
        self.dispatcher = None
        self.oids = []                   # every job this run put, oldest first
        self.rounds = []                 # the oids of each round
        self.next_round_at = None
        self.counts = None               # the queue's, as of the last snapshot
        self._tm = transaction.TransactionManager()
        self._conn = None
        self._reported = {}

    # -- signals -----------------------------------------------------------

    def _on_signal(self, signum, frame):
        if self.stop_requested.is_set():
            # A second signal while stopping: let click report "Aborted!".
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name
        self.stop_requested.set()

    def _install_signal_handlers(self):
        previous = {}
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                previous[signum] = signal.signal(signum, self._on_signal)
        return previous

    # -- reading -----------------------------------------------------------

    def snapshot(self, rounds=None):
        """The views of the jobs of this run's last `rounds` rounds (all if
        None) and their callbacks, and the demo counter's value, read in a
        fresh transaction; the queue's counts, as the web view counts
        them, are kept in `self.counts`."""
        from zasync.cli.report import queue_counts
        self._tm.begin()
        try:
            now = clock.now()
            views = []
            shown = self.rounds if rounds is None else self.rounds[-rounds:]
            for oid in [oid for oids in shown for oid in oids]:
                job = self._conn.get(oid)
                views.append(view_of(job, now))
                views.extend(view_of(cb, now, is_callback=True)
                             for cb in job.callbacks)
            counter = self._conn.root().get(COUNTER_KEY)
            self.counts = next(c for c in queue_counts(get_queues(self._conn))
                               if c["name"] == "")
            return views, None if counter is None else counter.value
        finally:
            self._tm.abort()

    def counts_line(self):
        """The default queue's counts, in the web view's words: 'failed'
        are the failures not dismissed, 'completed' every job in the
        history, failed or not; a callback is part of its job."""
        c = self.counts
        return (f"queue (default): {c['pending']} pending, {c['active']} active, "
                f"{c['failed']} failed, {c['completed']} completed")

    def put_round(self):
        """Put the next round of examples."""
        oids = put_examples(self.db, self.delay, round=len(self.rounds) + 1,
                            pause=self.pause)
        self.rounds.append(oids)
        self.oids.extend(oids)
        self.next_round_at = time.monotonic() + ROUND_EVERY
        if len(self.rounds) > 1 and not self.live_display:
            self.console.print(Text(f"{time.strftime('%H:%M:%S')} round "
                                    f"{len(self.rounds)} put: {len(oids)} jobs"),
                               highlight=False)

    # -- showing -----------------------------------------------------------

    def render(self, views, counter):
        """The live table: one row per job."""
        table = Table(title="zasync demo", title_justify="left", expand=False)
        table.add_column("job", no_wrap=True)
        table.add_column("callable", no_wrap=True)
        table.add_column("status", no_wrap=True)
        table.add_column("progress", no_wrap=True)
        table.add_column("message, result or failure", overflow="fold")
        for view in views:
            style = _STATE_STYLES.get(view.state, "")
            bar = ProgressBar(total=1.0, completed=view.progress, width=12,
                              finished_style="red" if view.state in ("failed", "cancelled")
                              else "green")
            table.add_row(Text(view.id), Text(view.callable),
                          Text(view.state, style=style), _bar_cell(bar, view.progress),
                          Text(view.detail, style=style if view.done else ""))
        footer = Text.assemble(
            ("database ", "dim"), self.path, ("  counter ", "dim"), str(counter),
            ("  dispatcher ", "dim"), f"{self.dispatcher.id} ({self.threads} threads)",
            ("  Ctrl-C stops", "dim"))
        counts = Text.assemble(
            (f"round {len(self.rounds)} of this run; ", "dim"), self.counts_line(),
            (" (as the web view counts)", "dim"))
        return Group(table, counts, footer)

    def report_changes(self, views):
        """Print what changed since the last look: in a terminal only the
        failures' tracebacks (the table shows the rest); elsewhere one line
        per change of state and per quarter of progress."""
        for view in views:
            quarter = int(view.progress * 4) if view.state == "active" else None
            key = (view.state, quarter)
            if self._reported.get(view.id) == key:
                continue
            first_time = self._reported.get(view.id, (None,))[0] != view.state
            self._reported[view.id] = key
            if not self.live_display and (first_time or quarter):
                self.console.print(self._line(view), highlight=False, soft_wrap=True)
            if first_time and view.traceback and view.state == "failed":
                self.console.print(Panel(
                    Text(view.traceback.rstrip()), title=f"job {view.id} failed",
                    title_align="left", border_style="red"), highlight=False)

    def _line(self, view):
        when = time.strftime("%H:%M:%S")
        progress = f" {view.progress:4.0%}" if view.state == "active" else ""
        return Text.assemble(
            (f"{when} ", "dim"), f"{view.id}  {view.callable:<28} ",
            (f"{view.state:<9}", _STATE_STYLES.get(view.state, "")),
            f"{progress}  {view.detail}")

    def summary(self, views):
        """A table of the jobs: id, callable, status, result or failure."""
        table = Table(title="zasync demo: jobs of this run", title_justify="left",
                      caption="A callback's row is part of its job's; a group's parts "
                              "are jobs of their own in the queue (and its counts).",
                      caption_justify="left")
        table.add_column("job id", no_wrap=True)
        table.add_column("callable", no_wrap=True)
        table.add_column("status", no_wrap=True)
        table.add_column("result or failure", overflow="fold")
        for view in views:
            style = _STATE_STYLES.get(view.state, "")
            table.add_row(Text(view.id), Text(view.callable),
                          Text(view.state, style=style), Text(view.detail))
        return table

    # -- the run -----------------------------------------------------------

    def open(self):
        """Open the database, install zasync, start the dispatcher and put
        the examples.  Errors leave nothing open."""
        try:
            self.db = open_db(self.path)
        except Exception as error:
            reason = f"{type(error).__name__}: {error}"
            if isinstance(error, DatabaseUnavailableError):
                reason = "it is in use by another process (is a demo running there?)"
            raise DemoDatabaseError(
                f"cannot open {self.path}: {reason}; expected a folder this "
                f"user can write, with no other process using its Data.fs") from None
        try:
            try:
                install(self.db)
            except ZasyncError as error:
                raise DemoDatabaseError(f"cannot use {self.path}: {error}") from None
            self.dispatcher = Dispatcher(self.db, threads=self.threads,
                                         poll_interval=0.2, id=DISPATCHER_ID)
            self.dispatcher.start()
            self.put_round()
            self._conn = self.db.open(transaction_manager=self._tm)
            if self.bind is not None:
                self._start_web()
        except BaseException:
            self.close()
            raise

    def _start_web(self):
        """Serve the web view from a thread; a port in use is reported and
        the demo goes on without it."""
        from zasync.web.serve import make_server
        token = secrets.token_urlsafe(12)
        try:
            server, line = make_server(self.db, self.bind, token=token, refresh=1)
        except OSError as error:
            self.web_line = (f"web view not started: cannot listen on {self.bind} "
                             f"({error}); try --bind 127.0.0.1:PORT")
            return
        self.web, self.web_token = server, token
        self.web_line = line.replace("Ctrl-C to stop", f"token {token}")
        threading.Thread(target=server.run, name="zasync-demo-web", daemon=True).start()

    def stop(self):
        """Cancel this run's unfinished jobs and stop the dispatcher; return
        the number of jobs cancelled."""
        if self.dispatcher is None or not self.dispatcher.running:
            return 0
        try:
            cancelled = self._cancel_unfinished()
        finally:
            if not self.dispatcher.stop(timeout=STOP_GRACE):
                logger.warning("demo: jobs were still running after %s s", STOP_GRACE)
        return cancelled

    def close(self):
        """Stop the web view and the dispatcher if they run, and close the
        database."""
        try:
            if self.web is not None:
                self.web.close()
                self.web = None
            self.stop()
        finally:
            if self._conn is not None:
                self._tm.abort()
                self._conn.close()
                self._conn = None
            if self.db is not None:
                self.db.close()
                self.db = None

    def _cancel_unfinished(self):
        """Cancel this run's unfinished jobs, so that a stop is prompt and
        the next run finds none of them left active."""
        if not self.oids:
            return 0
        tm = transaction.TransactionManager()
        conn = self.db.open(transaction_manager=tm)
        try:
            for attempt in tm.attempts(5):
                with attempt:
                    count = 0
                    for oid in self.oids:
                        job = conn.get(oid)
                        if job.status != COMPLETED and job.cancel():
                            count += 1
            return count
        finally:
            conn.close()

    def watch(self, until_done, timeout=None):
        """Refresh until the jobs are done (if `until_done`), a signal
        arrives or `timeout` passes; return the last views and whether all
        jobs completed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        live = None
        if self.live_display:
            live = Live(console=self.console, auto_refresh=False, transient=True)
            live.start()
        try:
            while True:
                if not until_done and time.monotonic() >= self.next_round_at:
                    self.put_round()
                views, counter = self.snapshot(None if until_done else ROUNDS_SHOWN)
                self.report_changes(views)
                if live is not None:
                    live.update(self.render(views, counter), refresh=True)
                done = all(view.done for view in views)
                if (until_done and done) or self.stop_requested.is_set():
                    return views, done
                if deadline is not None and time.monotonic() > deadline:
                    return views, done
                self.stop_requested.wait(REFRESH)
        finally:
            if live is not None:
                live.stop()


def _default_console():
    """A console on stdout: the terminal's width, or 120 columns elsewhere."""
    console = Console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        # Rich assumes 80 columns for a file or a pipe; logs read better wider.
        console = Console(width=120)
    return console


def _bar_cell(bar, fraction):
    """A progress bar followed by its percentage."""
    table = Table.grid(padding=(0, 1))
    table.add_row(bar, Text(f"{fraction:4.0%}"))
    return table


def run(directory="var", threads=4, once=False, console=None, delay=4.0,
        timeout=ONCE_TIMEOUT, bind=None):
    """Run the demo; return the process's exit status.

    Without `once`, it shows the jobs until SIGINT or SIGTERM; with `once`,
    until every example completed (failing as expected or not), then prints
    a summary.  With `bind` (HOST:PORT) it also serves the web view there.
    Either way it stops the dispatcher and closes the database.
    """
    # Once, the examples are run to see them complete: the report need not
    # take the seconds it takes to be watched.
    demo = Demo(directory, threads=threads, console=console, delay=delay, bind=bind,
                pause=0.1 if once else 0.5)
    console = demo.console
    previous = demo._install_signal_handlers()
    try:
        demo.open()
        console.print(
            f"zasync demo: database [bold]{escape(demo.path)}[/], dispatcher "
            f"{demo.dispatcher.id} with {threads} thread(s); "
            + ("waiting for the examples to complete." if once
               else "press Ctrl-C to stop."), highlight=False)
        if demo.web_line is not None:
            console.print(Text(demo.web_line))
        status = 0
        try:
            views, done = demo.watch(until_done=once, timeout=timeout if once else None)
            cancelled = demo.stop()
            # What the web view would show now, stopped: the last word.
            views, _ = demo.snapshot(None if once else ROUNDS_SHOWN)
            if cancelled:
                demo.report_changes(views)
        finally:
            demo.close()
        console.print(demo.summary(views))
        earlier = len(demo.oids) - len([v for v in views if not v.is_callback])
        if earlier:
            console.print(f"({earlier} earlier job(s) of this run are in the web view "
                          f"and `zasync jobs`.)")
        console.print(Text(demo.counts_line()))
        if once and not done:
            if demo.stop_requested.is_set():
                console.print(f"Interrupted by {demo.signal_name} before the "
                              f"examples completed.")
                status = 130
            else:
                console.print(f"[red]The examples did not complete in {timeout:.0f} s.[/]")
                status = 1
        if cancelled:
            console.print(f"Cancelled {cancelled} unfinished job(s).")
        console.print(Text(f"Dispatcher stopped and {demo.path} closed. Goodbye!"))
        return status
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
