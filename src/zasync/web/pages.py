"""The HTML pages and the forms they post."""

import re

from webob import Response

from zasync.web.actions import (
    ACTIONS, BULK_ACTIONS, BULK_LIMIT, ActionError, perform, unschedule)
from zasync.web.app import NotFoundError, Route, safe_next
from zasync.web.guard import CSRF_FIELD, SESSION_COOKIE, SESSION_SECONDS, client_of
from zasync.web.present import HEALTHS, RUNNING, JobView, WorkerView, full_repr
from zasync.web.survey import (
    CHART_SCAN_LIMIT, SCAN_LIMIT, STATES, FilterError, Filters, chart, list_jobs, per_minute,
    queue_counts, schedule_views, unserved_queues)
from zasync.interfaces import STATUSES

ID = r"(?P<job_id>[^/]+)"

def routes():
    return [
        Route(("GET",), r"/", overview),
        Route(("GET",), r"/jobs", jobs),
        Route(("GET",), r"/jobs/" + ID, job_page),
        Route(("GET",), r"/jobs/" + ID + r"/values/(?P<kind>result|args|kwargs|annotations)"
                                          r"(?:/(?P<name>[^/]+))?", job_value),
        Route(("GET",), r"/go", go_to_job),
        Route(("POST",), r"/jobs/" + ID + r"/(?P<action>[a-z]+)", act),
        Route(("GET",), r"/running", running),
        Route(("GET",), r"/workers", workers),
        Route(("GET",), r"/schedules", schedules),
        Route(("POST",), r"/schedules/(?P<name>[^/]+)/remove", remove_schedule),
        Route(("GET", "POST"), r"/login", login, public=True),
        Route(("POST",), r"/logout", logout),
    ]


def _page(ctx, template, title, **namespace):
    return ctx.render(template, title=title, **namespace)


def _worker_order(worker):
    return (HEALTHS.index(worker.health), -worker.last_ping.timestamp(), worker.id)


def overview(ctx):
    found = sorted((WorkerView(record, ctx.now)
                    for record in ctx.container.dispatchers.values()), key=_worker_order)
    unserved = unserved_queues(ctx.container, found)
    queues = []
    for queue in ctx.container.values():
        succeeded, failed, complete = per_minute(queue, ctx.now)
        counts = queue_counts(queue, ctx.held)
        queues.append({
            "name": queue.name,
            "label": "(default)" if queue.name == "" else queue.name,
            "counts": counts,
            "chart": chart(succeeded, failed),
            "complete": complete,
            "unserved": bool(counts["pending"]) and queue.name in unserved,
        })
    return _page(ctx, "overview.pt", "Overview", queues=queues, workers=found,
                 scan_limit=CHART_SCAN_LIMIT)


