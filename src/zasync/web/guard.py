"""Who may act on jobs: the configured credential, login sessions and
CSRF tokens.

Reading is open to whoever reaches the server (it binds to loopback unless
told otherwise), unless the application requires the login for reading
too (``require_login``); every action is a POST that needs the credential
(and the pages show action buttons only to whoever has it):

- ``Authorization: Bearer TOKEN`` (with a token configured) or HTTP basic
  (with a user and password configured), for scripts and the JSON API;
- or a session cookie set by the login form, for browsers.

HTML forms also carry a CSRF token: an HMAC of a random per-browser cookie
under a secret of this process, so another site can neither read nor forge
it.  A browser also sends cookies and remembered basic credentials by
itself, so the JSON API asks a cookie session for the token too (as the
``X-CSRF-Token`` header), and refuses a basic-authenticated request that a
browser sent from another origin.  A bearer token is never sent by a
browser on its own, so it needs neither.

Wrong credentials (an Authorization header, the login form) are logged
with the client's address and counted by a `Throttle`: a client that gave
too many lately is answered 429 before its credential is looked at.

The secret is made when the application is: sessions end when the server
restarts.  Rejected: putting the credential itself in the cookie (a leaked
cookie would leak the credential) and server-side session storage (one
more thing to keep, for a page that a handful of operators use).
"""

import base64
import binascii
import collections
import hashlib
import hmac
import logging
import secrets
import threading
import time

from zasync.interfaces import ConfigurationError

logger = logging.getLogger(__name__)

SESSION_COOKIE = "zasync_session"
CSRF_COOKIE = "zasync_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
SESSION_SECONDS = 12 * 3600

BEARER = "bearer"
BASIC = "basic"
SESSION = "session"

#: A client that gave a wrong credential this many times within
#: FAILURE_WINDOW seconds is answered 429 until the oldest of those
#: failures is that old.
FAILURE_LIMIT = 5
FAILURE_WINDOW = 60.0
#: Clients remembered at most (the oldest forgotten first), so that a
#: flood from many addresses cannot grow the memory without bound.
FAILURE_CLIENTS = 10_000


def client_of(request):
    """The address a request came from, as the throttle counts it."""
    return request.remote_addr or "unknown"


class Throttle:
    """Failed credentials per client, and how long a client must wait.

    Each failure is logged with the client's address.  Counted per
    address: behind a proxy every visitor shares the proxy's address (and
    its 429s), which is still better than an unbounded guessing rate.
    Rejected: sleeping before each refusal, which would hold one of the
    server's few threads per guess and slow every honest visitor too.
    """

    def __init__(self, limit=FAILURE_LIMIT, window=FAILURE_WINDOW, clock=time.monotonic,
                 clients=FAILURE_CLIENTS):
        self.limit = limit
        self.window = window
        self.clock = clock
        self.clients = clients
        self._failures = collections.OrderedDict()
        self._lock = threading.Lock()

    def _recent(self, client, now):
        times = self._failures.get(client)
        if times is None:
            return None
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[client]
            return None
        return times

    def wait(self, client):
        """Seconds `client` must wait before its credential is looked at
        again, or 0."""
        with self._lock:
            now = self.clock()
            times = self._recent(client, now)
            if times is None or len(times) < self.limit:
                return 0
            return max(times[-self.limit] + self.window - now, 0.001)

    def failed(self, client, what):
        """Record (and log) that `client` gave a wrong credential."""
        with self._lock:
            now = self.clock()
            times = self._recent(client, now) or collections.deque(maxlen=self.limit)
            times.append(now)
            self._failures[client] = times
            self._failures.move_to_end(client)
            while len(self._failures) > self.clients:
                self._failures.popitem(last=False)
            count = len(times)
        logger.warning("web: wrong credential from %s (%s); %d failure(s) in the last %g s",
                       client, what, count, self.window)


def _check_text(value, name):
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"{name}={value!r}: expected a non-empty str or None")
    return value


