"""The `zasync` command line: `zasync demo` and `zasync worker`.

Every mistake in what the user typed ends as a `click.UsageError` (exit
status 2, one "Error:" line naming the value and what was expected), never
as a traceback.  What happens after the input was accepted is logged.
"""

import functools
import logging
import os
import signal
import sys
import threading
import uuid

import click

from zasync.queue.database import (
    close_connection, close_databases, get_queues, install, open_connection,
    open_db)
from zasync.interfaces import DispatcherIdInUseError, NotInstalledError, ZasyncError
from zasync.worker import collector

logger = logging.getLogger(__name__)

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _version():
    """The installed distribution's version."""
    try:
        from importlib.metadata import version
        return version("zasync")
    except Exception:  # pragma: no cover - not installed, run from a checkout
        return "unknown"


@click.group(context_settings=CONTEXT_SETTINGS)
@click.version_option(_version(), "--version", prog_name="zasync",
                      message="%(prog)s %(version)s")
@click.option("-A", "--app", "apps", multiple=True, envvar="ZASYNC_APP", metavar="MODULE",
              help="A module of your application to import at start, before the "
                   "command runs (so a worker that cannot import it stops at once), "
                   "and in the child processes of worker --processes; repeat for "
                   "several.  [env: ZASYNC_APP, space-separated]")
def main(apps):
    """zasync: deferred work for ZODB applications.

    An application puts jobs into a queue stored in its own database, in its
    own transaction; workers claim them, run them and record their results
    and progress in the same database.  These commands run workers and show
    zasync at work.

    \b
    Examples:
      zasync demo                      # see it work, Ctrl-C to stop
      zasync worker --db zeo://127.0.0.1:8100 --threads 4
      zasync -A myapp.jobs worker --db zeo://127.0.0.1:8100

    Jobs name their callables as MODULE:FUNCTION; zasync imports them from
    the current folder first, then from the Python path (PYTHONPATH and
    what is installed).  Run the commands from your application's folder,
    or install it, or set PYTHONPATH; -A/--app (or ZASYNC_APP) imports
    modules at start.

    Run `zasync COMMAND --help` for the options of each command.
    """
    _find_user_code(apps)


# -- helpers -----------------------------------------------------------------

def database_options(help_text):
    """The options that say which databases a command opens: ``--db``
    (repeated as NAME=URI for a multi-database), ``--queue-db`` and
    ``--zope-conf``; the command receives them as one `target`, a
    `zasync.queue.multidb.Databases`.

    Each may come from the environment instead (``ZASYNC_DB``, its URIs
    separated by spaces, ``ZASYNC_QUEUE_DB``, ``ZASYNC_ZOPE_CONF``), so
    that a shell or a service file names the database once; what the
    command line gives wins over all of them.
    """
    def decorate(function):
        @functools.wraps(function)
        def command(db_values, queue_db, zope_conf, **kwargs):
            from zasync.queue import multidb
            db_values, zope_conf = _command_line_first(db_values, zope_conf)
            if not db_values and zope_conf is None:
                raise click.UsageError(
                    "Missing option '--db' (or --zope-conf PATH): the database "
                    "to open, e.g. --db zeo://127.0.0.1:8100, or set ZASYNC_DB "
                    "in the environment")
            try:
                target = multidb.parse(db_values, queue_db, zope_conf)
            except ZasyncError as error:
                hint = "'--zope-conf'" if zope_conf is not None else "'--db'"
                raise click.BadParameter(str(error), param_hint=hint) from None
            return function(target=target, **kwargs)
        command = click.option(
            "--zope-conf", default=None, metavar="PATH", envvar="ZASYNC_ZOPE_CONF",
            show_envvar=True,
            help="Open the databases of a Zope instance's zope.conf (its "
                 "<zodb_db> sections, the one mounted at / first) instead of --db.",
        )(command)
        command = click.option(
            "--queue-db", default=None, metavar="NAME", envvar="ZASYNC_QUEUE_DB",
            show_envvar=True,
            help="Of several databases, the one that keeps the queues.  "
                 "[default: the one named 'async']")(command)
        return click.option(
            "--db", "db_values", multiple=True, metavar="URI", envvar="ZASYNC_DB",
            show_envvar=True,
            help=help_text + "  For a multi-database, repeat as --db NAME=URI, "
                 "the application's main database first, with the names the "
                 "application gives them (in ZASYNC_DB: separated by spaces).",
        )(command)
    return decorate


