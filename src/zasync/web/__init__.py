"""The web view and JSON API of zasync: a WSGI application.

``make_app(db)`` returns it, to serve with any WSGI server or mount in
another application; ``zasync web --db URI`` serves it with waitress.
"""

from zasync.web import api, app, pages
from zasync.web.app import Application

app.ROUTES[:] = [pages.routes, api.routes]


def make_app(db, token=None, username=None, password=None, refresh=3):
    """The WSGI application showing the queues, jobs and workers of `db`.

    Actions (cancel, retry, dismiss, remove) need the credential: a `token`
    (sent as ``Authorization: Bearer TOKEN`` or typed into the login form)
    or a `username` and `password` (HTTP basic or the login form).  With
    neither, actions are disabled and the pages say so.  Pages update
    themselves every `refresh` seconds (0: never).
    """
    return Application(db, token=token, username=username, password=password,
                       refresh=refresh)


__all__ = ["make_app"]
