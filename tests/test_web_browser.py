"""The web view end to end, as an operator sees it: `python -m zasync web`
and a worker process over a real ZEO server, driven in Debian's headless
Chromium by Playwright.

The browser is /usr/bin/chromium (``apt-get install chromium``); nothing
is downloaded.  Without it these tests skip, unless ZASYNC_REQUIRE_BROWSER=1
(as in CI), where they fail.  Each test saves screenshots of the pages it
visits in tests/screenshots/ (not in git), to look at.
"""

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

import zasync
from zasync.testing import free_port

import web_jobs

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-dev-shm-usage", "--no-first-run", "--disable-extensions"]
TOKEN = "browser-t0ken"
TIMEOUT = 30.0
TESTS = os.path.dirname(os.path.abspath(__file__))
SCREENSHOTS = os.path.join(TESTS, "screenshots")


def _missing():
    """Why the browser cannot run here, or None."""
    if not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} is not installed (apt-get install chromium)"
    if importlib.util.find_spec("playwright") is None:
        return "playwright is not installed (pip install -e '.[test]')"
    return None


@pytest.fixture
def browser_page():
    """A page of a headless Chromium, closed after the test."""
    reason = _missing()
    if reason:
        if os.environ.get("ZASYNC_REQUIRE_BROWSER") == "1":
            pytest.fail(f"ZASYNC_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason + "; set ZASYNC_REQUIRE_BROWSER=1 to fail instead")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            page.set_default_timeout(TIMEOUT * 1000)
            page.dialogs = []

            def on_dialog(dialog):
                page.dialogs.append((dialog.type, dialog.message))
                if dialog.type == "confirm":
                    dialog.accept()
                else:
                    dialog.dismiss()
            page.on("dialog", on_dialog)
            yield page
        finally:
            browser.close()


class Child:
    """A child process with its output in a log file, stopped by its pid."""

    def __init__(self, args, log_path, env):
        self.log_path = log_path
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, *args], stdout=log, stderr=subprocess.STDOUT, env=env)

    def alive(self):
        return self.process.poll() is None

    def log(self):
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def stop(self):
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait()


def wait_until(predicate, what, timeout=TIMEOUT):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s")
        time.sleep(0.05)


def get_json(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return json.load(reply)
    except (OSError, ValueError):
        return None


class Stack:
    """A worker and `zasync web` on a ZEO server, and a producer's DB."""

    def __init__(self, zeo_server, zeo_db, tmp_path, web_imports_jobs):
        self.db = zeo_db
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        # The worker imports web_jobs.  The web view reads jobs without
        # their code, but needs it to store a job it changed (dismiss,
        # retry, remove, cancel a pending job), as a worker does.
        worker_env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [TESTS] + [p for p in sys.path if p and p != TESTS]), PYTHONUNBUFFERED="1")
        web_env = dict(worker_env if web_imports_jobs else os.environ,
                       PYTHONUNBUFFERED="1")
        if not web_imports_jobs:
            web_env.pop("PYTHONPATH", None)
        self.children = []
        self.worker = self._start(
            ["-m", "zasync", "worker", "--db", zeo_server.uri, "--threads", "3",
             "--uuid-file", str(tmp_path / "worker.uuid"), "--poll-interval", "0.1",
             "--ping-interval", "2"], tmp_path / "worker.log", worker_env)
        self.web = self._start(
            ["-m", "zasync", "web", "--db", zeo_server.uri, "--bind",
             f"127.0.0.1:{self.port}", "--token", TOKEN, "--refresh", "1"],
            tmp_path / "web.log", web_env)
        wait_until(self._ready, "the worker registering and the web view answering")

    def _start(self, args, log_path, env):
        child = Child(args, str(log_path), env)
        self.children.append(child)
        return child

    def _ready(self):
        for child in self.children:
            assert child.alive(), f"{child.log_path} ended:\n{child.log()}"
        workers = get_json(self.base + "/api/workers")
        return bool(workers) and any(w["health"] == "alive" for w in workers["workers"])

    def put(self, func, *args):
        with self.db.transaction() as conn:
            job = zasync.get_queue(conn).put(zasync.Job(func, *args))
        return job

    def stop(self):
        for child in reversed(self.children):
            child.stop()


@pytest.fixture
def start_stack(zeo_server, zeo_db, tmp_path):
    """start_stack(web_imports_jobs) starts the stack; it stops after the
    test, whose web view must not have logged a traceback."""
    started = []

    def start(web_imports_jobs):
        started.append(Stack(zeo_server, zeo_db, tmp_path, web_imports_jobs))
        return started[0]
    yield start
    for stack in started:
        stack.stop()
        log = stack.web.log()
        assert "Traceback" not in log, f"{stack.web.log_path}:\n{log}"