class Guard:
    """Checks credentials, signs sessions and CSRF tokens."""

    def __init__(self, token=None, username=None, password=None):
        self.token = _check_text(token, "token")
        self.username = _check_text(username, "username")
        self.password = _check_text(password, "password")
        if self.token is not None and (self.username or self.password):
            raise ConfigurationError(
                "give either a token or a username and password, not both")
        if (self.username is None) != (self.password is None):
            raise ConfigurationError(
                "username and password go together: give both or neither")
        self._secret = secrets.token_bytes(32)
        self.throttle = Throttle()

    @property
    def enabled(self):
        """Whether actions are possible at all (a credential is configured)."""
        return self.token is not None or self.username is not None

    @property
    def kind(self):
        """'token', 'password' or None."""
        if self.token is not None:
            return "token"
        if self.username is not None:
            return "password"
        return None

    def _sign(self, text):
        return hmac.new(self._secret, text.encode("utf-8"), hashlib.sha256).hexdigest()

    # -- credentials ---------------------------------------------------------

    def check_token(self, supplied):
        return (self.token is not None and isinstance(supplied, str)
                and hmac.compare_digest(supplied.encode("utf-8"), self.token.encode("utf-8")))

    def check_password(self, username, password):
        if self.username is None or not isinstance(username, str) \
                or not isinstance(password, str):
            return False
        # both compared, so that the time taken does not tell which was wrong
        user_ok = hmac.compare_digest(username.encode("utf-8"), self.username.encode("utf-8"))
        password_ok = hmac.compare_digest(
            password.encode("utf-8"), self.password.encode("utf-8"))
        return user_ok and password_ok

    def header_credential(self, request):
        """BEARER or BASIC if the request's Authorization header carries the
        configured credential, else None."""
        try:
            authorization = request.authorization
        except Exception:   # a header WebOb cannot make sense of
            return None
        if not authorization:
            return None
        kind = (authorization.authtype or "").lower()
        params = authorization.params
        if not isinstance(params, str):
            return None
        if kind == "bearer" and self.check_token(params.strip()):
            return BEARER
        if kind == "basic" and self.username is not None:
            try:
                decoded = base64.b64decode(params.strip(), validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError, ValueError):
                return None
            username, sep, password = decoded.partition(":")
            if sep and self.check_password(username, password):
                return BASIC
        return None

    def credential(self, request):
        """How the request proves the credential (BEARER, BASIC or SESSION),
        or None."""
        if not self.enabled:
            return None
        found = self.header_credential(request)
        if found is not None:
            return found
        if request.headers.get("Authorization"):
            self.throttle.failed(client_of(request), "Authorization header")
        if self.valid_session(request.cookies.get(SESSION_COOKIE)):
            return SESSION
        return None

    def login(self, form):
        """Whether a login form's fields hold the credential."""
        if self.token is not None:
            return self.check_token(form.get("token", ""))
        return self.check_password(form.get("username", ""), form.get("password", ""))

    # -- sessions ------------------------------------------------------------

    def new_session(self):
        expires = int(time.time()) + SESSION_SECONDS
        body = f"{expires}.{secrets.token_hex(8)}"
        return f"{body}.{self._sign('session:' + body)}"

    def valid_session(self, value):
        if not value or not isinstance(value, str) or value.count(".") != 2:
            return False
        body, _, signature = value.rpartition(".")
        if not hmac.compare_digest(signature.encode("ascii", "replace"),
                                   self._sign("session:" + body).encode("ascii")):
            return False
        try:
            return int(body.partition(".")[0]) > time.time()
        except ValueError:
            return False

    # -- CSRF ----------------------------------------------------------------

    @staticmethod
    def new_csrf_seed():
        return secrets.token_hex(16)

    def csrf_token(self, seed):
        return self._sign("csrf:" + seed)

    def check_csrf(self, request, supplied):
        seed = request.cookies.get(CSRF_COOKIE)
        if not seed or not isinstance(supplied, str) or not supplied:
            return False
        return hmac.compare_digest(supplied.encode("ascii", "replace"),
                                   self.csrf_token(seed).encode("ascii"))


def same_origin(request):
    """False when a browser says the request comes from another origin."""
    origin = request.headers.get("Origin")
    if origin is not None and origin != request.host_url:
        return False
    return request.headers.get("Sec-Fetch-Site", "same-origin") in (
        "same-origin", "none")
