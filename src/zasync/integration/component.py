"""zasync in the Zope component architecture: the queues as utilities of a
component registry, and adapters that find them from a connection or from
any persistent object.

The queues live in the database, so the registry that holds them as
utilities must live there too: a persistent registry
(``zope.component.persistentregistry.PersistentComponents``), typically a
site's local site manager.  ``getUtility(IQueue)`` in that site then gives
the default queue, ``getUtility(IQueue, name="mail")`` the 'mail' queue and
``getUtility(IQueues)`` the container.  A global registry outlives every
connection and is shared by all threads, so it must not hold an object
loaded by one connection; it holds the adapters instead, which find the
queues through the connection of the object adapted::

    IQueue(conn)            # the default queue of the connection's databases
    IQueue(some_document)   # the same, through the document's connection
    IQueues(conn)           # the container

In a multi-database the queues may live in another database than the
object adapted (the 'async' database beside 'main'): the adapters look in
the object's own database first, then in the others of the multi-database.
"""

import persistent
import zope.component
from persistent.interfaces import IPersistent
from ZODB.Connection import Connection
from ZODB.interfaces import IConnection
from zope.interface import implementer
from zope.interface.interfaces import IComponentRegistry

from zasync.queue import instance
from zasync.queue.database import ROOT_KEY
from zasync.interfaces import (
    ConfigurationError, IQueue, IQueues, NotInstalledError)

#: The database a multi-database keeps the queues in when it follows
#: zasync's multi-database policy.
ASYNC_DATABASE = "async"


def _connection_of(obj):
    if isinstance(obj, Connection):
        return obj
    jar = getattr(obj, "_p_jar", None)
    if isinstance(jar, Connection):
        return jar
    raise ConfigurationError(
        f"{obj!r}: expected a ZODB connection or a persistent object stored "
        f"in one (a new object has no connection until it is added or "
        f"committed)")


def _database_names(conn):
    """The names of the databases to look in: those whose queues this
    process's start-up configuration serves (`zasync.queue.instance.serve`), then
    the connection's own, then 'async', then the others of the
    multi-database in name order."""
    own = conn.db().database_name
    others = sorted(name for name in conn.db().databases if name != own)
    if ASYNC_DATABASE in others:
        others.remove(ASYNC_DATABASE)
        others.insert(0, ASYNC_DATABASE)
    names = [own] + others
    served = [name for name in instance.served_databases(conn.db()) if name in names]
    return served + [name for name in names if name not in served]


def find_queues(obj):
    """The `IQueues` container for a connection or a persistent object:
    the one in its database's root, or else in the root of another database
    of its multi-database.  Raises `NotInstalledError` if there is none."""
    conn = _connection_of(obj)
    for name in _database_names(conn):
        other = conn if name == conn.db().database_name else conn.get_connection(name)
        container = other.root().get(ROOT_KEY)
        if container is not None:
            return container
    raise NotInstalledError(
        "zasync is not installed in this database (nor in another of its "
        "multi-database): call zasync.install(db)")


@zope.component.adapter(IConnection)
@implementer(IQueues)
def queues_for_connection(conn):
    """Adapter: IConnection -> `IQueues`."""
    return find_queues(conn)


@zope.component.adapter(IPersistent)
@implementer(IQueues)
def queues_for_object(obj):
    """Adapter: IPersistent -> `IQueues`; None (no adapter) for an object
    not stored yet."""
    if getattr(obj, "_p_jar", None) is None:
        return None
    return find_queues(obj)


@zope.component.adapter(IConnection)
@implementer(IQueue)
def queue_for_connection(conn):
    """Adapter: IConnection -> the default `IQueue`."""
    return find_queues(conn)[""]


@zope.component.adapter(IPersistent)
@implementer(IQueue)
def queue_for_object(obj):
    """Adapter: IPersistent -> the default `IQueue`; None (no adapter) for
    an object not stored yet."""
    if getattr(obj, "_p_jar", None) is None:
        return None
    return find_queues(obj)[""]


_ADAPTERS = (
    (queues_for_connection, IConnection, IQueues),
    (queues_for_object, IPersistent, IQueues),
    (queue_for_connection, IConnection, IQueue),
    (queue_for_object, IPersistent, IQueue),
)


def register_adapters(registry=None):
    """Register the adapters above in `registry` (the global site manager
    by default); configure.zcml does the same for ZCML applications."""
    registry = _registry(registry)
    for factory, required, provided in _ADAPTERS:
        registry.registerAdapter(factory, (required,), provided)


def unregister_adapters(registry=None):
    """Undo `register_adapters`."""
    registry = _registry(registry)
    for factory, required, provided in _ADAPTERS:
        registry.unregisterAdapter(factory, (required,), provided)


def _registry(registry):
    if registry is None:
        return zope.component.getGlobalSiteManager()
    if not IComponentRegistry.providedBy(registry):
        raise ConfigurationError(
            f"registry={registry!r}: expected a component registry such as "
            f"zope.component.persistentregistry.PersistentComponents")
    return registry


def _check_persistent_registry(registry, queues):
    # PersistentComponents is not itself persistent: its adapter and
    # utility registries are, and they are what holds the queues.
    if not isinstance(getattr(registry, "utilities", None), persistent.Persistent):
        raise ConfigurationError(
            f"registry {registry!r} is not persistent: the queues are objects "
            f"of one connection and can only be registered in a registry stored "
            f"in the database (zope.component.persistentregistry."
            f"PersistentComponents, a site's local site manager); for a global "
            f"registry, use zasync.integration.component.register_adapters() and IQueue(conn)")
    if not IQueues.providedBy(queues):
        raise ConfigurationError(
            f"{queues!r}: expected the IQueues container, from "
            f"zasync.get_queues(conn) or IQueues(conn)")


def register(registry, queues):
    """Register the `IQueues` container `queues` as the unnamed `IQueues`
    utility of the persistent `registry`, and each of its queues as the
    `IQueue` utility of the queue's name ('' is the default queue).

    Idempotent; a queue installed later is registered by calling it again.
    The registry and the queues may be in different databases of one
    multi-database.  Return the names of the queues registered.
    """
    registry = _registry(registry)
    _check_persistent_registry(registry, queues)
    if registry.queryUtility(IQueues) is not queues:
        registry.registerUtility(queues, IQueues)
    names = list(queues.keys())
    for name in names:
        queue = queues[name]
        if registry.queryUtility(IQueue, name=name) is not queue:
            registry.registerUtility(queue, IQueue, name=name)
    return names


def unregister(registry, queues):
    """Undo `register`: remove the container and its queues from the
    utilities of `registry`."""
    registry = _registry(registry)
    _check_persistent_registry(registry, queues)
    for name in queues.keys():
        queue = queues[name]
        if registry.queryUtility(IQueue, name=name) is queue:
            registry.unregisterUtility(queue, IQueue, name=name)
    if registry.queryUtility(IQueues) is queues:
        registry.unregisterUtility(queues, IQueues)
