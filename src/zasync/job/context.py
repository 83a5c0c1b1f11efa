"""The context a job runs in: a Zope site, a security principal, or
anything else an `IJobContext` sets up and tears down around its call.

A request runs with a site set (``zope.component.hooks.setSite``) and an
interaction for the user who made it; a worker thread has neither.  A job
carries `IJobContext` objects in its ``contexts`` attribute; the worker
sets each up, in order, inside the job's transaction just before the
callable runs, and tears them down in reverse order after it, whatever its
outcome.  A callback without contexts of its own runs in its parent's.

The contexts are stored with the job, so they must pickle: plain values and
references to persistent objects.  `SiteContext` keeps a reference to the
site, which the worker loads through the job's own connection; the
`PrincipalContext` keeps the principal's id, not the principal.

A context may also change what the callable receives: one with a
``prepare_call(job, state, callable, args, kwargs)`` method returns the
callable and arguments to call instead (`zasync.integration.zopeapp.ZopeContext` wraps
them in their acquisition chains); the job's stored arguments are not
changed.

`capture()` may be extended: `capture_on_put(capture)` (or the
``<zasync:capture>`` ZCML directive) makes every put that is not given
contexts ask `capture(job)` for them; `zasync.integration.zopeapp.capture` finds those
of a Zope request.  Without it, a put looks for nothing.

Whoever can write a job into the database can name any principal: the
database is trusted, as it is for everything else stored in it.
"""

import contextlib
import functools
import logging

import persistent
from zope.interface import implementer

from zasync.job import local, storable
from zasync.job.job import Job
from zasync.job.local import prepared_call  # noqa: F401 (still importable from here)
from zasync.interfaces import ConfigurationError, IJob, IJobContext

logger = logging.getLogger(__name__)

#: The functions every put asks for the contexts of a job given none
#: (see `capture_on_put`); empty unless an application configures one.
_put_captures = []


def contexts_of(job):
    """The contexts `job` runs in: its own, or else its nearest parent's
    (a callback runs where the job it follows ran)."""
    while job is not None:
        contexts = getattr(job, "contexts", ())
        if contexts:
            return tuple(contexts)
        job = getattr(job, "parent", None)
    return ()


def _check_contexts(contexts):
    contexts = tuple(contexts)
    for context in contexts:
        if not IJobContext.providedBy(context):
            raise ConfigurationError(
                f"{context!r} is not a job context: expected an object providing "
                f"zasync.interfaces.IJobContext (set_up and tear_down)")
        storable.check_value(context, "the job context")
    return contexts


def attach(job, *contexts):
    """Make `job` run in `contexts` (replacing any it had); return the job.

    Attach them before the transaction that puts the job commits: a worker
    reads them when it starts the job.
    """
    job.contexts = _check_contexts(contexts)
    return job


def put(queue, job, *args, contexts=None, **kwargs):
    """Put `job` (or a callable with `args` and `kwargs`) in `queue` to run
    in `contexts`: by default those of the caller, as `capture()` finds
    them.  The keyword arguments are split as `IQueue.put` splits them:
    its options go to `queue.put`, the others to the callable.  Return the
    job."""
    from zasync.job.options import split_put_arguments
    options, kwargs = split_put_arguments(job, args, kwargs)
    if not IJob.providedBy(job):
        job = Job(job, *args, **kwargs)
    attach(job, *(capture() if contexts is None else contexts))
    return queue.put(job, **options)


def capture_on_put(capture):
    """Make every `IQueue.put` of a job without contexts attach those that
    `capture(job)` returns (a sequence of `IJobContext`, or None for none).
    ``zasync.integration.zopeapp.capture`` gives a Zope request's.  Return `capture`."""
    if not callable(capture):
        raise ConfigurationError(
            f"capture={capture!r}: expected a callable taking the job being "
            f"put and returning its contexts (or None)")
    if capture not in _put_captures:
        _put_captures.append(capture)
    return capture


def stop_capturing_on_put(capture=None):
    """Undo `capture_on_put` for `capture` (for all when None)."""
    if capture is None:
        del _put_captures[:]
    elif capture in _put_captures:
        _put_captures.remove(capture)


def captured_on_put(job):
    """Attach to `job` the contexts that the functions of `capture_on_put`
    find, if it has none; called by `IQueue.put`."""
    if not _put_captures or getattr(job, "contexts", ()):
        return
    found = []
    for capture in _put_captures:
        found.extend(capture(job) or ())
    if found:
        attach(job, *found)


def capture():
    """The contexts of the calling thread: its site, when one is set and
    stored in the database, and the principals of its security interaction,
    when zope.security is installed and one is active."""
    found = []
    from zope.component.hooks import getSite
    site = getSite()
    if isinstance(site, persistent.Persistent) and site._p_jar is not None:
        found.append(SiteContext(site))
    for principal_id in _interaction_principal_ids():
        found.append(PrincipalContext(principal_id))
    return tuple(found)


def _interaction_principal_ids():
    try:
        from zope.security.management import queryInteraction
    except ImportError:
        return ()
    interaction = queryInteraction()
    if interaction is None:
        return ()
    return tuple(participation.principal.id
                 for participation in getattr(interaction, "participations", ())
                 if getattr(participation, "principal", None) is not None)


