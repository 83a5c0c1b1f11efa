"""The web view and JSON API of zasync: a WSGI application.

``make_app(db)`` returns it, to serve with any WSGI server or mount in
another application; ``zasync web --db URI`` serves it with waitress.
"""

from zasync.web import api, app, bulk, pages
from zasync.web.app import Application

app.ROUTES[:] = [pages.routes, api.routes, bulk.routes]


def make_app(db, token=None, username=None, password=None, refresh=1, require_login=False):
    """The WSGI application showing the queues, jobs and workers of `db`.

    Actions (cancel, retry, dismiss, remove) need the credential: a `token`
    (sent as ``Authorization: Bearer TOKEN`` or typed into the login form)
    or a `username` and `password` (HTTP basic or the login form).  With
    neither, actions are disabled and the pages say so.  With
    `require_login`, reading needs the credential too (the pages send a
    visitor to the login page, the API answers 401).  Pages update
    themselves every `refresh` seconds (0: never).
    """
    return Application(db, token=token, username=username, password=password,
                       refresh=refresh, require_login=require_login)


__all__ = ["make_app"]
