"""zasync in a Pyramid application that opens its databases with
pyramid_zodbconn and runs each request in a pyramid_tm transaction.

::

    config.include("pyramid_tm")
    config.include("pyramid_zodbconn")
    config.include("zasync.integration.pyramid")

with, in the settings (the .ini file's app section)::

    zodbconn.uri = zeo://127.0.0.1:8100?storage=main
    zodbconn.uri.async = zeo://127.0.0.1:8100?storage=async
    zasync.threads = 2          # worker threads here; 0: zasync worker elsewhere

Once the application is created, the queues are installed in the queue
database (``zasync.queue.database``: the one named 'async' if there is one, else
pyramid_zodbconn's main database, which it names ``''``) and a dispatcher
starts (`zasync.integration.subscriber.configure`; stopped at the end of the process,
or by `zasync.integration.subscriber.stop()`).  In a view, ``get_queue(request)`` is the
queue seen by the request's own connection, so a put joins the request's
transaction: pyramid_tm commits it with the rest of the view's work, or
aborts it, and then the job never existed.

Pyramid itself is not a dependency of zasync: this module imports it only
when used.
"""

from zasync.queue import database

from zasync.integration import subscriber
from zasync.interfaces import ConfigurationError

#: The database that keeps the queues when the settings do not say:
#: zasync's multi-database policy.
ASYNC_DATABASE = "async"


def databases(registry):
    """The databases pyramid_zodbconn opened for the application whose
    `registry` (or request) is given: a dict from name to `ZODB.DB`, the
    main database under ``''``, each named one (``zodbconn.uri.NAME``)
    under its name.  It is their multi-database's ``databases`` mapping."""
    registry = getattr(registry, "registry", registry)
    found = getattr(registry, "_zodb_databases", None)
    if not found:
        raise ConfigurationError(
            "no database: include pyramid_zodbconn, with a zodbconn.uri setting, "
            "before zasync.integration.pyramid (config.include('pyramid_zodbconn'))")
    return found


def queue_database_name(registry):
    """The name of the database that keeps the queues: the setting
    ``zasync.queue.database``, else 'async' if pyramid_zodbconn opened one, else
    ``''`` (the main database)."""
    registry = getattr(registry, "registry", registry)
    found = databases(registry)
    settings = registry.settings or {}
    name = settings.get("zasync.queue.database")
    if name is None:
        return ASYNC_DATABASE if ASYNC_DATABASE in found else ""
    name = name.strip()
    if name not in found:
        raise ConfigurationError(
            f"zasync.queue.database = {name!r}: pyramid_zodbconn opened no database of "
            f"that name; expected one of "
            + ", ".join(repr(each) for each in found)
            + " (a zodbconn.uri.NAME setting opens one)")
    return name


def get_queues(request):
    """The `IQueues` container, loaded by the request's connection (in its
    pyramid_tm transaction)."""
    from pyramid_zodbconn import get_connection
    name = queue_database_name(request.registry)
    conn = get_connection(request, None if name == "" else name)
    return database.get_queues(conn)


def get_queue(request, name=""):
    """The queue `name` ('' is the default queue), loaded by the request's
    connection: a ``put`` commits or aborts with the request."""
    return get_queues(request)[name]


def _settings(settings):
    """threads, queue names and dispatcher keyword arguments from the
    application's settings, or a ConfigurationError naming the bad one."""
    def number(key, kind, default, least):
        raw = settings.get(key)
        if raw is None:
            return default
        try:
            value = kind(raw)
        except (TypeError, ValueError):
            value = None
        if value is None or value < least:
            raise ConfigurationError(
                f"{key} = {raw!r}: expected {'an integer' if kind is int else 'a number'}"
                f" of {least} or more")
        return value
    threads = number("zasync.threads", int, 1, 0)
    queues = tuple("" if token in ("''", '""') else token
                   for token in (settings.get("zasync.queues") or "").split()) or ("",)
    kwargs = {}
    poll = number("zasync.poll_interval", float, None, 0.001)
    if poll is not None:
        kwargs["poll_interval"] = poll
    return threads, queues, kwargs


def includeme(config):
    """Check the settings now; once the application is created, install
    the queues and start this process's dispatcher."""
    from pyramid.events import ApplicationCreated
    registry = config.registry
    found = databases(registry)
    name = queue_database_name(registry)
    threads, queues, kwargs = _settings(registry.settings or {})

    def start(event):
        # pyramid_zodbconn opens its requests' connections in '' (opened
        # first, so the root anyway): zasync opens its own there too.
        subscriber.configure(found[""], threads=threads, queues=queues,
                             database_name=name, **kwargs)
    config.add_subscriber(start, ApplicationCreated)
