"""The JSON API, mirroring the pages, and /metrics.

Jobs have both vocabularies: ``status`` (the job's: new, pending, assigned,
active, callbacks, completed) and ``state`` (pending, started, success,
failure), with ``message``, ``progress`` in [0, 1] (for a failed job, how
far it got before it failed), times in ISO 8601 and ``duration`` in
seconds.  Schedules (``/api/schedules``) have their
``every`` in seconds or their ``cron``, ``next_at`` and ``next_job``,
``last_at``, ``last_job`` and ``last_outcome``, ``runs`` and ``skipped``.
Actions (on a job, or ``POST /api/schedules/NAME/remove[?queue=Q]``)
answer ``{"task_id": ID, "result": "ok", "message": ...}``, or
``{"result": "fail", "message": ...}`` with a 4xx (or 503) status; so does
every other error.  ``GET /api/`` lists the endpoints.
"""

from webob import Response

from zasync.web import metrics
from zasync.web.actions import ACTIONS, ActionError, perform, unschedule
from zasync.web.app import JOB_ID, NotFoundError, Route
from zasync.web.guard import BASIC, CSRF_FIELD, CSRF_HEADER, SESSION, same_origin
from zasync.web.present import JobView, WorkerView
from zasync.web.survey import (
    FilterError, Filters, failure_counts, list_jobs, per_minute, queue_counts,
    running_count, schedule_views, unserved_queues)

ID = r"(?P<job_id>[^/]+)"


#: What GET /api/ lists: (method, path, what it answers).
ENDPOINTS = (
    ("GET", "/api/", "This list of the API's endpoints."),
    ("GET", "/api/jobs",
     "Jobs, newest first, a page at a time; filtered by ?status=, ?state=, "
     "?queue=, ?callable=, ?q= (words of the callable, arguments, result or "
     "failure; word* for a prefix); ?page= and ?per_page=; 'total' counts the "
     "matches (null where a filter is checked job by job)."),
    ("GET", "/api/jobs/{id}",
     "One job: arguments, status history, progress, annotations, attempts, "
     "its group's parts (group) or the group it is a part of (group_id), "
     "result or failure with its traceback."),
    ("POST", "/api/jobs/{id}/{action}",
     "Act on a job: " + ", ".join(ACTIONS) + "; needs a credential."),
    ("POST", "/api/bulk/{action}",
     "Dismiss, retry or cancel many jobs: {\"ids\": [...]}, or {\"all\": true, "
     "\"filter\": {...}} for the jobs matching a filter (at most 1000); "
     "\"dry_run\": true counts them only; needs a credential."),
    ("GET", "/api/queues", "Each queue's counts, its last hour minute by minute, and "
     "whether it has pending jobs that no live worker serves (unserved)."),
    ("GET", "/api/workers", "The workers (dispatchers), their load and health."),
    ("GET", "/api/schedules", "The schedules of recurring jobs."),
    ("POST", "/api/schedules/{name}/remove",
     "Remove a schedule (?queue= names its queue); needs a credential."),
    ("GET", "/api/summary",
     "The banner's counts (running, failed, cancelled) and the database's last transaction "
     "(also its ETag: If-None-Match gets a 304 while nothing was committed)."),
    ("GET", "/metrics", "Prometheus metrics, in its text format."),
)


def routes():
    return [
        Route(("GET",), r"/api/?", index, api=True),
        Route(("GET",), r"/api/summary", summary, api=True),
        Route(("GET",), r"/api/jobs", jobs, api=True),
        Route(("GET",), r"/api/jobs/" + ID, job, api=True),
        Route(("POST",), r"/api/jobs/" + ID + r"/(?P<action>[a-z]+)", act, api=True),
        Route(("GET",), r"/api/queues", queues, api=True),
        Route(("GET",), r"/api/workers", workers, api=True),
        Route(("GET",), r"/api/schedules", schedules, api=True),
        Route(("POST",), r"/api/schedules/(?P<name>[^/]+)/remove", act_on_schedule, api=True),
        Route(("GET",), r"/metrics", metrics_page, api=True),
    ]


def fail(ctx, status, message, **headers):
    response = ctx.json({"result": "fail", "message": message}, status)
    for name, value in headers.items():
        response.headers[name.replace("_", "-")] = value
    return response


def index(ctx):
    """GET /api/: the endpoints, each with its address under this
    application's mount point."""
    base = ctx.request.script_name
    return ctx.json({"endpoints": [
        {"method": method, "path": path, "url": base + path, "description": text}
        for method, path, text in ENDPOINTS]})


