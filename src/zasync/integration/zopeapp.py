"""Jobs put from a Zope request run in that request's context: its site,
its user, its URLs, and their arguments in their acquisition chains.

A worker thread loads a job's persistent arguments bare: no acquisition
parent, so ``absolute_url()`` is ``''`` and ``getPhysicalRoot()`` fails,
no security manager (the job runs as Anonymous User), no site, no request.
`ZopeContext`, captured in the request that puts the job, records what is
needed to rebuild them (paths and ids, never the objects' wrappers) and,
inside the job's transaction, before the callable runs:

- wraps the application root of the job's own connection in a request
  (``Testing.makerequest``) whose server URL and virtual hosting are those
  of the request that put the job, and makes it the global request
  (``zope.globalrequest``);
- sets the site (``zope.component.hooks.setSite``) found at its path;
- logs in the user, found by id in the user folder found at its path,
  wrapped in that folder (``AccessControl.SecurityManagement``);
- hands the callable its arguments (and a method its object) as found by
  traversing their paths from the root: wrapped in their acquisition
  chains.

After the call all of it is undone: the thread's previous site, security
manager and global request come back.

Nothing here is imported unless an application asks for it, by putting
with `put` or by including ``zasync``'s ``zope.zcml`` (which makes every
put from a Zope request capture its context); it needs Zope (``pip
install 'zasync[zope]'``).
"""

import logging

import persistent
from zope.interface import implementer

from zasync.job import context
from zasync.interfaces import ConfigurationError, IJob, IJobContext, ZasyncError

logger = logging.getLogger(__name__)

#: The key of Zope's application object in the root of its database.
APPLICATION_KEY = "Application"


class ContextLostError(ZasyncError):
    """Raised when a job's Zope context cannot be rebuilt: the database,
    the site or the user it was put by is gone."""


def _zope():
    try:
        import Acquisition  # noqa: F401
        import AccessControl  # noqa: F401
        import zope.globalrequest  # noqa: F401
    except ImportError:
        raise ConfigurationError(
            "running a job in its Zope context needs Zope: "
            "pip install 'zasync[zope]'") from None


def _path_of(obj):
    """The physical path of a stored object in an acquisition chain, or
    None (a bare object does not know where it is)."""
    from Acquisition import aq_base, aq_parent
    base = aq_base(obj)
    if not isinstance(base, persistent.Persistent):
        return None
    get_path = getattr(obj, "getPhysicalPath", None)
    if get_path is None:
        return None
    if aq_parent(obj) is None and getattr(base, "isTopLevelPrincipiaApplicationObject",
                                          False) is False:
        return None
    try:
        return tuple(get_path())
    except Exception:   # an object half in its container
        return None


def _candidates(job):
    """The objects of `job` that may be wrapped: its arguments and its
    callable (or a method's object)."""
    callable_ = job.callable
    found = [getattr(callable_, "__self__", callable_)]
    found.extend(job.args)
    found.extend(job.kwargs.values())
    return found


def capture(job=None):
    """A `ZopeContext` for the current Zope request (a 1-tuple), or None
    outside a request.  `job`, when given, is the job being put: the paths
    of its arguments are recorded so that they run wrapped."""
    _zope()
    from AccessControl.SecurityManagement import getSecurityManager
    from Acquisition import aq_base, aq_inner, aq_parent
    from zope.component.hooks import getSite
    from zope.globalrequest import getRequest
    request = getRequest()
    if request is None or not hasattr(request, "physicalPathToURL"):
        return None
    parents = request.get("PARENTS") or ()
    app = parents[-1] if parents else None
    jar = getattr(aq_base(app), "_p_jar", None) if app is not None else None
    if jar is None:
        return None
    site = getSite()
    site_path = _path_of(site) if site is not None else None
    user = getSecurityManager().getUser()
    user_id = user_folder_path = None
    if user is not None and user.getUserName() != "Anonymous User":
        folder = aq_parent(aq_inner(user))
        user_folder_path = _path_of(folder) if folder is not None else None
        if user_folder_path is not None:
            user_id = user.getId()
    paths = []
    if job is not None:
        for obj in _candidates(job):
            path = _path_of(obj)
            if path is not None and path not in paths:
                paths.append(path)
    return (ZopeContext(
        database_name=jar.db().database_name,
        site_path=site_path,
        user_id=user_id,
        user_folder_path=user_folder_path,
        server_url=request.get("SERVER_URL"),
        script=tuple(getattr(request, "_script", ())),
        virtual_root=request.other.get("VirtualRootPhysicalPath"),
        paths=tuple(paths)),)


def put(queue, job, *args, **put_kwargs):
    """Put `job` (or a callable with `args`) in `queue` to run in the
    context of the current Zope request; return the job.  The keyword
    arguments go to `queue.put`.  Outside a request the job has no
    context."""
    from zasync.job.job import Job
    if not IJob.providedBy(job):
        job = Job(job, *args)
    elif args:
        raise ConfigurationError(
            f"put() got a job and positional arguments {args!r}: give "
            f"arguments to Job() instead")
    context.attach(job, *(capture(job) or ()))
    return queue.put(job, **put_kwargs)


def _check_path(value, name):
    if value is None:
        return None
    if isinstance(value, str) or not all(isinstance(part, str) for part in value):
        raise ConfigurationError(
            f"{name}={value!r}: expected a physical path, a tuple of str "
            f"such as ('', 'site')")
    return tuple(value)