def _command_line_first(db_values, zope_conf):
    """Of --db and --zope-conf, drop one that came from the environment
    when the other was given on the command line."""
    context = click.get_current_context()
    environment = click.core.ParameterSource.ENVIRONMENT
    db_from_env = context.get_parameter_source("db_values") == environment
    conf_from_env = context.get_parameter_source("zope_conf") == environment
    if db_values and zope_conf is not None:
        if db_from_env and not conf_from_env:
            db_values = ()
        elif conf_from_env and not db_from_env:
            zope_conf = None
    return db_values, zope_conf


def _find_user_code(apps):
    """Put the current folder first on the path, as ``python -m`` would
    (an installed script's path starts with its own folder instead), then
    import the modules of --app."""
    import importlib
    here = os.getcwd()
    if not any(os.path.abspath(entry or os.curdir) == here for entry in sys.path):
        sys.path.insert(0, here)
    if not apps:
        return
    source = click.get_current_context().get_parameter_source("apps")
    hint = "ZASYNC_APP" if source == click.core.ParameterSource.ENVIRONMENT else "'--app'"
    for name in apps:
        try:
            importlib.import_module(name)
        except Exception as error:
            raise click.BadParameter(
                f"{name!r}: cannot import it ({type(error).__name__}: {error})"
                + (f"; {import_hint()}" if isinstance(error, ImportError) else ""),
                param_hint=hint) from None
    # The child processes of `worker --processes` import them too.
    os.environ["ZASYNC_APP"] = " ".join(apps)


def import_hint():
    """What to do when the user's module cannot be imported."""
    return (f"zasync looks in the current folder ({os.getcwd()}), then on the "
            f"Python path: run zasync from the folder that holds the module, "
            f"install your application in this Python's environment (pip install "
            f"-e . in its checkout) or add its folder to PYTHONPATH; -A/--app "
            f"MODULE imports a module at start, so that a worker that cannot "
            f"import it stops at once")


def open_database(target, param_hint, wait=True):
    """Open `target` (a path or URI, or a `zasync.queue.multidb.Databases`) and
    return the database that keeps the queues, or raise a `BadParameter`
    that says why it could not be opened.  Without `wait`, a ZEO server that
    does not answer at once is reported at once: a command an operator
    waits for does not wait for a server to start, a worker does."""
    from zasync.queue.database import zeo_address, zeo_unanswered
    uris = [target] if isinstance(target, str) else target.uris()
    for uri in [] if wait else uris:
        address = zeo_address(uri)
        why = None if address is None else zeo_unanswered(address)
        if why is not None:
            raise click.BadParameter(
                f"no ZEO server answers at {address} ({why}): start the server, "
                f"or check the address in {uri!r}", param_hint=param_hint)
    try:
        if isinstance(target, str):
            return open_db(target)
        return target.open()
    except ZasyncError as error:
        raise click.BadParameter(str(error), param_hint=param_hint) from None
    except Exception as error:
        raise click.BadParameter(
            f"cannot open {target!r}: {type(error).__name__}: {error}; expected a "
            f"FileStorage path or a URI such as zeo://127.0.0.1:8100",
            param_hint=param_hint) from None


def _configure_logging(level):
    """Log to stderr at `level` (a name from LOG_LEVELS, in any case)."""
    logging.basicConfig(level=getattr(logging, level.upper()), format=LOG_FORMAT,
                        stream=sys.stderr)


# -- demo --------------------------------------------------------------------

@main.command(context_settings=CONTEXT_SETTINGS)
@click.option("--dir", "directory", default="var", show_default=True,
              type=click.Path(file_okay=False, dir_okay=True),
              help="Folder of the demo's database (DIR/Data.fs); created if missing.")
@click.option("--threads", default=4, show_default=True, type=click.IntRange(min=1),
              help="Worker threads of the in-process dispatcher.")
@click.option("--once", is_flag=True,
              help="Run the examples to completion, print a summary and exit "
                   "(without the web view unless --bind is given).")
@click.option("--bind", default=None, metavar="HOST:PORT",
              help="Where to serve the web view.  [default: 127.0.0.1:8080; "
                   "none with --once]")
