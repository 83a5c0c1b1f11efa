"""Live updates in Chromium that leave the reader alone: an open earlier
attempt's traceback stays open, a selection and the scroll position stay,
a running job's progress moves at least every 2 s, and once nothing shown
changes the page's polls answer 304 and nothing in it is touched.

The stack (a worker and `zasync web --refresh 1` over ZEO) and the
browser come from test_web_browser.py."""

import pytest
import transaction

import zasync

import web_jobs
from test_web_browser import TIMEOUT, browser_page, shot, start_stack  # noqa: F401

#: What the tests watch in the page: when the progress bar's width
#: changed, and every change to the live regions outside the relative
#: times, which the page's script counts itself.
WATCH = """() => {
    window.notReloaded = true;
    window.progressChanges = [];
    window.mutations = [];
    const fill = document.querySelector('.progress-line .fill');
    if (fill) {
        new MutationObserver(() => window.progressChanges.push(performance.now()))
            .observe(fill, {attributes: true, attributeFilter: ['style']});
    }
    const counted = (node) => {
        const element = node.nodeType === 1 ? node : node.parentElement;
        return element && element.closest('time.live-time');
    };
    new MutationObserver((records) => {
        for (const record of records) {
            if (!counted(record.target)) {
                window.mutations.push(record.type + ' ' + (record.target.nodeName || ''));
            }
        }
    }).observe(document.body, {subtree: true, childList: true, attributes: true,
                               characterData: true});
}"""

SELECT_TRACEBACK = """() => {
    const pre = document.querySelector('details.attempt pre.traceback');
    const range = document.createRange();
    range.selectNodeContents(pre);
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    return selection.toString();
}"""

SELECTED = """() => {
    const selection = window.getSelection();
    const node = selection.anchorNode;
    const element = node && (node.nodeType === 1 ? node : node.parentElement);
    return {text: selection.toString(),
            inside: !!(element && element.closest('details.attempt pre.traceback'))};
}"""


def retry(db, job_id):
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    try:
        for attempt in tm.attempts(10):
            with attempt:
                job = zasync.get_queues(conn).find_job(job_id)
                job.queue.retry(job)
    finally:
        tm.abort()
        conn.close()


def commit_elsewhere(db):
    """A commit that no page shows (the pages' summary sees a new
    transaction id)."""
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    try:
        for attempt in tm.attempts(10):
            with attempt:
                conn.root()["unrelated"] = conn.root().get("unrelated", 0) + 1
    finally:
        tm.abort()
        conn.close()


@pytest.mark.slow(reason="runs a job of about 12 s in a worker process and watches its "
                         "page update in Chromium, then waits for quiet polls")
def test_updates_keep_what_the_reader_has_open_and_skip_unchanged_pages(
        browser_page, start_stack, tmp_path):
    stack = start_stack(web_imports_jobs=False)
    page = browser_page
    job = stack.put(web_jobs.fail_once_then_crawl, str(tmp_path / "failed-once"), 40, 0.3)
    assert zasync.wait_for(job, timeout=TIMEOUT).failed
    retry(stack.db, job.id)

    page.goto(f"{stack.base}/jobs/{job.id}")
    page.wait_for_function(
        "() => document.querySelector('.job-status .badge').textContent.includes('active')"
        " && document.querySelector('.progress-line .percent').textContent !== '0.0 %'")
    page.click("details.attempt summary")
    assert page.evaluate("() => document.querySelector('details.attempt').open") is True
    selected = page.evaluate(SELECT_TRACEBACK)
    assert "first attempt fails on purpose" in selected
    page.evaluate("() => window.scrollTo(0, document.body.scrollHeight)")
    scrolled = page.evaluate("() => window.scrollY")
    assert scrolled > 0
    page.evaluate(WATCH)
    started = page.evaluate("() => performance.now()")

    # the running job's page changes under the reader several times
    page.wait_for_function("() => window.progressChanges.length >= 4")
    assert page.evaluate("() => document.querySelector('details.attempt').open") is True
    assert page.evaluate(SELECTED) == {"text": selected, "inside": True}
    assert page.evaluate("() => window.scrollY") == scrolled
    shot(page, "live-open-attempt")

    # ... until it completes; the progress moved at least every 2 s
    page.wait_for_function(
        "() => document.querySelector('.job-status .badge').textContent.includes('completed')",
        timeout=TIMEOUT * 1000)
    changes = page.evaluate("() => window.progressChanges")
    gaps = [(b - a) / 1000 for a, b in zip([started] + changes, changes)]
    assert max(gaps) <= 2.0, gaps
    assert page.evaluate("() => document.querySelector('details.attempt').open") is True
    assert page.evaluate(SELECTED) == {"text": selected, "inside": True}
    assert page.evaluate("() => window.notReloaded") is True
    assert page.inner_text("pre.value").strip() == "40"

    # quiet now: a commit elsewhere makes the page ask again, and the
    # answer is a 304 that changes nothing
    answers = []
    page.on("response", lambda response: answers.append(
        (response.url, response.status, response.request.headers.get("if-none-match"))))
    own = f"{stack.base}/jobs/{job.id}"
    page.evaluate("() => { window.mutations = []; }")
    seen = len(answers)
    with page.expect_response(lambda response: response.url == own
                              and response.status == 304) as reply:
        commit_elsewhere(stack.db)
    assert reply.value.request.headers.get("if-none-match")
    # and while nothing is committed, the poll of the summary is a 304 too
    with page.expect_response(lambda response: response.url.endswith("/api/summary")
                              and response.status == 304):
        pass
    assert [a for a in answers[seen:] if a[0] == own and a[1] == 200] == []
    assert page.evaluate("() => window.mutations") == []
    assert page.evaluate(SELECTED) == {"text": selected, "inside": True}
    assert page.evaluate("() => window.notReloaded") is True
    assert page.dialogs == []
