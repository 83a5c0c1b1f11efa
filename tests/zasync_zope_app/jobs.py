"""The jobs the test app's views put; each writes what it saw into the
records of the application root (an OOBTree), under the token of the
request that put it, adding 1 to the runs of that token."""

from BTrees.OOBTree import OOBTree

RECORDS = "zasync_test_records"


def records(app):
    from Acquisition import aq_base
    app = aq_base(app)
    if RECORDS not in app.__dict__:
        setattr(app, RECORDS, OOBTree())
    return getattr(app, RECORDS)


def _write(target, token, seen):
    # getPhysicalRoot() needs the acquisition chain: a bare argument fails
    book = records(target.getPhysicalRoot())
    runs = book.get(token, {}).get("runs", 0)
    book[token] = dict(seen, runs=runs + 1)


def record(target, token):
    """Count one run for `token`."""
    _write(target, token, {})
    return token


def whoami(target, token):
    """Record the context the job runs in."""
    from AccessControl import getSecurityManager
    from zope.component.hooks import getSite
    from zope.globalrequest import getRequest
    site = getSite()
    request = getRequest()
    seen = {
        "url": target.absolute_url(),
        "root": "/".join(target.getPhysicalRoot().getPhysicalPath()),
        "path": "/".join(target.getPhysicalPath()),
        "user": getSecurityManager().getUser().getId(),
        "user_name": getSecurityManager().getUser().getUserName(),
        "site": "/".join(site.getPhysicalPath()) if site is not None else None,
        "request_url": request["SERVER_URL"] if request is not None else None,
    }
    _write(target, token, seen)
    return seen["url"]


def record_slowly(target, token, seconds, started_file):
    """Say that it started (in `started_file`, outside the database, so a
    test sees it before anything commits), take `seconds`, then count one
    run for `token`: a job that a stop finds in its middle."""
    import time
    with open(started_file, "a") as f:
        f.write(token + "\n")
    time.sleep(float(seconds))
    _write(target, token, {})
    return token
