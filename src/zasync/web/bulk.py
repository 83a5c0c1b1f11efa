"""Bulk actions: dismiss, retry or cancel many jobs at once, named by
their ids or by a listing's filter.

"All matching this filter" is bounded: at most `BULK_LIMIT` jobs, the
newest first, so that one click can neither hold the server for minutes
nor write a transaction of unbounded size; the confirmation says so when
more match.  The jobs are changed `BATCH` at a time, each batch in a
transaction of its own that the transaction manager retries on
ConflictError (a worker may be writing the same queue): a conflict costs
one batch again, not the whole run, and a batch that still fails stops
the run with what was done before it kept.

Rejected: one transaction for everything (a thousand jobs written at once
conflict with every worker's claim and are all redone on each retry) and
one transaction per job (a thousand commits for one click).
"""

import logging

from zasync.queue.database import get_queues
from zasync.interfaces import COMPLETED, ZasyncError
from zasync.web.actions import BULK_ACTIONS, BULK_LIMIT, DO, ActionError, in_transaction
from zasync.web.present import CANCELLABLE
from zasync.web.search import find_ids
from zasync.web.survey import SCAN_LIMIT, candidate_jobs, held_jobs

logger = logging.getLogger(__name__)

#: Jobs changed in one transaction.
BATCH = 50


def applies(action, job):
    """Whether `action` can be done to `job` as it is now."""
    if action == "dismiss":
        return (job.status == COMPLETED and job.failure is not None
                and not job.dismissed)
    if action == "retry":
        return job.status == COMPLETED and job.failure is not None
    if action == "cancel":
        return job.status in CANCELLABLE
    raise ValueError(f"action={action!r}: expected one of {', '.join(BULK_ACTIONS)}")


def check_action(action):
    if action not in BULK_ACTIONS:
        raise ActionError(404, f"no bulk action {action!r}; expected one of "
                               f"{', '.join(BULK_ACTIONS)}")


def matching(container, filters, action, limit=None, scan_limit=SCAN_LIMIT):
    """(jobs, more): the jobs that `filters` accept and `action` applies
    to, newest first, at most `limit`; `more` is True if others match
    beyond the limit (or beyond the `scan_limit` jobs read)."""
    check_action(action)
    limit = BULK_LIMIT if limit is None else limit
    found = []
    scanned = 0
    # the same jobs as the listing shows (see `survey.list_jobs`): from
    # the search's indexes where they answer, else read and checked
    queues = container.values() if filters.queue is None else [container[filters.queue]]
    ids = find_ids(queues, filters, held_jobs(container))
    if ids is not None:
        candidates = (job for job in (container.find_job(job_id) for job_id in ids.ids)
                      if job is not None)
        accepts = ids.check or (lambda job: True)
    else:
        candidates = candidate_jobs(container, filters)
        accepts = filters.accepts
    for job in candidates:
        scanned += 1
        if scanned > scan_limit:
            return found, True
        if not accepts(job) or not applies(action, job):
            continue
        if len(found) == limit:
            return found, True
        found.append(job)
    return found, False


def perform_bulk(db, action, job_ids, batch=None):
    """Do `action` to each of `job_ids`, `batch` jobs per transaction;
    return {"done": [ids], "skipped": [ids]} (skipped: not found, or no
    longer in a state the action applies to).  A batch that cannot be
    committed raises `ActionError`, whose `done` attribute lists the ids
    of the batches committed before it."""
    check_action(action)
    batch = BATCH if batch is None else batch
    do = DO[action]
    done, skipped = [], []
    for start in range(0, len(job_ids), batch):
        chunk = job_ids[start:start + batch]

        def change(conn, chunk=chunk):
            # recomputed on each attempt: a retried batch sees the new state
            changed, passed = [], []
            container = get_queues(conn)
            for job_id in chunk:
                job = container.find_job(job_id)
                if job is None or not applies(action, job):
                    passed.append(job_id)
                    continue
                try:
                    do(job)
                except ZasyncError:    # ActionError, or the queue's refusal
                    passed.append(job_id)
                else:
                    changed.append(job_id)
            return changed, passed

        what = f"{len(chunk)} jobs (batch {start // batch + 1})"
        try:
            changed, passed = in_transaction(db, action, what, change)
        except ActionError as error:
            error.done = done
            logger.warning("web: bulk %s stopped after %d jobs: %s",
                           action, len(done), error.message)
            raise
        done.extend(changed)
        skipped.extend(passed)
    logger.info("web: bulk %s: %d done, %d skipped", action, len(done), len(skipped))
    return {"done": done, "skipped": skipped}


