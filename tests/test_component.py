"""zasync in a component registry: the queues as utilities of a persistent
registry (a site's local site manager), and the adapters from a connection
or a persistent object."""

import pytest
import transaction
import zope.component
import zope.component.testing
from zope.component.hooks import resetHooks, setHooks, setSite
from zope.component.persistentregistry import PersistentComponents
from zope.interface.registry import Components

import zasync
from zasync.integration import component
from zasync import testing
from zasync.interfaces import (
    ConfigurationError, IQueue, IQueues, NotInstalledError)

import zope_jobs

TIMEOUT = 30


@pytest.fixture(autouse=True)
def placeless():
    """A clean global registry, and lookups that follow the current site."""
    zope.component.testing.setUp()
    setHooks()
    yield
    setSite(None)
    resetHooks()
    zope.component.testing.tearDown()


@pytest.fixture
def adapters(placeless):
    component.register_adapters()
    yield
    component.unregister_adapters()


def _with_site(db):
    """Store a site in the root, register the queues in its local registry,
    commit; return the site's oid."""
    with db.transaction() as conn:
        site = conn.root()["site"] = zope_jobs.Site()
        names = component.register(site.getSiteManager(), zasync.get_queues(conn))
        assert names == ["", "mail"]
    with db.transaction() as conn:
        return conn.root()["site"]._p_oid


def test_get_utility_in_a_persistent_registry_gives_the_default_queue(db):
    site_oid = _with_site(db)
    # A new connection: the registration was stored, not kept in memory.
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    try:
        site = conn.get(site_oid)
        assert isinstance(site.getSiteManager(), PersistentComponents)
        setSite(site)
        queue = zope.component.getUtility(IQueue)
        assert queue is zasync.get_queue(conn)
        assert queue.name == ""
        assert zope.component.getUtility(IQueue, name="mail") is zasync.get_queue(conn, "mail")
        assert zope.component.getUtility(IQueues) is zasync.get_queues(conn)
        assert sorted(name for name, _ in zope.component.getUtilitiesFor(IQueue)) == ["", "mail"]
        setSite(None)
        # outside the site, the global registry has no queue
        assert zope.component.queryUtility(IQueue) is None
    finally:
        tm.abort()
        conn.close()


def test_a_job_put_through_the_utility_runs(db, dispatcher):
    site_oid = _with_site(db)
    with db.transaction() as conn:
        setSite(conn.get(site_oid))
        job = zope.component.getUtility(IQueue).put(zope_jobs.add, 2, 3)
        setSite(None)
    assert zasync.wait_for(job, timeout=TIMEOUT).result == 5


def test_register_is_idempotent_and_registers_queues_installed_later(db):
    with db.transaction() as conn:
        registry = conn.root()["registry"] = PersistentComponents("r")
        queues = zasync.get_queues(conn)
        component.register(registry, queues)
        component.register(registry, queues)
        assert len(list(registry.registeredUtilities())) == 3
    zasync.install(db, queues=("reports",))
    with db.transaction() as conn:
        registry = conn.root()["registry"]
        assert component.register(registry, zasync.get_queues(conn)) == ["", "mail", "reports"]
        assert registry.getUtility(IQueue, "reports").name == "reports"
        component.unregister(registry, zasync.get_queues(conn))
        assert list(registry.registeredUtilities()) == []


def test_a_global_registry_cannot_hold_a_connections_queues(db):
    with db.transaction() as conn:
        with pytest.raises(ConfigurationError, match="not persistent"):
            component.register(Components("global"), zasync.get_queues(conn))
        with pytest.raises(ConfigurationError, match="IQueues container"):
            component.register(PersistentComponents("r"), zasync.get_queue(conn))
        with pytest.raises(ConfigurationError, match="component registry"):
            component.register(object(), zasync.get_queues(conn))


def test_adapters_from_a_connection_and_a_persistent_object(db, adapters):
    with db.transaction() as conn:
        document = conn.root()["doc"] = zope_jobs.Document("hello")
    with db.transaction() as conn:
        document = conn.root()["doc"]
        assert IQueues(conn) is zasync.get_queues(conn)
        assert IQueue(conn) is zasync.get_queue(conn)
        assert IQueue(document) is zasync.get_queue(conn)
        assert IQueues(document) is zasync.get_queues(conn)
        # a new object has no connection, so no queue
        with pytest.raises(TypeError, match="Could not adapt"):
            IQueue(zope_jobs.Document())


def test_adapters_say_when_zasync_is_not_installed(tmp_path, adapters):
    db = zasync.open_db(str(tmp_path / "Bare.fs"))
    try:
        with db.transaction() as conn:
            with pytest.raises(NotInstalledError, match="zasync.install"):
                IQueue(conn)
    finally:
        db.close()


def test_in_a_multi_database_the_queues_are_found_in_the_async_database(tmp_path, adapters):
    db = testing.open_multidb(tmp_path)
    try:
        zasync.install(db.databases["async"])
        with db.transaction() as conn:
            conn.root()["doc"] = zope_jobs.Document()
            site = conn.root()["site"] = zope_jobs.Site()
            # the registry in 'main' holds the queues of 'async'
            component.register(site.getSiteManager(), IQueues(conn))
        with db.transaction() as conn:
            async_conn = conn.get_connection("async")
            assert IQueue(conn) is zasync.get_queue(async_conn)
            assert IQueue(conn.root()["doc"]) is zasync.get_queue(async_conn)
            setSite(conn.root()["site"])
            queue = zope.component.getUtility(IQueue)
            setSite(None)
            assert queue is zasync.get_queue(async_conn)
            assert queue._p_jar.db().database_name == "async"
    finally:
        testing.close_multidb(db)