@contextlib.contextmanager
def applied(job):
    """Set up the job's contexts for the time of the block, then tear them
    down in reverse order.

    A set-up that raises tears down those set up before it and fails the
    attempt.  A tear-down that raises after the block succeeded fails the
    attempt too (after the others ran): its transaction, which may hold
    what the context left behind, must not commit.  After the block raised,
    tear-down errors are logged and the block's exception goes on.
    """
    contexts = contexts_of(job)
    if not contexts:
        yield
        return
    done = []
    preparers = local.call_preparers()
    depth = len(preparers)
    try:
        for context in contexts:
            state = context.set_up(job)
            done.append((context, state))
            prepare = getattr(context, "prepare_call", None)
            if prepare is not None:
                preparers.append(functools.partial(prepare, job, state))
        yield
    except BaseException:
        del preparers[depth:]
        _tear_down(job, done, raising=False)
        raise
    del preparers[depth:]
    _tear_down(job, done, raising=True)


def _tear_down(job, done, raising):
    first = None
    for context, state in reversed(done):
        try:
            context.tear_down(job, state)
        except Exception as error:
            logger.exception("job %s: tearing down %r failed",
                             getattr(job, "id", "?"), context)
            if first is None:
                first = error
    if raising and first is not None:
        raise first


@implementer(IJobContext)
class SiteContext:
    """Runs the job with `site` as the current Zope site
    (``zope.component.hooks.setSite``), so ``getUtility`` and adapter
    lookups see the site's local registry.  The site must be stored in the
    database; the previous site of the worker's thread is restored after."""

    def __init__(self, site):
        if not isinstance(site, persistent.Persistent):
            raise ConfigurationError(
                f"site {site!r}: expected a persistent site stored in the "
                f"database (its reference is stored with the job)")
        if not callable(getattr(site, "getSiteManager", None)):
            raise ConfigurationError(
                f"site {site!r}: expected a site, with getSiteManager()")
        self.site = site

    def set_up(self, job):
        """See `IJobContext`."""
        from zope.component.hooks import getSite, setHooks, setSite
        setHooks()   # idempotent: make lookups follow the current site
        previous = getSite()
        setSite(self.site)
        return previous

    def tear_down(self, job, state):
        """See `IJobContext`."""
        from zope.component.hooks import setSite
        setSite(state)

    def __repr__(self):
        return f"<zasync.job.context.SiteContext {self.site!r}>"


class Principal:
    """The principal a `PrincipalContext` gives when no lookup finds one:
    its id, and the id as its title."""

    def __init__(self, id, title=None, description=""):
        self.id = id
        self.title = id if title is None else title
        self.description = description

    def __repr__(self):
        return f"<zasync.job.context.Principal {self.id!r}>"


class Participation:
    """A zope.security participation of one principal in an interaction."""

    interaction = None

    def __init__(self, principal):
        self.principal = principal


@implementer(IJobContext)
class PrincipalContext:
    """Runs the job in a zope.security interaction of the principal
    `principal_id` (the user who put it), so permission checks and code
    that asks who the user is behave as in the request.

    `lookup`, a module-level function (or a persistent callable), turns the
    id into the application's principal object at run time, inside the
    job's site when a `SiteContext` comes first; without it, the
    principal is a plain `Principal` with that id.  An interaction the
    thread had before is restored after the job.  Needs zope.security.
    """

    def __init__(self, principal_id, lookup=None):
        if not isinstance(principal_id, str) or not principal_id:
            raise ConfigurationError(
                f"principal_id={principal_id!r}: expected a non-empty str")
        if lookup is not None:
            storable.check_callable(lookup)
        self.principal_id = principal_id
        self.lookup = lookup

    def principal(self):
        """The principal the job runs as."""
        if self.lookup is None:
            return Principal(self.principal_id)
        return self.lookup(self.principal_id)

    def set_up(self, job):
        """See `IJobContext`."""
        management = _security_management()
        principal = self.principal()
        previous = management.queryInteraction()
        if previous is not None:
            management.endInteraction()
        try:
            management.newInteraction(Participation(principal))
        except BaseException:
            _restore_interaction(management, previous)
            raise
        return previous

    def tear_down(self, job, state):
        """See `IJobContext`."""
        management = _security_management()
        management.endInteraction()
        _restore_interaction(management, state)

    def __repr__(self):
        return f"<zasync.job.context.PrincipalContext {self.principal_id!r}>"


def _security_management():
    try:
        import zope.security.management as management
    except ImportError:
        raise ConfigurationError(
            "a PrincipalContext needs zope.security: pip install 'zasync[zope]'"
        ) from None
    return management


def _restore_interaction(management, previous):
    # zope.security's restoreInteraction() gives back the interaction that
    # the last endInteraction() ended, which is the job's own by now; the
    # thread's interaction is set back directly instead.
    if previous is not None:
        management.thread_local.interaction = previous


# -- the <zasync:capture> ZCML directive -------------------------------------

def capture_directive(_context, handler):
    """The handler of ``<zasync:capture handler="..." />``: every put of a
    job without contexts asks `handler(job)` for them (`capture_on_put`)."""
    _context.action(discriminator=("zasync:capture", handler),
                    callable=capture_on_put, args=(handler,))


def _capture_directive_schema():
    import zope.configuration.fields
    from zope.interface import Interface

    class ICaptureDirective(Interface):
        """Capture the contexts of every job put without contexts."""

        handler = zope.configuration.fields.GlobalObject(
            title="Capture",
            description="A function of the job being put that returns its "
                        "contexts, or None: zasync.integration.zopeapp.capture for a "
                        "Zope request's site, user and URL.",
            required=True)

    return ICaptureDirective


ICaptureDirective = _capture_directive_schema()

try:
    from zope.testing.cleanup import addCleanUp
except ImportError:     # zope.testing is for test suites only
    pass
else:
    addCleanUp(stop_capturing_on_put)
