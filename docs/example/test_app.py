"""Tests of the example application: loaded by ZCML, started by the
database-opened event, jobs in the 'async' database working on documents
of the main one, in the site and as the user who added them."""

import pytest
import transaction
import zope.component.testing
import zope.event
import zope.security.management
from zope.component.hooks import resetHooks, setHooks, setSite
from zope.configuration import xmlconfig
from zope.processlifetime import DatabaseOpenedWithRoot

import zasync
from zasync.integration import subscriber
from zasync import testing
from zasync.job.context import Participation, Principal
from zasync.queue.database import ROOT_KEY

import example
from example import app

TIMEOUT = 30


@pytest.fixture
def configured():
    """The application's ZCML loaded into a clean global registry."""
    zope.component.testing.setUp()
    setHooks()
    xmlconfig.file("configure.zcml", package=example)
    yield
    subscriber.stop(timeout=TIMEOUT)
    setSite(None)
    resetHooks()
    zope.component.testing.tearDown()


@pytest.fixture
def db(tmp_path, configured):
    """The application's multi-database, opened as Zope opens it."""
    database = testing.open_multidb(tmp_path, names=("main", "async"))
    zope.event.notify(DatabaseOpenedWithRoot(database))
    yield database
    subscriber.stop(timeout=TIMEOUT)
    testing.close_multidb(database)


class Request:
    """A request of `user`: a connection, the site set, an interaction."""

    def __init__(self, db, user):
        self.tm = transaction.TransactionManager()
        self.conn = db.open(transaction_manager=self.tm)
        self.user = user

    def __enter__(self):
        self.tm.begin()
        self.site = self.conn.root()[app.SITE_NAME]
        setSite(self.site)
        zope.security.management.newInteraction(Participation(Principal(self.user)))
        return self

    def __exit__(self, exc_type, *rest):
        zope.security.management.endInteraction()
        setSite(None)
        if exc_type is None:
            self.tm.commit()
        else:
            self.tm.abort()
        self.conn.close()


def test_the_database_opened_event_starts_a_dispatcher_and_sets_up_the_site(db):
    dispatcher = subscriber.get_dispatcher(db, "async")
    assert dispatcher is not None and dispatcher.running
    assert [agent.size for agent in dispatcher.agents] == [2]
    with db.transaction() as conn:
        site = conn.root()[app.SITE_NAME]
        assert ROOT_KEY not in conn.root()
        assert ROOT_KEY in conn.get_connection("async").root()
        setSite(site)
        queue = zope.component.getUtility(zasync.interfaces.IQueue)
        setSite(None)
        assert queue._p_jar.db().database_name == "async"


def test_a_document_is_counted_by_a_job_in_the_site_as_its_author(db):
    with Request(db, "alice") as request:
        job = app.add_document(request.site, "hello", "hello zope world")
    done = zasync.wait_for(job, timeout=TIMEOUT)
    assert done.failure is None, done.failure.traceback
    assert done.result == 3
    assert done._p_jar.db().database_name == "async"
    with db.transaction() as conn:
        document = conn.root()[app.SITE_NAME]["hello"]
        assert document._p_jar.db().database_name == "main"
        assert (document.words, document.counted_by) == (3, "alice")


def test_opening_the_database_again_keeps_the_site_and_its_registrations(db):
    zope.event.notify(DatabaseOpenedWithRoot(db))
    assert len(subscriber.dispatchers()) == 1
    with db.transaction() as conn:
        registry = conn.root()[app.SITE_NAME].getSiteManager()
        assert len(list(registry.registeredUtilities())) == 3   # counter, IQueues, IQueue ''


def test_in_eager_mode_the_count_is_there_when_the_request_commits(configured, tmp_path):
    # The way an application's own unit tests may run its jobs: no worker
    # threads, the job done by the time the request's commit returns.
    database = testing.open_multidb(tmp_path)
    try:
        zasync.install(database.databases["async"])
        app.bootstrap(DatabaseOpenedWithRoot(database))
        with testing.eager():
            with Request(database, "bob") as request:
                app.add_document(request.site, "short", "two words")
        with database.transaction() as conn:
            document = conn.root()[app.SITE_NAME]["short"]
            assert (document.words, document.counted_by) == (2, "bob")
    finally:
        testing.close_multidb(database)