@click.option("--no-web", is_flag=True, help="Do not serve the web view.")
@click.option("--log-level", default="ERROR", show_default=True,
              type=click.Choice(LOG_LEVELS, case_sensitive=False),
              help="Level of the log written to stderr.")
def demo(directory, threads, once, bind, no_web, log_level):
    """Show zasync at work with example jobs.

    Opens (or creates) an embedded FileStorage at DIR/Data.fs, installs
    zasync in it, starts an in-process dispatcher and puts a round of
    example jobs: a slow report that reports its progress, one that fails
    (its traceback is shown), one that fails twice and is retried by its
    policy, a parallel group, one delayed by a few seconds, one that changes
    a persistent counter in the database, and one with a callback.  Until
    Ctrl-C, a new round comes every 10 seconds, so the web view always has
    jobs running.

    The web view is served at http://127.0.0.1:8080/ (--bind to change,
    --no-web to leave it out; a port in use is reported and the demo goes
    on without it); the token printed at the start logs in to its actions.

    The last rounds' jobs are shown live, with progress bars, and the
    queue's counts as the web view gives them, until Ctrl-C, which cancels
    what is unfinished, stops the dispatcher and closes the database.  With
    --once it puts one round and waits for it instead, prints a
    summary table and exits with status 0 (the failing example is expected
    to fail; status 130 if interrupted).  Jobs of earlier runs in the same
    DIR stay in its history.

    \b
    Examples:
      zasync demo
      zasync demo --dir /tmp/zasync-demo --threads 2
      zasync demo --once               # run the examples, print a summary
      zasync demo --bind 127.0.0.1:9000
    """
    from zasync.cli import demo as demo_module
    from zasync.web.serve import parse_bind
    if no_web and bind is not None:
        raise click.UsageError("give --bind or --no-web, not both")
    if bind is None and not (once or no_web):
        bind = "127.0.0.1:8080"
    if bind is not None:
        try:
            parse_bind(bind)
        except ZasyncError as error:
            raise click.BadParameter(str(error), param_hint="'--bind'") from None
    _configure_logging(log_level)
    try:
        status = demo_module.run(directory, threads=threads, once=once, bind=bind)
    except demo_module.DemoDatabaseError as error:
        raise click.BadParameter(str(error), param_hint="'--dir'") from None
    sys.exit(status)


# -- web ---------------------------------------------------------------------

@main.command(context_settings=CONTEXT_SETTINGS)
@database_options("The database: a FileStorage path or a zodburi URI "
                  "(zeo://HOST:PORT to watch workers in other processes).")
@click.option("--bind", default="127.0.0.1:8080", show_default=True, metavar="HOST:PORT",
              help="Address to listen on; loopback unless told otherwise "
                   "(0.0.0.0:8080 opens it to the network).")
@click.option("--token", default=None, envvar="ZASYNC_WEB_TOKEN", metavar="TOKEN",
              help="Credential for actions: sent as 'Authorization: Bearer TOKEN' "
                   "or typed into the login page.  [env: ZASYNC_WEB_TOKEN]")
@click.option("--user", "username", default=None, metavar="NAME",
              help="User name for actions (HTTP basic or the login page); "
                   "needs --password.")
@click.option("--password", default=None, envvar="ZASYNC_WEB_PASSWORD", metavar="PASSWORD",
              help="Password of --user.  [env: ZASYNC_WEB_PASSWORD]")
@click.option("--refresh", default=1.0, show_default=True, metavar="SECONDS",
              type=click.FloatRange(min=0),
              help="How often open pages check for changes and update what "
                   "changed in place (0: never).")
@click.option("--threads", default=4, show_default=True, type=click.IntRange(min=1),
              help="Threads answering requests.")
@click.option("--cache-size", default=60_000, show_default=True, type=click.IntRange(min=100),
              help="Objects each request thread's connection keeps in memory.  Lists "
                   "and searches read the queues' indexes: with too small a cache they "
                   "are read again at every request (100,000 jobs: 60,000).")
@click.option("--allow-host", "allow_hosts", multiple=True, metavar="NAME",
              help="A host name the view answers to besides loopback names (e.g. "
                   "a proxy's); repeat for several.  On loopback, requests for "
                   "other names are refused, against DNS rebinding.")
@click.option("--require-login", is_flag=True,
              help="Reading needs the credential too: pages ask visitors to log in, "
                   "the JSON API and /metrics answer 401 without it.")
