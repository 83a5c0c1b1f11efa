"""Fixtures shared by the test modules: real storages, real servers."""

import collections
import os
import threading

import pytest

import zasync
from zasync.testing import ZEOServer, installed_db


# -- the longest tests: first, and saying why ------------------------------------
#
# The suite runs in parallel processes (pytest-xdist: ``pytest -n auto``, the
# command of README.rst).  A test that takes long is marked
# ``@pytest.mark.slow(reason="why it takes long")``, with ``seconds=`` if it
# takes far longer than the others; the slow tests are collected first, the
# longest first, so that one process starts them at once while the others
# run the rest (started last, the longest test would run alone at the end).
# The first is followed by a unit test: xdist's worksteal keeps the test
# after the running one on its process, and a slow one would wait there.
# The run ends with the list of the tests that took more than LONG_TEST
# seconds, each with its reason, or with "no reason given" for one that
# should say why or become faster.

#: Seconds beyond which a test must say why it takes that long.
LONG_TEST = 10.0


def _slow_reason(item):
    marker = item.get_closest_marker("slow")
    if marker is None:
        return None
    return marker.kwargs.get("reason") or (marker.args[0] if marker.args else "")


def pytest_collection_modifyitems(config, items):
    for item in items:
        reason = _slow_reason(item)
        if reason is not None:
            # a report carries its item's user_properties, also from an
            # xdist worker to the process that prints the summary
            item.user_properties.append(("slow", reason))

    def order(item):
        marker = item.get_closest_marker("slow")
        if marker is None:
            return (1, 0)
        return (0, -marker.kwargs.get("seconds", 0))
    # A stable sort: every xdist worker must collect the same order.
    items.sort(key=order)
    # A test that needs no fixture is a unit test: quick.
    quick = next((index for index, item in enumerate(items)
                  if item.get_closest_marker("slow") is None
                  and getattr(item, "fixturenames", None) == []), None)
    if quick is not None and quick > 1:
        items.insert(1, items.pop(quick))


def pytest_terminal_summary(terminalreporter):
    seconds = collections.defaultdict(float)
    reasons = {}
    for reports in terminalreporter.stats.values():
        for report in reports:
            if isinstance(report, pytest.TestReport):
                seconds[report.nodeid] += report.duration   # setup, call, teardown
                reasons.update({report.nodeid: value for name, value
                                in report.user_properties if name == "slow"})
    long = sorted(((took, nodeid) for nodeid, took in seconds.items()
                   if took > LONG_TEST), reverse=True)
    if not long:
        return
    # On a loaded machine more tests take long: the load says how much.
    load = ", ".join(f"{each:.1f}" for each in os.getloadavg())
    terminalreporter.section(f"tests that took more than {LONG_TEST:.0f} s, and why "
                             f"(load average {load} on {os.cpu_count()} cores)")
    for took, nodeid in long:
        reason = reasons.get(nodeid) or (
            "NO REASON GIVEN: make it faster, or say why with "
            "@pytest.mark.slow(reason=...)")
        terminalreporter.write_line(f"{took:6.1f} s  {nodeid}")
        terminalreporter.write_line(f"          {reason}")


@pytest.fixture
def db(tmp_path):
    """A FileStorage database (which resolves conflicts, unlike
    MappingStorage) with the default queue and a 'mail' queue installed."""
    database = installed_db(str(tmp_path / "Data.fs"), queues=("", "mail"))
    yield database
    database.close()


@pytest.fixture
def dispatcher(db):
    """A running in-process dispatcher of 2 threads on the default queue."""
    with zasync.Dispatcher(db, threads=2, poll_interval=0.05) as running:
        yield running


class _SpareZEOServer:
    """The ZEO server of the next test that needs one, started in a thread
    while the tests before it run.

    A server takes a second or so to start (a new interpreter that imports
    ZODB and ZEO, then listens); started ahead, a test finds it listening.
    Each test still gets a server of its own, with a new file: sharing one
    server between tests would share their queues and dispatchers' records.
    """

    def __init__(self, tmp_path_factory):
        self.tmp_path_factory = tmp_path_factory
        self.server = self.thread = self.error = None

    def prepare(self):
        server = ZEOServer(str(self.tmp_path_factory.mktemp("zeo") / "Data.fs"))

        def start():
            try:
                server.start()
            except Exception as error:
                self.error = error

        self.server, self.error = server, None
        self.thread = threading.Thread(target=start, name="spare ZEO server", daemon=True)
        self.thread.start()

    def take(self):
        """The spare server, listening; the next one starts meanwhile."""
        if self.thread is None:
            self.prepare()
        self.thread.join()
        server, error = self.server, self.error
        self.prepare()
        if error is not None:
            server.stop()
            raise error
        return server

    def discard(self):
        if self.thread is not None:
            self.thread.join()
            self.server.stop()


@pytest.fixture(scope="session")
def _spare_zeo_server(tmp_path_factory):
    spare = _SpareZEOServer(tmp_path_factory)
    yield spare
    spare.discard()


@pytest.fixture
def zeo_server(_spare_zeo_server):
    """A real ZEO server on a free loopback port, of this test alone and
    serving a new FileStorage (`zeo_server.path`), stopped by its pid.  It
    was started while the tests before ran (`_SpareZEOServer`)."""
    server = _spare_zeo_server.take()
    yield server
    server.stop()


@pytest.fixture
def zeo_db(zeo_server):
    """A database over the ZEO server, with zasync installed."""
    database = installed_db(zeo_server.uri, queues=("", "mail"))
    yield database
    database.close()


@pytest.fixture
def producer(db):
    """An application's connection that puts jobs, one transaction each
    (modules that still define their own fixture of this name use theirs)."""
    from scenario_jobs import Producer, opened
    yield from opened(Producer, db)


@pytest.fixture
def viewer(db):
    """A connection that reads each time in a fresh transaction."""
    from scenario_jobs import Viewer, opened
    yield from opened(Viewer, db)


@pytest.fixture
def zeo_producer(zeo_db):
    """`producer` on the ZEO database."""
    from scenario_jobs import Producer, opened
    yield from opened(Producer, zeo_db)


@pytest.fixture
def zeo_viewer(zeo_db):
    """`viewer` on the ZEO database."""
    from scenario_jobs import Viewer, opened
    yield from opened(Viewer, zeo_db)


@pytest.fixture
def process_workers():
    """Start worker processes with `process_workers.start(log, uri, *options)`
    (`process_jobs.Workers`); each is stopped by its pid at the end."""
    from process_jobs import Workers
    with Workers() as started:
        yield started


# -- worker processes over the ZEO server (tests/recovery_jobs.py) -------------

@pytest.fixture
def folder(tmp_path):
    """Where the jobs and the test meet (start and release files, run logs)."""
    path = tmp_path / "jobs"
    path.mkdir()
    return str(path)


@pytest.fixture
def client(zeo_db):
    """The test's own view of the ZEO database (see `recovery_jobs.Client`)."""
    from recovery_jobs import Client
    opened = Client(zeo_db)
    yield opened
    opened.close()


@pytest.fixture
def workers(tmp_path, zeo_server):
    """Worker processes on the ZEO server, all stopped by pid at the end."""
    from recovery_jobs import Workers
    started = Workers(tmp_path, zeo_server.uri)
    try:
        yield started
    finally:
        started.end_all()