# -- the pages' forms and the JSON API ------------------------------------------

#: What the confirmation and the JSON answer call each action's jobs.
NOUNS = {"dismiss": "failures to dismiss", "retry": "failed jobs to retry",
         "cancel": "jobs to cancel"}
#: Jobs named one by one on the confirmation page.
NAMED = 20


def routes():
    from zasync.web.app import Route
    return [
        Route(("POST",), r"/bulk(?:/(?P<action>[a-z]+))?", bulk_form),
        Route(("POST",), r"/api/bulk/(?P<action>[a-z]+)", bulk_api, api=True),
    ]


def _ids(values):
    """The job ids given, checked; raise ActionError(400) on a malformed
    one or too many."""
    from zasync.web.app import JOB_ID
    ids = []
    for value in values:
        if not isinstance(value, str) or not JOB_ID.fullmatch(value):
            raise ActionError(400, f"job id {str(value)[:100]!r} is not a job id")
        if value not in ids:
            ids.append(value)
    if len(ids) > BULK_LIMIT:
        raise ActionError(400, f"{len(ids)} job ids: at most {BULK_LIMIT} are "
                               f"acted on at once")
    return ids


def _checked(ctx, action, ids):
    """(jobs, not_found_or_not_applicable) among `ids`."""
    jobs, other = [], 0
    for job_id in ids:
        job = ctx.container.find_job(job_id)
        if job is not None and applies(action, job):
            jobs.append(job)
        else:
            other += 1
    return jobs, other


def bulk_form(ctx, action=None):
    """POST /bulk/ACTION (or /bulk with the action in the form) from the
    jobs list or the banner: first a page asking to confirm, with the
    count; its form posts the ids it counted, with confirm=yes."""
    from zasync.web.app import safe_next
    from zasync.web.pages import refusal as page_refusal
    from zasync.web.present import LABELS, JobView
    from zasync.web.survey import FilterError, Filters
    form = ctx.request.POST
    action = action or form.get("action", "")
    if action not in BULK_ACTIONS:
        return ctx.render("message.pt", status=404, title="Not found",
                          heading="No such bulk action",
                          message=f"No bulk action {action[:40]!r}: expected one of "
                                  f"{', '.join(BULK_ACTIONS)}.")
    refused = page_refusal(ctx, f"{action} jobs")
    if refused is not None:
        return refused
    next_path = safe_next(form.get("next"), "/jobs")
    back = ctx.url(next_path)
    try:
        if form.get("confirm") == "yes":
            result = perform_bulk(ctx.app.db, action, _ids(form.getall("job")))
            return ctx.redirect(next_path, done="bulk-" + action,
                                count=str(len(result["done"])),
                                skipped=str(len(result["skipped"])) if result["skipped"]
                                else None, job=None)
        if form.get("scope") == "all":
            try:
                filters = Filters(form, ctx.container.keys())
            except FilterError as error:
                raise ActionError(400, str(error)) from None
            jobs, more = matching(ctx.container, filters, action)
            other = 0
        else:
            jobs, other = _checked(ctx, action, _ids(form.getall("job")))
            more = False
    except ActionError as error:
        done = getattr(error, "done", None)
        message = error.message
        if done:
            message += f" ({len(done)} jobs were done before this.)"
        return ctx.render("message.pt", status=error.status, title="Not done",
                          heading=f"Could not {action} the jobs", message=message,
                          back=back)
    return ctx.render("bulk.pt", title=f"{LABELS[action]} jobs", action=action,
                      label=LABELS[action], noun=NOUNS[action],
                      jobs=[JobView(job, ctx.now) for job in jobs[:NAMED]],
                      ids=[job.id for job in jobs], count=len(jobs), more=more,
                      other=other, limit=BULK_LIMIT, scope=form.get("scope"),
                      next=next_path, back=back)