def jobs(ctx):
    container = ctx.container
    names = container.keys()
    try:
        filters = Filters(ctx.request.GET, names)
    except FilterError as error:
        return ctx.render("message.pt", status=400, title="Bad filter",
                          heading="This filter is not understood", message=str(error),
                          back=ctx.url("/jobs"))
    found, has_next, complete, total = list_jobs(container, filters, held=ctx.held)
    last = None if total is None else max(1, -(-total // filters.per_page))
    return _page(ctx, "jobs.pt", "Jobs", filters=filters,
                 jobs=[JobView(job, ctx.now) for job in found],
                 has_next=has_next, complete=complete, statuses=STATUSES,
                 total=total, last=last,
                 scan_limit=SCAN_LIMIT,
                 states=STATES, queue_names=names,
                 bulk_actions=BULK_ACTIONS, bulk_limit=BULK_LIMIT)


def running(ctx):
    shown = []
    for job, record in ctx.held:
        shown.append((JobView(job, ctx.now), WorkerView(record, ctx.now)))
    started = [pair for pair in shown if pair[0].status in RUNNING]
    waiting = [pair for pair in shown if pair[0].status not in RUNNING]
    return _page(ctx, "running.pt", "Running", started=started, waiting=waiting)


def job_page(ctx, job_id):
    view = JobView(ctx.find_job(job_id), ctx.now).load_detail()
    return _page(ctx, "job.pt", f"Job {view.id}", job=view)


#: What one of a job's values of each kind is called.
WORDS = {"args": "argument", "kwargs": "keyword argument", "annotations": "annotation"}


def job_value(ctx, job_id, kind, name=None):
    """GET /jobs/ID/values/result, .../args/N, .../kwargs/NAME or
    .../annotations/KEY: the whole repr of one value as text, where the
    job's page shows its first characters only."""
    job = ctx.find_job(job_id)
    if kind == "result":
        if name is not None or job.failure is not None or job.status not in (
                "callbacks", "completed"):
            raise NotFoundError(f"job {job_id} has no result")
        value = job.result
    elif name is None:
        raise NotFoundError(f"which of job {job_id}'s {kind}? add its "
                            + ("index: 0, 1, ..." if kind == "args" else "name"))
    elif kind == "args":
        if not name.isdigit() or int(name) >= len(job.args):
            expected = (f"expected 0 to {len(job.args) - 1}" if job.args
                        else "it has no positional arguments")
            raise NotFoundError(f"job {job_id} has no argument {name}: {expected}")
        value = job.args[int(name)]
    else:
        mapping = job.kwargs if kind == "kwargs" else job.annotations
        if name not in mapping:
            raise NotFoundError(f"job {job_id} has no {WORDS[kind]} {name!r}")
        value = mapping[name]
    response = Response(body=full_repr(value).encode("utf-8"), charset="utf-8",
                        content_type="text/plain")
    if ctx.request.GET.get("download"):
        label = re.sub(r"[^0-9A-Za-z_.-]", "_", name or "")[:60]
        response.content_disposition = (
            f'attachment; filename="{job_id}-{kind}{"-" + label if label else ""}.txt"')
    return response
def go_to_job(ctx):
    """GET /go?id=ID from the job-id box of every page: the job's page,
    or a page saying there is no such job."""
    job_id = (ctx.request.GET.get("id") or "").strip()
    if not job_id:
        return ctx.redirect("/jobs")
    try:
        job = ctx.find_job(job_id)
    except NotFoundError:
        shown = job_id if len(job_id) <= 80 else job_id[:79] + "…"
        return ctx.render("message.pt", status=404, title="No such job",
                          heading="No such job",
                          message=f"No job has the id {shown!r}: it may have been "
                                  f"removed, or pruned from the history after its "
                                  f"retention. To search jobs by words, use the "
                                  f"Jobs page's search.",
                          back=ctx.url("/jobs"))
    return ctx.redirect("/jobs/" + job.id)


def workers(ctx):
    found = sorted((WorkerView(record, ctx.now)
                    for record in ctx.container.dispatchers.values()), key=_worker_order)
    names = {}
    for job, _ in ctx.held:
        names[job.id] = JobView(job, ctx.now).callable
    return _page(ctx, "workers.pt", "Workers", workers=found, job_names=names)


# -- forms ----------------------------------------------------------------------

def _refuse(ctx, status, heading, message):
    return ctx.render("message.pt", status=status, title="Refused", heading=heading,
                      message=message, login=ctx.actions_enabled and not ctx.credential)


def refusal(ctx, doing):
    """The page refusing a form posted without a credential or with a
    stale CSRF token, or None if it may go on; `doing` says what it asked
    ("cancel a job")."""
    if not ctx.guard.enabled:
        return _refuse(ctx, 403, "Actions are disabled",
                       "No credential is configured for this server, so nobody may "
                       "act on jobs: start it with --token, or --user and --password.")
    if ctx.credential is None and ctx.guard.kind == "zope":
        return _refuse(ctx, 403, "Not allowed",
                       f"To {doing}, log in to the site as a user with the "
                       f"permission 'zasync: Manage jobs'.")
    if ctx.credential is None:
        return _refuse(ctx, 403, "Log in first",
                       f"To {doing}, log in with the server's credential.")
    if not ctx.guard.check_csrf(ctx.request, ctx.request.POST.get(CSRF_FIELD)):
        return _refuse(ctx, 403, "This form has expired",
                       "The form's security token is missing or stale (or the form "
                       "came from another site). Reload the page and try again.")
    return None


def act(ctx, job_id, action):
    """POST /jobs/ID/ACTION from a page's button."""
    if action not in ACTIONS:
        raise NotFoundError(f"no action {action!r}")
    refused = refusal(ctx, f"{action} a job")
    if refused is not None:
        return refused
    ctx.find_job(job_id)
    try:
        perform(ctx.app.db, job_id, action)
    except ActionError as error:
        return ctx.render("message.pt", status=error.status, title="Not done",
                          heading=f"Could not {action} the job", message=error.message,
                          back=ctx.job_url(job_id))
    next_path = safe_next(ctx.request.POST.get("next"), "/jobs/" + job_id)
    if action == "remove" and next_path.startswith("/jobs/" + job_id):
        next_path = "/jobs"     # the job is gone: its page would be a 404
    return ctx.redirect(next_path, done=action, job=job_id)


def schedules(ctx):
    found = schedule_views(ctx)
    with_queue = len(ctx.container) > 1
    return _page(ctx, "schedules.pt", "Schedules", schedules=found, with_queue=with_queue)


def remove_schedule(ctx, name):
    """POST /schedules/NAME/remove from the Schedules page (queue in the form)."""
    refused = refusal(ctx, "remove a schedule")
    if refused is not None:
        return refused
    try:
        unschedule(ctx.app.db, ctx.request.POST.get("queue", ""), name)
    except ActionError as error:
        return ctx.render("message.pt", status=error.status, title="Not done",
                          heading="Could not remove the schedule", message=error.message,
                          back=ctx.url("/schedules"))
    return ctx.redirect("/schedules", done="unschedule")


def login(ctx):
    guard = ctx.guard
    next_path = safe_next(ctx.request.params.get("next"), "/")
    if not guard.enabled:
        return ctx.render("message.pt", title="Read only", heading="Actions are disabled",
                          message="No credential is configured for this server, so "
                                  "there is nothing to log in to.")
    if ctx.request.method == "GET":
        return _page(ctx, "login.pt", "Log in", next=next_path, error=None)
    if not guard.check_csrf(ctx.request, ctx.request.POST.get(CSRF_FIELD)):
        return _page(ctx, "login.pt", "Log in", next=next_path, status=403,
                     error="The form expired: try again.")
    if not guard.login(ctx.request.POST):
        guard.throttle.failed(client_of(ctx.request), "login form")
        what = "token" if guard.kind == "token" else "user name or password"
        return _page(ctx, "login.pt", "Log in", next=next_path, status=403,
                     error=f"Wrong {what}.")
    response = ctx.redirect(next_path, done="login")
    ctx.app.set_cookie(ctx.request, response, SESSION_COOKIE, guard.new_session(),
                       max_age=SESSION_SECONDS)
    return response


def logout(ctx):
    if not ctx.guard.check_csrf(ctx.request, ctx.request.POST.get(CSRF_FIELD)):
        return _refuse(ctx, 403, "This form has expired", "Reload the page and try again.")
    response = ctx.redirect("/", done="logout")
    ctx.app.delete_cookie(ctx.request, response, SESSION_COOKIE)
    return response