def shot(page, name):
    os.makedirs(SCREENSHOTS, exist_ok=True)
    page.screenshot(path=os.path.join(SCREENSHOTS, name + ".png"), full_page=True)


def fill_width(page, job_id):
    return page.evaluate(
        """(id) => {
            const el = document.querySelector(`article.running-job[data-job="${id}"] .fill`);
            return el ? el.getBoundingClientRect().width : null;
        }""", job_id)


def log_in(page, base):
    page.goto(base + "/login?next=/running")
    shot(page, "login")
    page.fill("#token", TOKEN)
    page.click("#login-form button[type=submit]")
    page.wait_for_selector(".notice")
    assert "Logged in" in page.inner_text(".notice")


@pytest.mark.slow(reason="watches a job of about 10 s (40 steps of 0.25 s) move its "
                         "progress bar and complete, in Chromium, over a worker and "
                         "`zasync web` processes")
def test_progress_moves_and_pages_update_themselves(browser_page, start_stack):
    """Here the web view cannot import the jobs' code: it reads them, and
    cancelling a running job writes only its live state."""
    stack = start_stack(web_imports_jobs=False)
    page = browser_page
    job = stack.put(web_jobs.crawl, 40, 0.25)      # about 10 s

    page.goto(stack.base + "/running")
    page.evaluate("() => { window.notReloaded = true; }")
    selector = f'article.running-job[data-job="{job.id}"] .fill'
    page.wait_for_selector(selector)
    first = fill_width(page, job.id)
    page.wait_for_function(
        """([id, first]) => {
            const el = document.querySelector(`article.running-job[data-job="${id}"] .fill`);
            return el && el.getBoundingClientRect().width > first + 2;
        }""", arg=[job.id, first])
    second = fill_width(page, job.id)
    assert second > first
    assert "step" in page.inner_text(f'article.running-job[data-job="{job.id}"] p.message')
    assert page.evaluate("() => window.notReloaded") is True
    shot(page, "running")

    # the job's page shows it running, then completed, without a reload
    page.goto(f"{stack.base}/jobs/{job.id}")
    page.evaluate("() => { window.notReloaded = true; }")
    assert page.inner_text(".job-status .badge").startswith("active")
    shot(page, "job-running")
    page.wait_for_function(
        """() => document.querySelector('.job-status .badge').textContent.includes('completed')""",
        timeout=TIMEOUT * 1000)
    assert page.evaluate("() => window.notReloaded") is True
    assert page.inner_text("pre.value").strip() == "40"
    assert page.inner_text(".progress-line .percent") == "100.0 %"
    shot(page, "job-completed")

    # cancelling a running job from its card, once logged in
    long_job = stack.put(web_jobs.crawl, 200, 0.25)
    log_in(page, stack.base)
    page.wait_for_selector(f'article.running-job[data-job="{long_job.id}"] .btn-cancel')
    page.click(f'article.running-job[data-job="{long_job.id}"] .btn-cancel')
    assert ("confirm", "Cancel this job?") in page.dialogs
    page.wait_for_selector(".notice")
    finished = zasync.wait_for(long_job, timeout=TIMEOUT)
    assert finished.cancelled
    page.goto(f"{stack.base}/jobs/{long_job.id}")
    assert "Cancelled" in page.inner_text("section.failure .exception")
    shot(page, "job-cancelled")
    assert [d for d in page.dialogs if d[0] != "confirm"] == []


@pytest.mark.slow(reason="starts Chromium, a worker and `zasync web` processes, runs three "
                         "jobs and walks six pages, logging in and dismissing on the way")