def _api_request(ctx):
    """(ids or None, filter params or None, dry_run) from a JSON body
    ({"ids": [...]} or {"all": true, "filter": {...}}) or form fields
    (id=... repeated, or all=yes with the filter's fields)."""
    import json
    request = ctx.request
    if request.content_type == "application/json":
        try:
            body = json.loads(request.body or b"{}")
        except ValueError as error:
            raise ActionError(400, f"the body is not JSON: {error}") from None
        if not isinstance(body, dict):
            raise ActionError(400, "expected a JSON object with 'ids', or 'all' and "
                                   "'filter'")
        ids = body.get("ids")
        every = body.get("all") is True
        params = body.get("filter") or {}
        if not isinstance(params, dict) or not all(
                isinstance(value, str) for value in params.values()):
            raise ActionError(400, "'filter' must be an object of strings, as the "
                                   "query of /api/jobs")
        if ids is not None and not isinstance(ids, list):
            raise ActionError(400, f"'ids' must be a list of job ids, not {ids!r:.60}")
        dry_run = body.get("dry_run") is True
    else:
        params = request.params
        ids = params.getall("id") or None
        every = params.get("all") == "yes"
        dry_run = params.get("dry_run") == "yes"
    if ids is not None and every:
        raise ActionError(400, "give either ids or all with a filter, not both")
    if ids is None and not every:
        raise ActionError(400, "name the jobs: ids, or all (with a filter) for "
                               f"every job that matches, at most {BULK_LIMIT}")
    return ids, (params if every else None), dry_run


def bulk_api(ctx, action):
    """POST /api/bulk/ACTION."""
    from zasync.web.api import fail, refusal
    from zasync.web.survey import FilterError, Filters
    if action not in BULK_ACTIONS:
        return fail(ctx, 404, f"no bulk action {action!r}; expected one of "
                              f"{', '.join(BULK_ACTIONS)}")
    refused = refusal(ctx)
    if refused is not None:
        return refused
    try:
        ids, params, dry_run = _api_request(ctx)
        more = False
        if params is not None:
            try:
                filters = Filters(params, ctx.container.keys())
            except FilterError as error:
                raise ActionError(400, str(error)) from None
            jobs, more = matching(ctx.container, filters, action)
            ids = [job.id for job in jobs]
        else:
            ids = _ids(ids)
        if dry_run:
            if params is None:
                ids = [job.id for job in _checked(ctx, action, ids)[0]]
            return ctx.json({"result": "ok", "action": action, "dry_run": True,
                             "ids": ids, "count": len(ids), "more": more,
                             "limit": BULK_LIMIT})
        result = perform_bulk(ctx.app.db, action, ids)
    except ActionError as error:
        response = fail(ctx, error.status, error.message)
        done = getattr(error, "done", None)
        if done is not None:
            response.json_body = dict(response.json_body, done=done)
        return response
    count = len(result["done"])
    return ctx.json({
        "result": "ok", "action": action, "done": result["done"],
        "skipped": result["skipped"], "count": count, "more": more,
        "limit": BULK_LIMIT,
        "message": f"{action}: {count} done, {len(result['skipped'])} skipped"
                   + (f"; more match beyond the limit of {BULK_LIMIT}: repeat"
                      if more else ""),
    })