@click.option("--log-level", default="INFO", show_default=True,
              type=click.Choice(LOG_LEVELS, case_sensitive=False),
              help="Level of the log written to stderr.")
def web(target, bind, token, username, password, refresh, threads, cache_size, allow_hosts,
        require_login, log_level):
    """Serve the web view and JSON API until SIGTERM or SIGINT.

    Pages: the overview (per queue: pending, active, failed and completed
    jobs, and a chart of the last hour; the workers and their health), the
    jobs (all of them, a page at a time; filtered by status, state, queue
    and callable name; searched by the words of their callables,
    arguments, results and failures; a box on every page goes to a job by
    its id), the running
    jobs with their progress, each job (arguments, status history,
    progress, annotations, attempts, result, failure and traceback), the
    workers and the schedules of recurring jobs.  A banner on every page
    counts the running jobs, the failures not yet dismissed and the
    cancellations apart; pages update what changed in place every
    --refresh seconds, keeping open sections, selections and the scroll,
    and a value too long for a page links to its whole repr as text.  JSON under /api/ (jobs, jobs/ID, queues, workers, schedules;
    /api/ itself lists them) and Prometheus metrics at /metrics.

    Actions (cancel, retry, dismiss, remove; removing a schedule; dismiss,
    retry or cancel of the checked jobs or of all matching a filter) are
    POSTs that need a credential: --token, or --user with --password, and
    are shown only once logged in.  Without one, the view is read only and
    says so.  Wrong credentials are logged, and an address that gives
    five within a minute is answered 429 for the rest of that minute.
    Anyone who reaches the address can read the jobs, their arguments and
    tracebacks, unless --require-login: keep --bind on loopback, or
    require the login, or put the view behind a proxy that checks who
    comes in.

    \b
    Examples:
      zasync web --db zeo://127.0.0.1:8100
      ZASYNC_WEB_TOKEN=s3cret zasync web --db zeo://127.0.0.1:8100
      zasync web --db var/Data.fs --bind 127.0.0.1:9000 --user admin --password s3cret
      zasync web --db zeo://127.0.0.1:8100 --token s3cret --require-login
      curl -X POST -H 'Authorization: Bearer s3cret' \\
           http://127.0.0.1:8080/api/jobs/ID/retry
      curl -X POST -H 'Authorization: Bearer s3cret' \\
           -H 'Content-Type: application/json' \\
           -d '{"all": true, "filter": {"state": "failure", "dismissed": "no"}}' \\
           http://127.0.0.1:8080/api/bulk/dismiss
    """
    from zasync.web.serve import parse_bind, serve
    if token is not None and (username is not None or password is not None):
        raise click.UsageError("give --token, or --user with --password, not both")
    if (username is None) != (password is None):
        raise click.UsageError("--user and --password go together")
    if "" in (token, username, password):
        raise click.UsageError("an empty --token, --user or --password would let "
                               "anyone act: give a value or leave the option out")
    if require_login and token is None and username is None:
        raise click.UsageError("--require-login needs a credential to log in with: "
                               "--token, or --user with --password")
    try:
        parse_bind(bind)
    except ZasyncError as error:
        raise click.BadParameter(str(error), param_hint="'--bind'") from None
    _configure_logging(log_level)
    db = open_database(target, "'--db'")
    db.setCacheSize(cache_size)
    try:
        serve(db, bind, token=token, username=username, password=password,
              refresh=refresh, threads=threads, allow_hosts=allow_hosts,
              require_login=require_login,
              announce=lambda line: click.echo(line, err=True))
    except OSError as error:
        raise click.ClickException(f"cannot listen on {bind}: {error}") from None
    finally:
        close_databases(db)


# -- worker ------------------------------------------------------------------

@main.command(context_settings=CONTEXT_SETTINGS)
@database_options("The database: a FileStorage path or a zodburi URI "
                  "(zeo://HOST:PORT, file://..., postgres://... for RelStorage).")
@click.option("--threads", default=4, show_default=True, type=click.IntRange(min=1),
              help="Worker threads, i.e. jobs run at once.")
@click.option("--queue", "queue_names", multiple=True, metavar="NAME",
              help="A queue to serve; repeat for several.  [default: '' (the "
                   "default queue)]")
@click.option("--install/--no-install", "install_missing", default=True,
              show_default=True,
              help="Install zasync and the queues if missing, or refuse "
                   "queues that are not installed.")