def summary(ctx):
    """What the pages poll: the banner's counts and the database's last
    transaction id, which changes whenever anything was committed.  That
    id is also its ETag: a poll sending it back while nothing was
    committed gets a 304 before anything is read."""
    etag = "serial-" + ctx.serial
    if etag in ctx.request.if_none_match:
        response = Response(status=304)
        response.etag = etag
        return response
    response = _summary(ctx)
    response.etag = etag
    return response


def _summary(ctx):
    if not ctx.installed:
        return ctx.json({"installed": False, "serial": ctx.serial, "running": 0, "failed": 0,
                         "cancelled": 0})
    failed, cancelled = failure_counts(ctx.container)
    return ctx.json({"installed": True, "serial": ctx.serial,
                     "running": running_count(ctx.held),
                     "failed": failed, "cancelled": cancelled})


def jobs(ctx):
    container = ctx.container
    try:
        filters = Filters(ctx.request.GET, container.keys())
    except FilterError as error:
        return fail(ctx, 400, str(error))
    found, has_next, complete, total = list_jobs(container, filters, held=ctx.held)
    return ctx.json({
        "jobs": [JobView(found_job, ctx.now).as_json() for found_job in found],
        "page": filters.page, "per_page": filters.per_page,
        "has_next": has_next, "complete": complete, "total": total,
    })


def job(ctx, job_id):
    return ctx.json(JobView(ctx.find_job(job_id), ctx.now).as_json(detail=True))


def queues(ctx):
    workers = [WorkerView(record, ctx.now) for record in ctx.container.dispatchers.values()]
    unserved = unserved_queues(ctx.container, workers)
    found = []
    for queue in ctx.container.values():
        succeeded, failed, complete = per_minute(queue, ctx.now)
        counts = queue_counts(queue, ctx.held)
        found.append(dict(
            name=queue.name, **counts,
            unserved=bool(counts["pending"]) and queue.name in unserved,
            last_hour={"succeeded": succeeded, "failed": failed, "complete": complete}))
    return ctx.json({"queues": found})


def workers(ctx):
    return ctx.json({"workers": [WorkerView(record, ctx.now).as_json()
                                 for record in ctx.container.dispatchers.values()]})


def act(ctx, job_id, action):
    """POST /api/jobs/ID/ACTION."""
    if action not in ACTIONS:
        return fail(ctx, 404, f"no action {action!r}; expected one of {', '.join(ACTIONS)}")
    refused = refusal(ctx)
    if refused is not None:
        return refused
    if not JOB_ID.fullmatch(job_id):
        raise NotFoundError("no job with this id")
    try:
        message = perform(ctx.app.db, job_id, action)
    except ActionError as error:
        return fail(ctx, error.status, error.message)
    return ctx.json({"task_id": job_id, "result": "ok", "message": message})


def schedules(ctx):
    return ctx.json({"schedules": [view.as_json() for view in schedule_views(ctx)]})


def act_on_schedule(ctx, name):
    """POST /api/schedules/NAME/remove[?queue=QUEUE]."""
    refused = refusal(ctx)
    if refused is not None:
        return refused
    try:
        message = unschedule(ctx.app.db, ctx.request.params.get("queue", ""), name)
    except ActionError as error:
        return fail(ctx, error.status, error.message)
    return ctx.json({"task_id": name, "result": "ok", "message": message})


def refusal(ctx):
    """The answer to an action without a valid credential (or CSRF token,
    for the login cookie), or None if it may go on."""
    guard = ctx.guard
    if not guard.enabled:
        return fail(ctx, 403, "actions are disabled: no credential is configured "
                              "for this server")
    how = ctx.credential
    if how is None and guard.kind == "zope":
        return fail(ctx, 403, "acting on jobs needs the Zope permission "
                              "'zasync: Manage jobs' here")
    if how is None:
        scheme = "Bearer" if guard.kind == "token" else 'Basic realm="zasync"'
        return fail(ctx, 401, "give the credential: " + (
            "Authorization: Bearer TOKEN" if guard.kind == "token"
            else "HTTP basic authentication"), WWW_Authenticate=scheme)
    if how == SESSION:
        supplied = ctx.request.headers.get(CSRF_HEADER) or ctx.request.POST.get(CSRF_FIELD)
        if not guard.check_csrf(ctx.request, supplied):
            return fail(ctx, 403, f"a request authenticated by the login cookie needs "
                                  f"the {CSRF_HEADER} header")
    if how == BASIC and not same_origin(ctx.request):
        return fail(ctx, 403, "refused: sent by a browser from another site")
    return None


def metrics_page(ctx):
    response = Response(body=metrics.render(ctx.container, ctx.now).encode("utf-8"))
    response.headers["Content-Type"] = metrics.CONTENT_TYPE
    return response