def test_failures_in_the_banner_escaping_refusal_and_dismissal(browser_page, start_stack):
    stack = start_stack(web_imports_jobs=True)
    page = browser_page
    failed = zasync.wait_for(stack.put(web_jobs.fail_with_html), timeout=TIMEOUT)
    done = zasync.wait_for(stack.put(web_jobs.add, 2, 3), timeout=TIMEOUT)
    assert failed.failed and done.result == 5

    page.goto(stack.base + "/")
    assert page.inner_text("#banner .n-failed") == "1"
    item = f'#banner .failures li[data-job="{failed.id}"]'
    assert not page.is_visible(item)          # counts first, the details on demand
    page.click("#banner details.failures summary")
    assert "<script>alert(1)</script>" in page.inner_text(item + " .failure-text")
    assert page.locator("b.injected").count() == 0
    shot(page, "overview")

    page.goto(f"{stack.base}/jobs/{failed.id}")
    assert page.inner_text(".exception .failure-text") == web_jobs.HTML_MESSAGE
    assert "raise RuntimeError(HTML_MESSAGE)" in page.inner_text("pre.traceback")
    assert page.locator("b.injected").count() == 0
    shot(page, "job-failed")

    page.goto(stack.base + "/jobs")
    assert page.locator("tr[data-job]").count() == 2
    shot(page, "jobs")
    page.goto(stack.base + "/workers")
    assert page.inner_text("article.worker .badge") == "alive"
    shot(page, "workers")

    # not logged in: no dismiss button, and the API refuses
    page.goto(stack.base + "/")
    assert page.locator(item + " button.close").count() == 0
    reply = page.request.post(f"{stack.base}/api/jobs/{failed.id}/dismiss")
    assert reply.status == 401 and reply.json()["result"] == "fail"
    page.goto(stack.base + "/")
    assert page.inner_text("#banner .n-failed") == "1"

    # logged in, dismissing removes it from the banner
    log_in(page, stack.base)
    page.goto(stack.base + "/")
    # open the details and click in one task: a live update in between
    # (the worker pings every 2 s) would put a closed banner in place
    page.evaluate("""(sel) => {
        const li = document.querySelector(sel);
        li.closest("details").open = true;
        li.querySelector("button.close").click();
    }""", item)
    page.wait_for_selector(".notice")
    assert "dismissed" in page.inner_text(".notice")
    assert page.inner_text("#banner .n-failed") == "0"
    assert page.locator(item).count() == 0
    shot(page, "dismissed")

    # a new failure appears in the open page's banner by itself
    page.evaluate("() => { window.notReloaded = true; }")
    again = zasync.wait_for(stack.put(web_jobs.fail, "second <i>failure</i>"), timeout=TIMEOUT)
    page.wait_for_selector(f'#banner .failures li[data-job="{again.id}"]', state="attached")
    assert page.inner_text("#banner .n-failed") == "1"
    assert page.evaluate("() => window.notReloaded") is True
    assert "second <i>failure</i>" in page.text_content("#banner .failure-text")
    assert page.dialogs == []


#: The pages measured at each width, as (name, path); {group} and {part}
#: are filled in.
LAYOUT_PAGES = (("overview", "/"), ("jobs", "/jobs"), ("group", "/jobs/{group}"),
                ("part", "/jobs/{part}"), ("running", "/running"),
                ("workers", "/workers"), ("schedules", "/schedules"),
                ("filtered", "/jobs?state=failure"), ("login", "/login"))


def measure(page):
    """Widths the layout test asserts on, measured in the page."""
    return page.evaluate(
        """() => {
            const shown = (el) => el && getComputedStyle(el).display !== 'none'
                                  && el.getBoundingClientRect().width > 0;
            const nav = [...document.querySelectorAll('header.top nav a')];
            const row = document.querySelector('table.jobs tbody tr');
            return {
                scroll: document.documentElement.scrollWidth,
                navRight: Math.max(...nav.map((a) => a.getBoundingClientRect().right)),
                navRows: new Set(nav.map((a) => Math.round(a.getBoundingClientRect().top))).size,
                failuresShown: shown(document.querySelector('#banner .failures')),
                countsShown: shown(document.querySelector('#banner .counts')),
                bannerHeight: (document.querySelector('#banner') || {offsetHeight: 0}).offsetHeight,
                rowDisplay: row ? getComputedStyle(row).display : null,
                headShown: shown(document.querySelector('table.jobs thead')),
            };
        }""")


@pytest.mark.slow(reason="starts Chromium, a worker and `zasync web` processes, runs a "
                         "group, and screenshots eight pages at two widths")
