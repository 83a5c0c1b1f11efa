"""Jobs for the web view's tests.  Workers in other processes import them,
with this folder on PYTHONPATH."""

import threading
import time

import zasync

#: The failure message of `fail_with_html`: the page must show it as text.
HTML_MESSAGE = '<script>alert(1)</script><b class="injected">bold</b> & "quotes"'


def add(a, b):
    return a + b


def fail(message):
    raise ValueError(message)


def fail_with_html():
    raise RuntimeError(HTML_MESSAGE)


def crawl(steps, pause):
    """Report progress `steps` times, `pause` seconds apart; stops early
    when cancelled (progress raises Cancelled)."""
    for step in range(steps):
        time.sleep(pause)
        zasync.progress((step + 1) / steps, f"step {step + 1} of {steps}")
    return steps


# In-process gates, for tests that hold a job running in a thread of
# their own process.
gates = {}


def hold(name, fraction=0.5, message="halfway"):
    """Report `fraction` progress, then wait until the test opens gate
    `name` (at most 60 s)."""
    zasync.progress(fraction, message)
    gate = gates.setdefault(name, threading.Event())
    gate.wait(60)
    zasync.check_cancelled()
    return name


def half_then_fail(message):
    """Report half the work done, then fail: the web view shows 50 %, not 100 %."""
    zasync.progress(0.5, "half way")
    raise ValueError(message)


def add_results(parts):
    """A group's postprocess: the sum of its parts' results."""
    return sum(part.result for part in parts)
def fail_once_then_crawl(marker, steps, pause):
    """Fail the first time (creating the file `marker`), then crawl: a job
    with an earlier attempt's traceback that then runs for a while."""
    import os
    if not os.path.exists(marker):
        with open(marker, "w"):
            pass
        raise ValueError("first attempt fails on purpose")
    return crawl(steps, pause)
