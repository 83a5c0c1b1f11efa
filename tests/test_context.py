"""Job context: a job carries set-up/tear-down pairs (a Zope site, a
security principal) that the worker applies around its call, so code that
needs the application's context runs as the user who queued it."""

import threading

import pytest
import transaction
import zope.component
import zope.component.testing
import zope.security.management
from zope.component.hooks import getSite, resetHooks, setHooks, setSite
from zope.interface.verify import verifyObject

import zasync
from zasync.job import context
from zasync.interfaces import ConfigurationError, IJobContext, UnstorableError

import zope_jobs

TIMEOUT = 30


@pytest.fixture(autouse=True)
def placeless():
    zope.component.testing.setUp()
    setHooks()
    zope_jobs.context_log.clear()
    yield
    setSite(None)
    zope.security.management.endInteraction()
    resetHooks()
    zope.component.testing.tearDown()


@pytest.fixture
def site_oid(db):
    """A site with a Greeter in its local registry, and a document."""
    with db.transaction() as conn:
        site = conn.root()["site"] = zope_jobs.Site()
        site.getSiteManager().registerUtility(zope_jobs.Greeter("Hello"), zope_jobs.IGreeter)
        site["doc"] = document = zope_jobs.Document("text")
        document.site = site
    with db.transaction() as conn:
        return conn.root()["site"]._p_oid


class Request:
    """What a web request sets up: a connection, the site, an interaction
    for the user; the job is put with the contexts captured from it."""

    def __init__(self, db, site_oid, user):
        self.tm = transaction.TransactionManager()
        self.conn = db.open(transaction_manager=self.tm)
        self.site = self.conn.get(site_oid)
        self.user = user

    def __enter__(self):
        self.tm.begin()
        setSite(self.site)
        zope.security.management.newInteraction(
            context.Participation(context.Principal(self.user)))
        return self

    def __exit__(self, exc_type, *rest):
        zope.security.management.endInteraction()
        setSite(None)
        if exc_type is None:
            self.tm.commit()
        else:
            self.tm.abort()
        self.conn.close()


def test_contexts_provide_their_interface(db, site_oid):
    with db.transaction() as conn:
        site = conn.get(site_oid)
        assert verifyObject(IJobContext, context.SiteContext(site))
    assert verifyObject(IJobContext, context.PrincipalContext("alice"))


def test_a_job_runs_in_the_site_and_as_the_user_who_put_it(db, site_oid, dispatcher):
    with Request(db, site_oid, "alice") as request:
        document = request.site["doc"]
        queue = zasync.get_queue(request.conn)
        job = context.put(queue, zope_jobs.note_in_context, document)
        assert [type(c).__name__ for c in job.contexts] == ["SiteContext", "PrincipalContext"]
    done = zasync.wait_for(job, timeout=TIMEOUT)
    assert done.failure is None, done.failure.traceback
    assert done.result == "Hello, alice"
    with db.transaction() as conn:
        assert conn.get(site_oid)["doc"].log == [(["alice"], True)]


def test_without_its_context_the_same_job_fails(db, site_oid, dispatcher):
    with Request(db, site_oid, "alice") as request:
        job = zasync.get_queue(request.conn).put(
            zasync.Job(zope_jobs.greet_in_site, "alice"))
    done = zasync.wait_for(job, timeout=TIMEOUT)
    assert done.failure.check(zope.component.ComponentLookupError)


def test_the_worker_thread_is_left_as_it_was(db, site_oid):
    with zasync.testing.running_dispatcher(db, threads=1):
        with Request(db, site_oid, "bob") as request:
            queue = zasync.get_queue(request.conn)
            first = context.put(queue, zope_jobs.whoami)
        assert zasync.wait_for(first, timeout=TIMEOUT).result == ["bob"]
        with db.transaction() as conn:
            queue = zasync.get_queue(conn)
            who = queue.put(zasync.Job(zope_jobs.whoami))
            site = queue.put(zasync.Job(zope_jobs.site_now))
        assert zasync.wait_for(who, timeout=TIMEOUT).result is None
        assert zasync.wait_for(site, timeout=TIMEOUT).result is False


def test_a_callback_runs_in_its_parents_context(db, site_oid, dispatcher):
    with Request(db, site_oid, "carol") as request:
        job = context.put(zasync.get_queue(request.conn), zope_jobs.add, 1, 2)
        callback = job.add_callback(zope_jobs.whoami_after)
    zasync.wait_for(job, timeout=TIMEOUT)
    with db.transaction() as conn:
        assert conn.get(callback._p_oid).result == ["carol"]


def test_a_principal_lookup_gives_the_applications_principal(db, dispatcher):
    with db.transaction() as conn:
        job = zasync.Job(zope_jobs.member_title)
        context.attach(job, context.PrincipalContext("dave", lookup=zope_jobs.find_member))
        zasync.get_queue(conn).put(job)
    assert zasync.wait_for(job, timeout=TIMEOUT).result == "Dave"


def test_contexts_are_set_up_in_order_and_torn_down_in_reverse(db, dispatcher):
    with db.transaction() as conn:
        job = context.attach(zasync.Job(zope_jobs.add, 1, 1),
                             zope_jobs.Recording("a"), zope_jobs.Recording("b"))
        zasync.get_queue(conn).put(job)
    assert zasync.wait_for(job, timeout=TIMEOUT).result == 2
    assert zope_jobs.context_log == [
        ("set_up", "a"), ("set_up", "b"), ("tear_down", "b", "B"), ("tear_down", "a", "A")]


