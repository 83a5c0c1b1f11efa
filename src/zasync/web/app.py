"""The WSGI application: routes, a fresh read-only transaction for each
request (aborted at its end), security headers, and errors shown without
a traceback.

WebOb parses requests and builds responses; Chameleon renders the pages
(its ``${...}`` and ``tal:content`` escape what they insert, and no
template inserts job data with ``structure``); `webob.static` serves the
CSS and JavaScript.
"""

import hashlib
import itertools
import json
import logging
import os
import re
import urllib.parse

import transaction
from chameleon import PageTemplateLoader
from webob import Request, Response
from webob.static import DirectoryApp

from zasync.job import clock
from zasync.queue.database import close_connection, get_queues, open_connection
from zasync.interfaces import ConfigurationError, NotInstalledError, ZasyncError
from zasync.web.guard import CSRF_COOKIE, Guard, client_of
from zasync.web.present import (
    CONFIRM, LABELS, NOTICES, JobView, ago, clip, fmt_seconds, fmt_time, time_tag)
from zasync.web.survey import failure_counts, held_jobs, newest_failures, running_count

logger = logging.getLogger(__name__)

HERE = os.path.dirname(os.path.abspath(__file__))
TEMPLATES = os.path.join(HERE, "templates")
STATIC = os.path.join(HERE, "static")

#: One loader for every application in the process: Chameleon compiles
#: each template once, on first use, and keeps it.
LOADER = PageTemplateLoader(TEMPLATES, auto_reload=False)

#: The start of the SystemError that CPython 3.11 before 3.11.8 raises,
#: wrongly, when two threads build an AST at once (see `cooked`).
AST_RACE = "AST constructor recursion depth mismatch"
#: How many times `cooked` compiles a template that meets it.
COOK_ATTEMPTS = 3

#: What a job id may look like; anything else is a 404 before any lookup.
JOB_ID = re.compile(r"[0-9A-Za-z][0-9A-Za-z_.-]{0,99}")

#: The text of the page's <time class="live-time"> elements (see
#: `present.time_tag`), which the ETag leaves out: the script keeps it
#: current, so a page whose only change is "5 s ago" is not sent again.
LIVE_TIME = re.compile(r'(<time class="live-time"[^>]*>)[^<]*(</time>)')
#: The database's transaction id in the page's <body>, which the ETag
#: leaves out too: a commit (a worker's heartbeat) that changed nothing
#: shown must not make the page count as changed.
SERIAL = re.compile(r' data-serial="[0-9a-f]*"')

#: Failed jobs listed by name in the banner.
BANNER_FAILED = 5

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    # progress bars set their width in a style attribute: allowed for
    # attributes only, never for <style> elements or scripts
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; "
        "style-src-attr 'unsafe-inline'; img-src 'self' data:; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"),
}


class NotFoundError(ZasyncError):
    """Raised when a request names a job or page that does not exist."""