@click.option("--poll-interval", default=0.5, show_default=True, metavar="SECONDS",
              type=click.FloatRange(min=0, min_open=True),
              help="How often to look for due jobs when nothing wakes the "
                   "worker: a commit over ZEO or in this process wakes it at "
                   "once; RelStorage is only polled.")
@click.option("--grace", default=30.0, show_default=True, metavar="SECONDS",
              type=click.FloatRange(min=0),
              help="On SIGTERM or SIGINT, how long to let running jobs finish.")
@click.option("--prefetch", default=None, type=click.IntRange(min=0), metavar="N",
              help="Under a backlog, jobs claimed ahead of free threads in one "
                   "commit (0: never more than the free threads).  [default: "
                   "adapts: while jobs take under 20 ms, about 50 ms of them per thread, "
                   "at most 64; else 1 per thread]")
@click.option("--batch", default=None, type=click.IntRange(min=1), metavar="N",
              help="While jobs take under 20 ms, a thread runs up to N of the jobs "
                   "claimed ahead in one transaction, each after a savepoint "
                   "(1: each job in a transaction of its own).  [default: 32]")
@click.option("--filter", "filter_spec", default=None, metavar="MODULE:FUNCTION",
              help="Take only jobs for which FUNCTION(job) is true, e.g. "
                   "myapp.jobs:is_cpu_bound.")
@click.option("--ping-interval", default=60.0, show_default=True, metavar="SECONDS",
              type=click.FloatRange(min=0, min_open=True),
              help="How often the worker writes its heartbeat in the database.")
@click.option("--death-interval", default=None, metavar="SECONDS",
              type=click.FloatRange(min=0, min_open=True),
              help="Seconds without a heartbeat after which this worker declares "
                   "another dead and recovers its jobs.  [default: 3 x ping interval]")
@click.option("--processes", is_flag=True,
              help="Run each job in a child process (for CPU-bound work and hard "
                   "time limits); needs a database URI other processes can open.")
@click.option("--serve", "serve_address", default=None, metavar="HOST:PORT",
              help="With a FileStorage --db: serve it over ZEO at HOST:PORT from "
                   "this process, so other workers can join with "
                   "--db zeo://HOST:PORT.")
@click.option("--uuid-file", default="zasync-worker.uuid", show_default=True,
              type=click.Path(dir_okay=False), metavar="PATH",
              help="File keeping this worker's stable id (created if missing), so "
                   "that a restart recovers its own earlier jobs at once.")
@click.option("--id", "dispatcher_id", default=None, metavar="ID",
              help="The dispatcher's id in the database, instead of --uuid-file's.")
@click.option("--log-level", default="INFO", show_default=True,
              type=click.Choice(LOG_LEVELS, case_sensitive=False),
              help="Level of the log written to stderr.")