def test_a_failing_set_up_tears_down_the_others_and_fails_the_job(db, dispatcher):
    with db.transaction() as conn:
        job = context.attach(
            zasync.Job(zope_jobs.add, 1, 1), zope_jobs.Recording("a"),
            zope_jobs.Recording("b", fail_in="set_up"), zope_jobs.Recording("c"))
        zasync.get_queue(conn).put(job, retry_policy=zasync.NeverRetry())
    done = zasync.wait_for(job, timeout=TIMEOUT)
    assert "b cannot set up" in done.failure.message
    assert zope_jobs.context_log == [("set_up", "a"), ("set_up", "b"), ("tear_down", "a", "A")]


def test_a_failing_tear_down_fails_the_attempt_after_the_others_ran(db, dispatcher):
    with db.transaction() as conn:
        document = conn.root()["doc"] = zope_jobs.Document()
        job = context.attach(
            zasync.Job(zope_jobs.note, document, "written"),
            zope_jobs.Recording("a"), zope_jobs.Recording("b", fail_in="tear_down"))
        zasync.get_queue(conn).put(job, retry_policy=zasync.NeverRetry())
    done = zasync.wait_for(job, timeout=TIMEOUT)
    assert "b cannot tear down" in done.failure.message
    assert zope_jobs.context_log[-2:] == [("tear_down", "b", "B"), ("tear_down", "a", "A")]
    with db.transaction() as conn:
        assert conn.root()["doc"].log == []     # its transaction did not commit


def test_applied_restores_what_the_thread_had(db, site_oid):
    job = zasync.Job(zope_jobs.add, 1, 1)
    with db.transaction() as conn:
        mine, theirs = conn.get(site_oid), zope_jobs.Site("other")
        conn.root()["other"] = theirs
        setSite(mine)
        zope.security.management.newInteraction(
            context.Participation(context.Principal("me")))
        before = zope.security.management.getInteraction()
        context.attach(job, context.SiteContext(theirs), context.PrincipalContext("them"))
        with context.applied(job):
            assert getSite() is theirs
            assert zope_jobs.whoami() == ["them"]
        assert getSite() is mine
        assert zope.security.management.getInteraction() is before


def test_capture_finds_nothing_outside_a_request():
    assert context.capture() == ()


def test_bad_contexts_are_refused_where_given(db):
    job = zasync.Job(zope_jobs.add, 1, 1)
    with pytest.raises(ConfigurationError, match="not a job context"):
        context.attach(job, object())
    with pytest.raises(UnstorableError, match="job context"):
        unstorable = zope_jobs.Recording("lock")
        unstorable.lock = threading.Lock()
        context.attach(job, unstorable)
    with pytest.raises(ConfigurationError, match="persistent site"):
        context.SiteContext(object())
    with pytest.raises(ConfigurationError, match="principal_id"):
        context.PrincipalContext("")
    with pytest.raises(UnstorableError, match="lambda"):
        context.PrincipalContext("eve", lookup=lambda id: id)
    with pytest.raises(ConfigurationError, match="arguments to Job"):
        context.put(None, job, 1)


def test_a_context_may_change_the_arguments_the_callable_receives(db, dispatcher):
    with db.transaction() as conn:
        job = context.attach(zasync.Job(zope_jobs.add, 20, 1), zope_jobs.Doubling())
        callback = job.add_callback(zasync.Job(zope_jobs.add, 100))
        zasync.get_queue(conn).put(job)
    done = zasync.wait_for(job, timeout=TIMEOUT)
    assert done.result == 42
    assert done.args == (20, 1)     # what is stored stays as it was
    with db.transaction() as conn:
        # the callback runs in its parent's context too: add(42, 200)
        assert conn.get(callback._p_oid).result == 242
    # outside its contexts the callable gets its arguments as stored
    assert context.prepared_call(zope_jobs.add, (1, 2), {}) == (zope_jobs.add, (1, 2), {})


def test_capture_on_put_gives_every_put_its_contexts(db, dispatcher):
    context.capture_on_put(zope_jobs.capture_recording)
    try:
        with db.transaction() as conn:
            queue = zasync.get_queue(conn)
            captured = queue.put(zope_jobs.add, 1, 2)
            ignored = queue.put(zope_jobs.whoami)
            given = queue.put(context.attach(zasync.Job(zope_jobs.add, 2, 2),
                                             zope_jobs.Recording("given")))
            assert [c.name for c in captured.contexts] == ["captured add"]
            assert context.contexts_of(ignored) == () and [c.name for c in given.contexts] == ["given"]
        for job in (captured, ignored, given):
            assert zasync.wait_for(job, timeout=TIMEOUT).failure is None
        assert ("set_up", "captured add") in zope_jobs.context_log
    finally:
        context.stop_capturing_on_put(zope_jobs.capture_recording)
    with db.transaction() as conn:
        assert context.contexts_of(zasync.get_queue(conn).put(zope_jobs.add, 1, 2)) == ()


def test_the_capture_directive_captures_until_the_configuration_is_cleaned_up(db):
    from zope.configuration import xmlconfig
    xmlconfig.string("""
        <configure xmlns:zasync="http://namespaces.zope.org/zasync">
          <include package="zasync" file="meta.zcml" />
          <zasync:capture handler="zope_jobs.capture_recording" />
        </configure>""")
    with db.transaction() as conn:
        job = zasync.get_queue(conn).put(zope_jobs.add, 1, 2)
        assert [c.name for c in job.contexts] == ["captured add"]
        transaction.abort()
    zope.component.testing.tearDown()     # as a test suite's clean-up does
    zope.component.testing.setUp()
    with db.transaction() as conn:
        assert context.contexts_of(zasync.get_queue(conn).put(zope_jobs.add, 1, 2)) == ()


def test_capture_on_put_refuses_what_it_cannot_call():
    with pytest.raises(ConfigurationError, match="capture=42: expected a callable"):
        context.capture_on_put(42)