class Context:
    """What a view needs for one request: the request, a connection whose
    transaction began with the request, and helpers to answer."""

    def __init__(self, app, request, conn, serial):
        self.app = app
        self.guard = app.guard
        self.request = request
        self.conn = conn
        self.serial = serial
        self.now = clock.now()
        # a page answering a POST must not poll: it would GET the form's URL
        self.refresh = app.refresh if request.method in ("GET", "HEAD") else 0
        self._container = None
        self._held = None
        self._banner = None
        self._new_seed = None
        self._credential = False

    # -- the database --------------------------------------------------------

    @property
    def container(self):
        if self._container is None:
            self._container = get_queues(self.conn)
        return self._container

    @property
    def installed(self):
        try:
            self.container
        except NotInstalledError:
            return False
        return True

    @property
    def held(self):
        if self._held is None:
            self._held = held_jobs(self.container)
        return self._held

    def find_job(self, job_id):
        """The job of this id, or raise NotFoundError (also for a malformed id)."""
        if not isinstance(job_id, str) or not JOB_ID.fullmatch(job_id):
            raise NotFoundError("no job with this id")
        job = self.container.find_job(job_id)
        if job is None:
            raise NotFoundError(f"no job {job_id}")
        return job

    @property
    def banner(self):
        """Running jobs and failures not dismissed, for every page."""
        if self._banner is None:
            failed, cancelled = failure_counts(self.container)
            self._banner = {
                "running": running_count(self.held),
                "failed": failed,
                "cancelled": cancelled,
                # the few shown only: loading and sorting each of 25,000
                # failures took 1.7 s a page
                "failed_jobs": [JobView(job, self.now) for job in
                                newest_failures(self.container, BANNER_FAILED)],
            }
        return self._banner

    # -- who asks ------------------------------------------------------------

    @property
    def credential(self):
        if self._credential is False:
            self._credential = self.guard.credential(self.request)
        return self._credential

    @property
    def actions_enabled(self):
        return self.guard.enabled

    @property
    def may_act(self):
        """Whether to show action buttons: only to a visitor with the
        credential (the others would only be refused)."""
        return self.guard.enabled and bool(self.credential)

    @property
    def may_read(self):
        """Whether this visitor may see jobs (see `Application.require_login`)."""
        return not self.app.require_login or bool(self.credential)

    @property
    def csrf_token(self):
        seed = self.request.cookies.get(CSRF_COOKIE) or self._new_seed
        if not seed:
            seed = self._new_seed = self.guard.new_csrf_seed()
        return self.guard.csrf_token(seed)

    # -- links ---------------------------------------------------------------

    def url(self, path, **query):
        query = {key: value for key, value in query.items() if value is not None}
        text = self.request.script_name + path
        if query:
            text += "?" + urllib.parse.urlencode(query)
        return text

    def static_url(self, name):
        return self.url("/static/" + name)

    def job_url(self, job_id):
        return self.url("/jobs/" + urllib.parse.quote(job_id, safe=""))

    def value_url(self, job_id, kind, name=None):
        """Where the whole repr of one of a job's values is served."""
        path = f"{self.job_url(job_id)}/values/{kind}"
        return path if name is None else path + "/" + urllib.parse.quote(str(name), safe="")

    def schedule_url(self, schedule):
        return self.url("/schedules/" + urllib.parse.quote(schedule.name, safe=""))

    @property
    def here(self):
        """This page, relative to the application, for a form's `next`
        and the login link.  A page answering a POST stands for the page
        the form was on (its `next`), never for the POST's own address,
        which a GET would answer with 405."""
        if self.request.method == "POST":
            return safe_next(self.request.POST.get("next"), "/")
        query = self.request.query_string
        return self.request.path_info + ("?" + query if query else "")

    # -- answers -------------------------------------------------------------

    @property
    def notice(self):
        """The text of ?done=ACTION&job=ID after a form's redirect."""
        text = NOTICES.get(self.request.GET.get("done"))
        if text is None:
            return None
        job = self.request.GET.get("job", "")
        count = self.request.GET.get("count", "")
        skipped = self.request.GET.get("skipped", "")
        text = text.format(job=job if JOB_ID.fullmatch(job) else "?",
                           count=int(count) if count.isdigit() else "?")
        if skipped.isdigit() and int(skipped):
            text += f" {int(skipped)} skipped: no longer in a state for this."
        return text

    def render(self, template, status=200, **namespace):
        templates = self.app.templates
        page = cooked(templates[template])
        tools = dict(view=self, layout=cooked(templates["layout.pt"]),
                     macros=cooked(templates["macros.pt"]), fmt_time=fmt_time,
                     ago=ago, fmt_seconds=fmt_seconds, clip=clip, labels=LABELS,
                     confirm=CONFIRM, back=None, login=False,
                     ago_tag=lambda when: time_tag(when, self.now),
                     since_tag=lambda when: time_tag(when, self.now, since=True))
        tools.update(namespace)
        body = page(**tools)
        response = Response(body=body.encode("utf-8"), status=status,
                            content_type="text/html", charset="utf-8")
        if status == 200 and self.request.method in ("GET", "HEAD"):
            response.etag = page_etag(body)
            if response.etag in self.request.if_none_match:
                response = Response(status=304)
                response.etag = page_etag(body)
        self.finish(response)
        return response

    def finish(self, response):
        """Set the CSRF cookie if this request made a new one."""
        if self._new_seed:
            self.app.set_cookie(self.request, response, CSRF_COOKIE, self._new_seed)

    @staticmethod
    def json(data, status=200):
        return Response(body=json.dumps(data, indent=1).encode("utf-8"), status=status,
                        content_type="application/json", charset="utf-8")

    def redirect(self, next_path, **query):
        """303 to `next_path` (relative to the application) with `query`."""
        parts = urllib.parse.urlsplit(next_path)
        old = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query) if k not in query]
        new = old + [(k, v) for k, v in query.items() if v is not None]
        location = self.request.script_name + parts.path
        if new:
            location += "?" + urllib.parse.urlencode(new)
        response = Response(status=303, location=location)
        self.finish(response)
        return response


