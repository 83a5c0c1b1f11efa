"""zasync in a real Pyramid application (pyramid_tm, pyramid_zodbconn,
served by waitress) with the queues in a separate 'async' database: many
requests at once each put a job in their own transaction, and every job
runs once; a request that fails after its put leaves no job."""

import concurrent.futures
import threading
import urllib.error
import urllib.request

import pytest
from waitress.server import create_server

import zasync
import zasync.integration.pyramid
from zasync.integration import subscriber
from zasync import testing

import multidb_jobs

REQUESTS = 64
SERVER_THREADS = 32
TIMEOUT = 60


@pytest.fixture
def app(tmp_path):
    import pyramid_app
    pool = f"connection_pool_size={REQUESTS + 16}"
    app = pyramid_app.make_app({
        "zodbconn.uri": f"file://{tmp_path}/main.fs?{pool}",
        "zodbconn.uri.async": f"file://{tmp_path}/async.fs?{pool}",
        "zasync.threads": "4",
        "zasync.poll_interval": "0.05",
    })
    yield app
    subscriber.stop()
    zasync.close_databases(zasync.integration.pyramid.databases(app.registry))


@pytest.fixture
def served(app):
    """The application served by waitress on a free loopback port."""
    server = create_server(app, host="127.0.0.1", port=0, threads=SERVER_THREADS)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.effective_port}"
    server.close()
    thread.join(TIMEOUT)


def _post(url):
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="POST"),
                                    timeout=TIMEOUT) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_the_databases_are_pyramid_zodbconns(app):
    found = zasync.integration.pyramid.databases(app.registry)
    assert sorted(found) == ["", "async"]
    assert zasync.integration.pyramid.queue_database_name(app.registry) == "async"
    dispatcher = subscriber.get_dispatcher(found["async"])
    assert dispatcher.running and dispatcher.db is found["async"]


def _post_all(urls, at_once):
    with concurrent.futures.ThreadPoolExecutor(at_once) as pool:
        return list(pool.map(_post, urls))


def test_concurrent_requests_put_jobs_in_their_transactions(app, served):
    found = zasync.integration.pyramid.databases(app.registry)
    multidb_jobs.add_targets(found[""], REQUESTS)
    # A first round, a few requests at a time, and its jobs run: zasync's
    # connections have come and gone meanwhile.
    first = [f"{served}/put/{i}" for i in range(REQUESTS)]
    assert _post_all(first, 4) == [200] * REQUESTS
    testing.wait_for_idle(found["async"], timeout=TIMEOUT)
    # Then all at once, with requests that fail after their put: the server
    # opens new connections to the main database, which reach 'async'.
    second = first + [f"{served}/fail/{i}" for i in range(0, REQUESTS, 8)]
    statuses = _post_all(second, len(second))
    assert statuses == [200] * REQUESTS + [500] * (REQUESTS // 8)
    testing.wait_for_idle(found["async"], timeout=TIMEOUT)
    assert multidb_jobs.runs(found[""]) == {i: 2 for i in range(REQUESTS)}


@pytest.mark.parametrize("settings, expected", [
    ({"zasync.queue.database": "jobs"}, "zasync.queue.database = 'jobs': pyramid_zodbconn opened "
                                  "no database of that name; expected one of '', 'async'"),
    ({"zasync.threads": "many"}, "zasync.threads = 'many': expected an integer of 0"),
    ({"zasync.poll_interval": "0"}, "zasync.poll_interval = '0': expected a number"),
])
def test_bad_settings_are_refused_with_a_reason(tmp_path, settings, expected):
    from pyramid.config import Configurator
    config = Configurator(settings={
        "zodbconn.uri": f"file://{tmp_path}/main.fs",
        "zodbconn.uri.async": f"file://{tmp_path}/async.fs", **settings})
    config.include("pyramid_zodbconn")
    try:
        with pytest.raises(zasync.ConfigurationError) as raised:
            config.include("zasync.integration.pyramid")
        assert expected in str(raised.value)
    finally:
        zasync.close_databases(zasync.integration.pyramid.databases(config.registry))


def test_zasync_without_pyramid_zodbconn_says_what_to_include():
    from pyramid.config import Configurator
    with pytest.raises(zasync.ConfigurationError, match="include pyramid_zodbconn"):
        Configurator(settings={}).include("zasync.integration.pyramid")
