"""The web view inside a Zope site, under Zope's own authentication.

``zasync``'s ``zope.zcml`` registers `JobsView` as the browser view
``@@zasync`` of the application root and of sites, protected by the permission ``zasync: View
jobs`` (granted to Manager by default): Zope authenticates the visitor and
refuses the view, its pages, its JSON API and the job arguments they show,
to whoever lacks it.  Actions (cancel, retry, dismiss, remove) need
``zasync: Manage jobs`` on the object the view is called on, and the CSRF
token of zasync's forms; no credential of zasync's own is involved.

The view hands the rest of its path (``@@zasync/jobs/ID``) to the WSGI
application of `zasync.web.make_app`, one per database, with a `ZopeGuard`
that asks Zope who may act.
"""

import io
import threading
import urllib.parse

from zasync.web.app import Application
from zasync.web.guard import BASIC, SESSION, Guard

VIEW_PERMISSION = "zasync: View jobs"
MANAGE_PERMISSION = "zasync: Manage jobs"

#: The key of the WSGI environ in which the view says how the visitor may
#: act: BASIC or SESSION (see `ZopeGuard`), or absent.  The view builds the
#: environ itself, so a client cannot set it.
MANAGE_KEY = "zasync.zope.manage"

_applications = {}
_lock = threading.Lock()


class ZopeGuard(Guard):
    """A `Guard` whose credential is Zope's: the permission ``zasync:
    Manage jobs``, checked by `JobsView` for each request.

    A visitor authenticated by the Authorization header counts as BASIC
    (so the JSON API refuses a browser's request from another origin), any
    other (a login cookie) as SESSION (so the JSON API asks for the CSRF
    token, as pages' forms always do)."""

    def __init__(self):
        super().__init__()

    @property
    def enabled(self):
        return True

    @property
    def kind(self):
        return "zope"

    def credential(self, request):
        found = request.environ.get(MANAGE_KEY)
        return found if found in (BASIC, SESSION) else None

    def login(self, form):
        return False     # Zope logs people in, not this view


def application_for(db):
    """The web application showing the queues of `db`, made once per
    database (its guard's secret signs the CSRF tokens of its forms)."""
    with _lock:
        found = _applications.get(id(db))
        if found is None or found.db is not db:
            found = Application(db)
            found.guard = ZopeGuard()
            _applications[id(db)] = found
        return found


def queues_database(conn):
    """The database of `conn`'s multi-database that holds zasync's queues:
    `conn`'s own if installed there, else the first other one that has
    them (or `conn`'s own, whose pages then say zasync is not installed)."""
    from zasync.queue.database import ROOT_KEY
    own = conn.db()
    if ROOT_KEY in conn.root():
        return own
    for name in sorted(getattr(own, "databases", {})):
        if name == own.database_name:
            continue
        if ROOT_KEY in conn.get_connection(name).root():
            return own.databases[name]
    return own


def _form_body(request):
    fields = []
    for name, value in request.form.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        fields.extend((name, str(each)) for each in values)
    return urllib.parse.urlencode(fields).encode("utf-8")


try:
    from Products.Five.browser import BrowserView
    from zope.interface import implementer
    from zope.publisher.interfaces import IPublishTraverse
except ImportError:     # without Zope there is no view to define
    BrowserView = None

if BrowserView is not None:

    @implementer(IPublishTraverse)
    class JobsView(BrowserView):
        """``@@zasync``: zasync's pages and JSON API at a path of the site."""

        def publishTraverse(self, request, name):
            self.__dict__.setdefault("subpath", []).append(name)
            return self

        def browserDefault(self, request):
            return self, ()

        def _script_name(self):
            base = urllib.parse.urlsplit(self.context.absolute_url()).path.rstrip("/")
            return f"{base}/@@{self.__name__}"

        def _may_manage(self):
            from AccessControl import getSecurityManager
            if not getSecurityManager().checkPermission(MANAGE_PERMISSION, self.context):
                return None
            authorization = self.request._auth or ""
            return BASIC if authorization.lower().startswith("basic ") else SESSION

        def _environ(self):
            request = self.request
            environ = dict(request.environ)
            environ.pop(MANAGE_KEY, None)
            environ["SCRIPT_NAME"] = self._script_name()
            environ["PATH_INFO"] = "/" + "/".join(self.__dict__.get("subpath", ()))
            body = b""
            if request.method == "POST":
                content_type = environ.get("CONTENT_TYPE", "")
                if content_type.startswith("application/x-www-form-urlencoded") \
                        or content_type.startswith("multipart/form-data"):
                    body = _form_body(request)
                    environ["CONTENT_TYPE"] = "application/x-www-form-urlencoded"
                else:
                    body = request.get("BODY") or b""
            environ["CONTENT_LENGTH"] = str(len(body))
            environ["wsgi.input"] = io.BytesIO(body)
            manage = self._may_manage()
            if manage is not None:
                environ[MANAGE_KEY] = manage
            return environ

        def __call__(self):
            app = application_for(queues_database(self.context._p_jar))
            answer = {}

            def start_response(status, headers, exc_info=None):
                answer["status"], answer["headers"] = status, headers
                return lambda data: None

            chunks = app(self._environ(), start_response)
            try:
                body = b"".join(chunks)
            finally:
                getattr(chunks, "close", lambda: None)()
            response = self.request.response
            response.setStatus(int(answer["status"].split(" ", 1)[0]))
            for name, value in answer["headers"]:
                if name.lower() == "set-cookie":
                    response.addHeader(name, value)
                elif name.lower() != "content-length":
                    response.setHeader(name, value)
            return body