def cooked(template):
    """`template`, compiled.

    Chameleon compiles a template at its first use in the process, in the
    request that first shows it, and parses its expressions with `ast`.
    CPython 3.11 before 3.11.8 keeps the depth counter of its AST
    constructor in one place for all threads (gh-106905), and a garbage
    collection in the middle of building an AST can switch threads: when
    another thread builds an AST then (a worker formatting the traceback of
    a failed attempt: 3.11's traceback module parses each frame's line to
    place its carets), the compilation fails with a SystemError
    ("AST constructor recursion depth mismatch") that has nothing to do
    with the template, and the first view of a page answered 500.

    Compiling is pure and Chameleon keeps nothing of a compilation that
    failed, so the template is compiled again, up to `COOK_ATTEMPTS` times.
    Compiling every template before any thread starts was rejected: it
    takes seconds (3 s for all of them here), paid by every process that
    imports the web view, and an application that mounts the view cannot
    always import it before its threads start.
    """
    for attempt in itertools.count(1):
        try:
            template.cook_check()
            return template
        except SystemError as error:
            if not str(error).startswith(AST_RACE) or attempt >= COOK_ATTEMPTS:
                raise
            logger.info("web: compiling %s met CPython 3.11's AST race (gh-106905, "
                        "fixed in 3.11.8): %s; compiling it again",
                        os.path.basename(template.filename), error)


def page_etag(body):
    """The ETag of a rendered page: a digest of what it shows, less the
    relative times the script keeps current itself and the transaction
    id it was read at."""
    shown = SERIAL.sub("", LIVE_TIME.sub(r"\1\2", body))
    return hashlib.blake2b(shown.encode("utf-8"), digest_size=12).hexdigest()


def safe_next(value, default="/"):
    """A `next` path inside the application, or `default`: never another
    site (//host, scheme:) nor control characters."""
    if not isinstance(value, str) or not value.startswith("/") or value.startswith("//"):
        return default
    if "\\" in value or any(ord(c) < 32 or ord(c) == 127 for c in value):
        return default
    return value


class Route:
    def __init__(self, methods, pattern, handler, api=False, public=False):
        self.methods = methods
        self.pattern = re.compile(pattern)
        self.handler = handler
        self.api = api
        self.public = public      # answered even to a visitor not logged in


#: What makes the routes of an `Application`, in their order: the pages'
#: and the API's, which `zasync.web` puts here as it imports them (they
#: import this module, so this one cannot import them).
ROUTES = []


class Application:
    """The WSGI application of `make_app`."""

    def __init__(self, db, token=None, username=None, password=None, refresh=1,
                 require_login=False):
        if not hasattr(db, "open") or not hasattr(db, "lastTransaction"):
            raise ConfigurationError(f"db={db!r}: expected a ZODB database (zasync.open_db)")
        if isinstance(refresh, bool) or not isinstance(refresh, (int, float)) or refresh < 0:
            raise ConfigurationError(
                f"refresh={refresh!r}: expected seconds between updates (0 turns them off)")
        self.db = db
        self.guard = Guard(token, username, password)
        if require_login and not self.guard.enabled:
            raise ConfigurationError(
                "require_login=True needs a credential to log in with: give a "
                "token, or a username and password")
        #: Reading needs the credential too: pages send visitors without
        #: it to the login page, the API and metrics answer 401.
        self.require_login = bool(require_login)
        self.refresh = refresh
        self.templates = LOADER
        self.static = DirectoryApp(STATIC)
        self.routes = [route for routes in ROUTES for route in routes()]

    def __call__(self, environ, start_response):
        request = Request(environ)
        try:
            response = _undecodable(request) or self.respond(request)
        except Exception:
            logger.exception("web: error answering %s %s", request.method, request.path_qs)
            response = Response(status=500, content_type="text/plain", charset="utf-8",
                                body=b"500 Internal Server Error: see the server's log\n")
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if not request.environ.get("PATH_INFO", "").startswith("/static/"):
            response.cache_control = "no-store"
        return response(environ, start_response)

    def respond(self, request):
        path = request.path_info
        if path.startswith("/static/"):
            request.path_info_pop()
            if request.method not in ("GET", "HEAD"):
                return Response(status=405, allow="GET, HEAD")
            return request.get_response(self.static)
        throttled = _throttled(self.guard, request)
        if throttled is not None:
            return throttled
        allowed = set()
        for route in self.routes:
            match = route.pattern.fullmatch(path)
            if match is None:
                continue
            methods = route.methods + (("HEAD",) if "GET" in route.methods else ())
            if request.method not in methods:
                allowed.update(methods)
                continue
            return self.run(route, request, match.groupdict())
        if allowed:
            response = Response(status=405, content_type="text/plain", charset="utf-8",
                                body=b"405 Method Not Allowed\n")
            response.allow = ", ".join(sorted(allowed))
            return response
        api = path.startswith("/api/")
        return self.run(Route(("GET",), "", _not_found, api=api), request, {})

    def run(self, route, request, arguments):
        """Call the route's view with a fresh transaction, aborted after."""
        tm = transaction.TransactionManager()
        serial = self.db.lastTransaction()   # before begin: never newer than what is read
        conn = open_connection(self.db, tm)
        try:
            tm.begin()
            ctx = Context(self, request, conn, serial.hex() if serial else "0")
            if not ctx.may_read:
                ctx.refresh = 0        # a login page has nothing to update
                if not route.public:
                    return _login_required(ctx, route)
            try:
                return route.handler(ctx, **arguments)
            except NotFoundError as error:
                if route.api:
                    return ctx.json({"result": "fail", "message": str(error)}, 404)
                return ctx.render("message.pt", status=404, title="Not found",
                                  heading="Not found", message=str(error))
            except NotInstalledError as error:
                if route.api:
                    return ctx.json({"result": "fail", "message": str(error)}, 503)
                return ctx.render("message.pt", status=503, title="Not installed",
                                  heading="zasync is not installed in this database",
                                  message=f"{error}. A worker installs it when it starts.")
        finally:
            tm.abort()
            close_connection(conn)

    def set_cookie(self, request, response, name, value, max_age=None):
        response.set_cookie(name, value, max_age=max_age, path=request.script_name or "/",
                            httponly=True, samesite="lax",
                            secure=request.scheme == "https")

    def delete_cookie(self, request, response, name):
        response.delete_cookie(name, path=request.script_name or "/")