@implementer(IJobContext)
class ZopeContext:
    """The site, user and request of a Zope request, rebuilt around a job.
    See the module's docstring; `capture` makes one."""

    def __init__(self, database_name, site_path=None, user_id=None,
                 user_folder_path=None, server_url=None, script=(),
                 virtual_root=None, paths=()):
        if not isinstance(database_name, str) or not database_name:
            raise ConfigurationError(
                f"database_name={database_name!r}: expected the name of the "
                f"database that holds Zope's application root")
        if (user_id is None) != (user_folder_path is None):
            raise ConfigurationError(
                f"user_id={user_id!r}, user_folder_path={user_folder_path!r}: "
                f"give both (a user is found in its user folder) or neither")
        self.database_name = database_name
        self.site_path = _check_path(site_path, "site_path")
        self.user_id = user_id
        self.user_folder_path = _check_path(user_folder_path, "user_folder_path")
        self.server_url = server_url
        self.script = tuple(script)
        self.virtual_root = _check_path(virtual_root, "virtual_root")
        self.paths = tuple(_check_path(path, "paths") for path in paths)

    def __repr__(self):
        user = self.user_id or "Anonymous User"
        site = "/".join(self.site_path) if self.site_path else None
        return f"<zasync.integration.zopeapp.ZopeContext user {user!r} site {site!r}>"

    # -- in the worker -------------------------------------------------------

    def _root(self, job):
        jar = job._p_jar
        if jar is None:
            raise ContextLostError(f"job {job.id} is not loaded from a database")
        if jar.db().database_name != self.database_name:
            try:
                jar = jar.get_connection(self.database_name)
            except KeyError:
                raise ContextLostError(
                    f"job {job.id} was put from Zope's database "
                    f"{self.database_name!r}, which the worker's multi-database "
                    f"does not have") from None
        root = jar.root().get(APPLICATION_KEY)
        if root is None:
            raise ContextLostError(
                f"job {job.id}: no Zope application in database {self.database_name!r}")
        return root

    def _request(self, root):
        from Testing.makerequest import makerequest
        environ = {"SERVER_NAME": "localhost", "SERVER_PORT": "80",
                   "REQUEST_METHOD": "GET"}
        app = makerequest(root, environ=environ)
        request = app.REQUEST
        if self.server_url:
            request.other["SERVER_URL"] = self.server_url
        request._script[:] = list(self.script)
        if self.virtual_root is not None:
            request.other["VirtualRootPhysicalPath"] = self.virtual_root
        del request._steps[:]
        request._resetURLS()
        request["ACTUAL_URL"] = request["URL"]
        request["PARENTS"] = [app]
        return app, request

    def _traverse(self, app, path, what, job):
        try:
            return app.unrestrictedTraverse(path)
        except Exception as error:
            raise ContextLostError(
                f"job {job.id}: the {what} {'/'.join(path) or '/'} it was put "
                f"in is gone ({type(error).__name__}: {error})") from None

    def set_up(self, job):
        """See `IJobContext`."""
        _zope()
        from AccessControl.SecurityManagement import (
            getSecurityManager, newSecurityManager)
        from AccessControl.users import nobody
        from zope.component.hooks import getSite, setHooks, setSite
        from zope.globalrequest import getRequest, setRequest
        app, request = self._request(self._root(job))
        user = nobody
        if self.user_id is not None:
            folder = self._traverse(app, self.user_folder_path, "user folder", job)
            found = folder.getUserById(self.user_id)
            if found is None:
                raise ContextLostError(
                    f"job {job.id}: user {self.user_id!r} who put it is no longer "
                    f"in {'/'.join(self.user_folder_path) or '/'}")
            user = found.__of__(folder)
        site = None
        if self.site_path is not None:
            site = self._traverse(app, self.site_path, "site", job)
        state = {"site": getSite(), "manager": getSecurityManager(),
                 "request": getRequest(), "own_request": request, "app": app}
        setHooks()
        setRequest(request)
        newSecurityManager(request, user)
        if site is not None:
            setSite(site)
            request["PARENTS"] = [site, app]
        return state

    def tear_down(self, job, state):
        """See `IJobContext`."""
        from AccessControl.SecurityManagement import setSecurityManager
        from zope.component.hooks import setSite
        from zope.globalrequest import clearRequest, setRequest
        setSite(state["site"])
        setSecurityManager(state["manager"])
        if state["request"] is None:
            clearRequest()
        else:
            setRequest(state["request"])
        state["own_request"].close()

    def prepare_call(self, job, state, callable_, args, kwargs):
        """The callable and arguments wrapped in their acquisition chains
        (see `zasync.job.context.prepared_call`)."""
        if not self.paths:
            return callable_, args, kwargs
        from Acquisition import aq_base
        wrapped = {}
        for path in self.paths:
            try:
                found = state["app"].unrestrictedTraverse(path)
            except Exception as error:
                logger.warning("job %s: %s is gone (%s); its object runs without "
                               "its acquisition chain", job.id, "/".join(path), error)
                continue
            wrapped[id(aq_base(found))] = found

        # By the bare object: an in-process worker may be given the pooled
        # connection of the request that put the job, whose cache still
        # holds the job's call record as the request made it, arguments
        # wrapped in that (closed) request's chain.
        def wrap(value):
            if not isinstance(value, persistent.Persistent):
                return value
            bare = aq_base(value)
            return wrapped.get(id(bare), bare)

        owner = getattr(callable_, "__self__", None)
        if owner is not None and id(aq_base(owner)) in wrapped:
            callable_ = getattr(wrapped[id(aq_base(owner))], callable_.__name__)
        else:
            callable_ = wrap(callable_)
        return (callable_, tuple(wrap(arg) for arg in args),
                {name: wrap(value) for name, value in kwargs.items()})
