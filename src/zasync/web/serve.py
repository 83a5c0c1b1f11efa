"""Serving the web view with waitress, for ``zasync web``."""

import ipaddress
import logging
import signal
import threading

import waitress
from webob import Request, Response

from zasync.interfaces import ConfigurationError, ZasyncError
from zasync.web import make_app

logger = logging.getLogger(__name__)


def parse_bind(text):
    """'HOST:PORT' (or '[IPv6]:PORT') as (host, port)."""
    if not isinstance(text, str) or ":" not in text:
        raise ConfigurationError(
            f"{text!r}: expected HOST:PORT, e.g. 127.0.0.1:8080 or [::1]:8080")
    host, _, port_text = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        port = int(port_text)
    except ValueError:
        port = -1
    if not host or not 0 <= port <= 65535:
        raise ConfigurationError(
            f"{text!r}: expected HOST:PORT with a port from 0 to 65535, "
            f"e.g. 127.0.0.1:8080")
    return host, port


def is_loopback(host):
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


#: Host names a browser uses for a server on loopback.
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")


class HostCheck:
    """WSGI middleware answering 400 to a request whose Host header names
    none of `hosts` (ports aside).

    A page on another site can make a browser send requests to a loopback
    server under the site's own name (DNS rebinding) and read the answers;
    checking the Host header stops that for a server meant for loopback.
    """

    def __init__(self, app, hosts):
        self.app = app
        self.hosts = {host.lower().strip("[]") for host in hosts}

    def __call__(self, environ, start_response):
        request = Request(environ)
        host = request.host.lower()
        name = host.rpartition("]")[0][1:] if host.startswith("[") else host.partition(":")[0]
        if name not in self.hosts:
            response = Response(status=400, content_type="text/plain", charset="utf-8",
                                body=b"400 Bad Request: unexpected Host header (see "
                                     b"zasync web --allow-host)\n")
            return response(environ, start_response)
        return self.app(environ, start_response)


class _Stop(ZasyncError):
    """Raised in the main thread by SIGTERM to end `server.run()` (a
    control-flow signal, like `Cancelled`)."""


def make_server(db, bind="127.0.0.1:8080", token=None, username=None, password=None,
                refresh=1, threads=4, allow_hosts=(), require_login=False):
    """Make the waitress server of the web view of `db`, listening but not
    yet serving (``server.run()`` serves, ``server.close()`` ends it);
    return it and a line saying where it listens.  Raises OSError when it
    cannot listen on `bind`.

    Bound to loopback, it answers only requests for a loopback name or one
    of `allow_hosts`; bound elsewhere, only for `allow_hosts` if given."""
    host, port = parse_bind(bind)
    app = make_app(db, token=token, username=username, password=password, refresh=refresh,
                   require_login=require_login)
    guarded = app
    if is_loopback(host):
        guarded = HostCheck(app, LOOPBACK_NAMES + (host,) + tuple(allow_hosts))
    elif allow_hosts:
        guarded = HostCheck(app, tuple(allow_hosts))
    server = waitress.create_server(guarded, host=host, port=port, threads=threads,
                                    ident="zasync", clear_untrusted_proxy_headers=True)
    # a name that resolves to several addresses gives a server without one
    # effective address
    shown_host = getattr(server, "effective_host", host)
    shown_port = getattr(server, "effective_port", port)
    if ":" in str(shown_host):
        shown_host = f"[{shown_host}]"
    actions = {"token": "with the token", "password": "with the user and password",
               None: "disabled (no credential)"}[app.guard.kind]
    line = (f"zasync web: serving http://{shown_host}:{shown_port}/ "
            f"(actions {actions}{'; reading needs it too' if require_login else ''}; "
            f"Ctrl-C to stop)")
    if not is_loopback(host) and not require_login:
        logger.warning("web: listening on %s, not on loopback: whoever reaches it "
                       "can read the jobs, their arguments and tracebacks", host)
    return server, line


def serve(db, bind="127.0.0.1:8080", token=None, username=None, password=None,
          refresh=1, threads=4, allow_hosts=(), announce=print, require_login=False):
    """Serve the web view of `db` until SIGTERM or SIGINT (or, in another
    thread than the main one, until the server is closed); see
    `make_server`.  `announce` receives one line saying where it listens."""
    server, line = make_server(db, bind, token=token, username=username,
                               password=password, refresh=refresh, threads=threads,
                               allow_hosts=allow_hosts, require_login=require_login)
    announce(line)

    def on_term(signum, frame):
        raise _Stop()

    main_thread = threading.current_thread() is threading.main_thread()
    if main_thread:
        previous = signal.signal(signal.SIGTERM, on_term)
    try:
        server.run()
    except (_Stop, KeyboardInterrupt):
        logger.info("web: stopping")
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
        server.close()