def _undecodable(request):
    """A 400 response when the request's path or query string is not UTF-8
    once unquoted (``/jobs/%ff``), which no page or job id can be; else
    None."""
    for part, read in (("path", lambda: request.path_info),
                       ("query string", lambda: request.GET)):
        try:
            read()
        except UnicodeDecodeError:
            break
    else:
        return None
    message = f"the URL's {part} is not UTF-8 text once its %-escapes are decoded"
    if request.environ.get("PATH_INFO", "").startswith("/api/"):
        return Context.json({"result": "fail", "message": message}, 400)
    return Response(status=400, content_type="text/plain", charset="utf-8",
                    body=f"400 Bad Request: {message}\n".encode("utf-8"))


def _throttled(guard, request):
    """A 429 response when the request tries a credential (an
    Authorization header, or the login form) from a client that gave
    wrong ones too often lately; else None.  A right credential is
    refused too: the answer must not tell a guesser which one was right."""
    tries = "Authorization" in request.headers or (
        request.method == "POST" and request.path_info == "/login")
    if not tries:
        return None
    wait = guard.throttle.wait(client_of(request))
    if not wait:
        return None
    seconds = max(int(wait + 0.999), 1)
    message = (f"too many wrong credentials from this address: try again in "
               f"{seconds} s")
    if request.path_info.startswith("/api/") or request.path_info == "/metrics":
        response = Context.json({"result": "fail", "message": message}, 429)
    else:
        response = Response(status=429, content_type="text/plain", charset="utf-8",
                            body=f"429 Too Many Requests: {message}\n".encode("utf-8"))
    response.headers["Retry-After"] = str(seconds)
    return response


def _login_required(ctx, route):
    """The answer to a visitor without the credential when reading needs
    it: 401 from the API and metrics, the login page (by a redirect that
    comes back here) from the pages."""
    request = ctx.request
    if route.api or request.path_info.startswith("/api/") \
            or request.path_info == "/metrics":
        scheme = "Bearer" if ctx.guard.kind == "token" else 'Basic realm="zasync"'
        response = ctx.json({"result": "fail", "message":
                             "reading needs the credential: give it in the "
                             "Authorization header"}, 401)
        response.headers["WWW-Authenticate"] = scheme
        return response
    if request.method in ("GET", "HEAD"):
        return ctx.redirect("/login", next=ctx.here)
    return ctx.render("message.pt", status=403, title="Refused", heading="Log in first",
                      message="This server shows its jobs only to visitors with "
                              "its credential.", login=True)


def _not_found(ctx):
    raise NotFoundError(f"no page {clip_path(ctx.request.path_info)}")


def clip_path(path):
    return path if len(path) <= 80 else path[:79] + "…"