def worker(target, threads, queue_names, install_missing, poll_interval, grace,
           prefetch, batch, filter_spec, ping_interval, death_interval, processes,
           serve_address, uuid_file, dispatcher_id, log_level):
    """Run jobs from a database until SIGTERM or SIGINT.

    Opens the database, installs the queues if missing, and runs a
    dispatcher with THREADS worker threads that claims jobs from the
    queues.  On SIGTERM or SIGINT it stops claiming, lets running jobs
    finish for up to --grace seconds, and exits with status 0; a second
    signal exits at once (jobs left running are recovered later).

    Several workers can serve one database through a ZEO server or
    RelStorage.  When the jobs live in a separate database beside the
    application's (a multi-database), give every database with its name,
    the application's main one first, as the application names them (the
    jobs refer to its objects by those names), or its Zope instance's
    zope.conf.  A FileStorage path serves only this process, as the file
    is locked.  Each worker needs an id of its own: it keeps it in
    --uuid-file, in the current folder by default, so a second worker
    started from the same folder needs another --uuid-file (or --id).
    Logs go to stderr.

    \b
    Examples:
      zasync worker --db zeo://127.0.0.1:8100
      zasync worker --db zeo://db.example.com:8100 --threads 8 --queue mail
      zasync worker --db var/Data.fs --queue '' --queue mail --grace 60
      zasync worker --db zeo://127.0.0.1:8100 --filter myapp.jobs:is_report
      zasync worker --db 'main=zeo://127.0.0.1:8100?storage=main' \\
                    --db 'async=zeo://127.0.0.1:8100?storage=async' --queue-db async
      zasync worker --zope-conf /srv/instance/etc/zope.conf
      zasync worker --db zeo://127.0.0.1:8100 --uuid-file worker-2.uuid   # a second one
    """
    from zasync.worker.agent import Agent
    from zasync.worker.dispatcher import Dispatcher
    # Logging first: starting the embedded server and making a new id log
    # what they did (where it serves, which id), which would otherwise be lost.
    _configure_logging(log_level)
    if processes and batch is not None:
        raise click.UsageError("--batch does not go with --processes: each job has "
                               "a child process of its own")
    job_filter = _load_filter(filter_spec) if filter_spec else None
    server = None
    if serve_address is not None:
        if not target.single:
            raise click.BadParameter(
                f"--serve serves one FileStorage; {target} are several databases",
                param_hint="'--serve'")
        uri, server = _serve_filestorage(target.pairs[0][1], serve_address)
        target = target.replace(lambda path: uri)
    if processes and any("://" not in uri for uri in target.uris()):
        raise click.BadParameter(
            f"{target!r}: --processes needs database URIs that child processes "
            f"can open (zeo://..., postgres://...), not a FileStorage path",
            param_hint="'--db'")
    # The id file is read now (an unreadable one is bad input) but a new
    # id is written only once the database has opened: a worker refused
    # for a bad --db leaves no file behind.
    new_id = None
    if dispatcher_id is not None:
        id_hint = ("give this worker an --id of its own (or leave --id out: it "
                   "then keeps its id in --uuid-file)")
    else:
        id_hint = (f"it was read from {uuid_file} (--uuid-file), which every "
                   f"worker given the same --uuid-file shares (by default, every "
                   f"worker started from the same folder): give this one its own, "
                   f"e.g. --uuid-file worker-2.uuid, or an --id of its own")
        dispatcher_id = _read_id(uuid_file)
        if dispatcher_id is None:
            dispatcher_id = new_id = uuid.uuid4().hex
    names = tuple(dict.fromkeys(queue_names)) or ("",)
    for path in target.uris():
        if "://" not in path and not os.path.exists(path):
            logger.warning("worker: %s does not exist; creating a new, empty "
                           "database there", path)
    try:
        db = open_database(target, "'--db'")
    except BaseException:
        if server is not None:
            server.stop()
        raise
    finished = True
    try:
        _prepare_queues(db, target, names, install_missing)
        if new_id is not None:
            _write_id(uuid_file, new_id)
        try:
            if processes:
                from zasync.worker.process import ProcessAgent
                agent = ProcessAgent(threads, target.to_argument(), filter=job_filter,
                                     prefetch=prefetch, grace=min(grace, 10.0))
            else:
                agent = Agent(threads, filter=job_filter, prefetch=prefetch,
                              **({} if batch is None else {"batch": batch}))
            dispatcher = Dispatcher(db, agents=[agent], queues=names,
                                    id=dispatcher_id, poll_interval=poll_interval,
                                    ping_interval=ping_interval,
                                    death_interval=death_interval)
        except ZasyncError as error:
            raise click.UsageError(str(error)) from None
        finished = _serve(dispatcher, grace, id_hint)
    finally:
        if finished:
            close_databases(db)
            if server is not None:
                server.stop()
        else:
            # Jobs still run in daemon threads: closing the storage under
            # them would only add errors; the process ends anyway.
            logger.warning("worker: leaving the database open for jobs still "
                           "running; they are recovered later")
    logger.info("worker: stopped")


def _serve_filestorage(target, address):
    """Start the embedded ZEO server for --serve; return (uri, server)."""
    from zasync.cli.embedded import EmbeddedServer, parse_address
    if "://" in target:
        raise click.BadParameter(
            f"--serve needs a FileStorage path as --db, not {target!r}",
            param_hint="'--serve'")
    try:
        address = parse_address(address)
        folder = os.path.dirname(os.path.abspath(target))
        os.makedirs(folder, exist_ok=True)
        server = EmbeddedServer(target, address).start()
    except ZasyncError as error:
        raise click.BadParameter(str(error), param_hint="'--serve'") from None
    except Exception as error:
        raise click.BadParameter(
            f"cannot serve {target!r} at {address}: {type(error).__name__}: {error}",
            param_hint="'--serve'") from None
    logger.info("worker: serving %s over ZEO at %s", target, server.uri)
    return server.uri, server