def test_groups_and_the_layout_at_phone_and_desktop_widths(browser_page, start_stack, tmp_path):
    stack = start_stack(web_imports_jobs=True)
    page = browser_page
    parts = [zasync.Job(web_jobs.add, 1, 2), zasync.Job(web_jobs.fail, "part <b>two</b> failed"),
             zasync.Job(web_jobs.crawl, 2, 0.01)]
    with stack.db.transaction() as conn:
        group = zasync.get_queue(conn).put(zasync.parallel(*parts))
    group = zasync.wait_for(group, timeout=TIMEOUT)
    for text in ("a long argument " * 20, "another failure " * 10):
        zasync.wait_for(stack.put(web_jobs.fail, text), timeout=TIMEOUT)
    assert group.failed
    running = stack.put(web_jobs.crawl, 2000, 0.05)     # runs while the pages are measured
    wait_until(lambda: (get_json(f"{stack.base}/api/jobs/{running.id}") or {}).get("status")
               == "active", f"job {running.id} starting")

    # the group's page: its parts with links, status and progress; a part
    # links back to its group
    page.goto(f"{stack.base}/jobs/{group.id}")
    assert page.inner_text("h1") == "parallel group of 3: add, fail, crawl"
    rows = page.locator("table.parts tbody tr")
    assert rows.count() == 3
    assert [rows.nth(i).get_attribute("data-job") for i in range(3)] == [p.id for p in parts]
    assert "failure" in rows.nth(1).locator(".badge").inner_text()
    assert rows.nth(1).locator(".percent").inner_text() == "0.0 %"
    page.click(f'table.parts tr[data-job="{parts[1].id}"] a.callable')
    page.wait_for_selector("dd.group a")
    assert page.url.endswith(f"/jobs/{parts[1].id}")
    assert "part 2 of 3" in page.inner_text("dd.group")
    page.click("dd.group a")
    page.wait_for_selector("table.parts")
    assert page.url.endswith(f"/jobs/{group.id}")

    found = {}
    for width in (1280, 390):
        page.set_viewport_size({"width": width, "height": 860})
        for name, path in LAYOUT_PAGES:
            page.goto(stack.base + path.format(group=group.id, part=parts[1].id))
            page.wait_for_selector("main h1")
            found[width, name] = measure(page)
            page.screenshot(path=str(tmp_path / f"{name}-{width}.png"), full_page=True)
            # no horizontal scroll, and the nav inside the screen, at both widths
            assert found[width, name]["scroll"] <= width, (width, name, found[width, name])
            assert found[width, name]["navRight"] <= width, (width, name, found[width, name])

    for name, _ in LAYOUT_PAGES:
        wide, narrow = found[1280, name], found[390, name]
        # the banner: its failures on demand (a closed <details>) when wide,
        # only its counts, one row of them, on a phone
        assert wide["countsShown"] and narrow["countsShown"]
        assert wide["failuresShown"] and not narrow["failuresShown"], name
        assert narrow["bannerHeight"] < wide["bannerHeight"], name
        assert narrow["bannerHeight"] <= 60, (name, narrow)
        assert wide["navRows"] == 1, name
    # on a phone the jobs' rows are cards, without a header row
    for name in ("jobs", "group", "filtered"):
        assert found[1280, name]["rowDisplay"] == "table-row"
        assert found[1280, name]["headShown"]
        assert found[390, name]["rowDisplay"] == "block"
        assert not found[390, name]["headShown"]
    assert page.dialogs == []
    with stack.db.transaction() as conn:
        zasync.get_queues(conn).find_job(running.id).cancel()
    assert zasync.wait_for(running, timeout=TIMEOUT).cancelled


@pytest.mark.slow(reason="starts Chromium, a worker and `zasync web` processes and runs "
                         "five failing jobs before dismissing some in bulk")
def test_bulk_dismiss_of_a_filtered_list_with_the_confirmation(browser_page, start_stack):
    stack = start_stack(web_imports_jobs=True)
    page = browser_page
    html = [stack.put(web_jobs.fail_with_html) for _ in range(2)]
    plain = [stack.put(web_jobs.fail, f"plain {n}") for n in range(3)]
    for job in html + plain:
        assert zasync.wait_for(job, timeout=TIMEOUT).failed

    # not logged in: no bulk form; the login link comes back to the list
    filtered = stack.base + "/jobs?state=failure&callable=fail_with_html"
    page.goto(filtered)
    assert page.locator("#bulk-form").count() == 0
    page.click("header a.login")
    page.fill("#token", TOKEN)
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#bulk-form")
    assert "callable=fail_with_html" in page.url
    assert page.locator("tr[data-job]").count() == 2
    shot(page, "bulk-list")

    page.select_option("#bulk-form select[name=action]", "dismiss")
    page.click('#bulk-form button[value="all"]')
    page.wait_for_selector("#bulk-confirm")
    assert page.inner_text("main h1") == "Dismiss 2 jobs?"
    assert page.inner_text(".bulk-count") == "2"
    assert page.locator("b.injected").count() == 0
    shot(page, "bulk-confirm")
    page.click("#bulk-confirm button[type=submit]")
    page.wait_for_selector(".notice")
    assert page.inner_text(".notice") == "2 failures dismissed."
    assert "callable=fail_with_html" in page.url
    assert page.inner_text("#banner .n-failed") == "3"
    shot(page, "bulk-done")
    with stack.db.transaction() as conn:
        found = zasync.get_queues(conn)
        assert [found.find_job(job.id).dismissed for job in html] == [True, True]
        assert [bool(found.find_job(job.id).dismissed) for job in plain] == [False] * 3
    assert [d for d in page.dialogs if d[0] != "confirm"] == []