def _read_id(path):
    """The worker id kept in `path`, or None if there is none yet."""
    try:
        with open(path, encoding="utf-8") as f:
            found = f.read().strip()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise click.BadParameter(f"{path!r}: cannot read it ({error})",
                                 param_hint="'--uuid-file'") from None
    return found or None


def _write_id(path, new):
    """Keep the new worker id `new` in `path` (written whole or not at all)."""
    try:
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            f.write(new + "\n")
        os.replace(path + ".tmp", path)
    except OSError as error:
        raise click.BadParameter(f"{path!r}: cannot write it ({error})",
                                 param_hint="'--uuid-file'") from None
    logger.info("worker: new id %s kept in %s", new, path)


def import_named(spec, param_hint, example):
    """Import the object named MODULE:NAME (NAME may be dotted, as in
    Class.method), or raise a `BadParameter` for `param_hint` saying why."""
    import importlib
    module_name, colon, name = spec.partition(":")
    if not colon or not module_name or not name:
        raise click.BadParameter(
            f"{spec!r}: expected MODULE:FUNCTION, e.g. {example}", param_hint=param_hint)
    try:
        found = importlib.import_module(module_name)
        for part in name.split("."):
            found = getattr(found, part)
    except Exception as error:
        raise click.BadParameter(
            f"{spec!r}: cannot import it ({type(error).__name__}: {error})"
            + (f"; {import_hint()}" if isinstance(error, ImportError) else ""),
            param_hint=param_hint) from None
    return found


def _load_filter(spec):
    """Import the job filter named MODULE:FUNCTION."""
    found = import_named(spec, "'--filter'", "myapp.jobs:is_report")
    if not callable(found):
        raise click.BadParameter(f"{spec!r} is not callable", param_hint="'--filter'")
    return found


def _prepare_queues(db, target, names, install_missing):
    """Install the queues `names`, or check that they are installed."""
    if install_missing:
        install(db, names)
        return
    conn = open_connection(db)
    try:
        try:
            container = get_queues(conn)
        except NotInstalledError:
            raise click.BadParameter(
                f"zasync is not installed in {target!r}; expected a database "
                f"with zasync installed (or drop --no-install)",
                param_hint="'--db'") from None
        for name in names:
            if name not in container:
                raise click.BadParameter(
                    f"no queue named {name!r} in {target!r}; expected one of "
                    + ", ".join(repr(n) for n in container.keys())
                    + " (or drop --no-install to install it)",
                    param_hint="'--queue'")
    finally:
        conn.transaction_manager.abort()
        close_connection(conn)


def _serve(dispatcher, grace, id_hint):
    """Run `dispatcher` until a signal; return whether its jobs finished.
    `id_hint` says how to give a worker another id, should its be in use."""
    stopping = threading.Event()
    received = []

    def on_signal(signum, frame):
        if stopping.is_set():
            # Writing to the log from a handler could deadlock; say it raw.
            os.write(2, f"zasync worker: second {signal.Signals(signum).name}, "
                        f"exiting without waiting for running jobs\n".encode())
            os._exit(128 + signum)
        received.append(signal.Signals(signum).name)
        stopping.set()

    previous = {signum: signal.signal(signum, on_signal)
                for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        try:
            dispatcher.start()
        except DispatcherIdInUseError as error:
            raise click.ClickException(f"{error}; {id_hint}") from None
        except ZasyncError as error:
            raise click.ClickException(str(error)) from None
        collector.tune_for_worker()   # started up: none of that is garbage
        logger.info("worker: pid %d, dispatcher %s serving %s with %d thread(s)",
                    os.getpid(), dispatcher.id,
                    ", ".join(repr(n) for n in dispatcher.queue_names),
                    sum(a.size for a in dispatcher.agents))
        while not stopping.wait(1.0):
            pass
        logger.info("worker: %s received; dispatcher %s stopping, waiting up "
                    "to %.0f s for running jobs", received[0], dispatcher.id, grace)
        finished = dispatcher.stop(timeout=grace)
        if not finished:
            running = sorted(job_id for agent in dispatcher.agents
                             for job_id in agent.running)
            logger.warning("worker: dispatcher %s: jobs still running after "
                           "%.0f s: %s", dispatcher.id, grace, ", ".join(running))
        return finished
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
