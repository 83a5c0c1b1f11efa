"""A multi-database: the application's 'main' database, and the queues
either in it or in a separate 'async' database.  Application requests put
jobs that refer to main-database objects while zasync's dispatcher runs
them; no request's commit may fail, and every job runs once."""

import concurrent.futures
import json
import threading

import pytest

import zasync
import zasync.queue.multidb
from zasync.queue import database
from zasync import testing

import multidb_jobs

REQUESTS = 64
REQUEST_THREADS = 8
TIMEOUT = 60
#: Connections each database keeps without a warning: the requests held
#: open at once, and the dispatcher's.
POOL = REQUESTS + 16


@pytest.fixture(params=["main", "async"])
def layout(request):
    """Where the queues are: in the main database, or in 'async'."""
    return request.param


@pytest.fixture
def filestorage_multidb(tmp_path):
    db = testing.open_multidb(tmp_path, names=("main", "async"), pool_size=POOL)
    yield db
    testing.close_multidb(db)


@pytest.fixture
def zeo_multidb(tmp_path):
    """One real ZEO server serving two storages, 'main' and 'async', and
    the multi-database of this process over it."""
    with testing.ZEOServer(folder=str(tmp_path), storages=("main", "async")) as server:
        db = zasync.open_databases(server.uris, pool_size=POOL)
        yield db
        zasync.close_databases(db)


def _run_requests(main_db, count=REQUESTS, threads=REQUEST_THREADS, hold=False,
                  queue_of=lambda i: ""):
    """`count` requests from `threads` request threads at once, each in a
    connection of its own to the main database; with `hold`, every request
    keeps its connection open until all have committed (so `count`
    connections are open at once).  Return (job oids, errors)."""
    done = threading.Barrier(count, timeout=TIMEOUT) if hold else None
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        outcomes = list(pool.map(
            lambda i: multidb_jobs.request(main_db, i, done and done.wait, queue_of(i)),
            range(count)))
    oids = [oid for oid, error in outcomes if error is None]
    errors = [repr(error) for oid, error in outcomes if error is not None]
    return oids, errors


def _check_requests_and_runs(main_db, layout):
    queue_db = main_db.databases[layout]
    zasync.install(queue_db)
    multidb_jobs.add_targets(main_db, REQUESTS)
    with testing.running_dispatcher(queue_db, threads=4):
        # A first round from a few request threads, each closing its
        # connection when done: the application's pool stays small.
        oids, errors = _run_requests(main_db)
        assert errors == []
        testing.wait_for_idle(queue_db, timeout=TIMEOUT)
        # A second round of requests all at once, now that the dispatcher
        # has run jobs and closed connections: the application opens new
        # connections, which reach the queues' database anew.
        oids2, errors2 = _run_requests(main_db, threads=REQUESTS, hold=True)
        assert errors2 == []
        testing.wait_for_idle(queue_db, timeout=TIMEOUT)
    assert len(oids) == len(oids2) == REQUESTS
    assert multidb_jobs.runs(main_db) == {i: 2 for i in range(REQUESTS)}


def test_concurrent_requests_on_a_filestorage_multidb(filestorage_multidb, layout):
    _check_requests_and_runs(filestorage_multidb, layout)


def test_concurrent_requests_on_a_zeo_multidb(zeo_multidb, layout):
    _check_requests_and_runs(zeo_multidb, layout)


def test_requests_keeping_their_connections_open(filestorage_multidb):
    """The issue's reproduction: one main connection after another, the
    earlier ones kept open (as request threads keep theirs), each putting a
    job for an existing main object while the dispatcher serves 'async'."""
    import transaction
    main_db = filestorage_multidb
    queue_db = main_db.databases["async"]
    zasync.install(queue_db)
    multidb_jobs.add_targets(main_db, 16)
    opened, failed = [], []
    with testing.running_dispatcher(queue_db, threads=2):
        for i in range(16):
            tm = transaction.TransactionManager()
            conn = main_db.open(transaction_manager=tm)
            opened.append(conn)
            tm.begin()
            job = zasync.integration.component.find_queues(conn)[""].put(
                multidb_jobs.touch, conn.root()["targets"][i])
            try:
                tm.commit()
            except Exception as error:
                tm.abort()
                failed.append(repr(error))
            else:
                zasync.wait_for(job, timeout=TIMEOUT)
        for conn in opened:
            conn.close()
    assert failed == []
    assert multidb_jobs.runs(main_db) == {i: 1 for i in range(16)}


def test_the_root_database_is_the_first_of_the_multidb(filestorage_multidb):
    main_db = filestorage_multidb
    queue_db = main_db.databases["async"]
    assert database.root_database(queue_db) is main_db
    assert database.root_database(main_db) is main_db
    conn = database.open_connection(queue_db)
    try:
        assert conn.db() is queue_db
        primary = conn.connections["main"]
        assert primary.db() is main_db and primary.get_connection("async") is conn
    finally:
        database.close_connection(conn)
    # Back in the main pool, with its group; the async pool holds nothing
    # an application could take as a primary connection.
    assert primary.opened is None and len(queue_db.pool.available) == 0


# -- workers in other processes, over one ZEO server with two storages ----------

WORKER_JOBS = 24


@pytest.fixture
def zeo_two_storages(tmp_path):
    server = testing.ZEOServer(folder=str(tmp_path), storages=("main", "async"))
    server.start()
    yield server
    server.stop()


def _cli(*args):
    from click.testing import CliRunner

    from zasync.cli.cli import main
    # Wide enough that no table cell or message is wrapped.
    result = CliRunner().invoke(main, list(args), catch_exceptions=False,
                                env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    return result.stdout


def _db_options(server):
    return ("--db", f"main={server.uri_for('main')}",
            "--db", f"async={server.uri_for('async')}", "--queue-db", "async")


def test_workers_over_zeo_run_jobs_whose_arguments_live_in_main(
        tmp_path, zeo_two_storages, process_workers):
    from process_jobs import wait_until
    server = zeo_two_storages
    db = zasync.open_databases(server.uris, pool_size=POOL)
    try:
        zasync.install(db.databases["async"], ("", "mail"))
        multidb_jobs.add_targets(db, WORKER_JOBS)
        # One worker of threads on the default queue and one of child
        # processes on 'mail', each opening both databases under the
        # application's names.
        for index, extra in enumerate([("--queue", ""), ("--queue", "mail", "--processes")]):
            process_workers.start(
                str(tmp_path / f"worker{index}.log"), f"main={server.uri_for('main')}",
                "--db", f"async={server.uri_for('async')}", "--queue-db", "async",
                "--threads", "2", "--poll-interval", "0.05",
                "--uuid-file", str(tmp_path / f"worker{index}.uuid"), *extra)
        oids, errors = _run_requests(db, count=WORKER_JOBS,
                                     queue_of=lambda i: "mail" if i % 2 else "")
        assert errors == [] and len(oids) == WORKER_JOBS
        wait_until(lambda: multidb_jobs.runs(db) == {i: 1 for i in range(WORKER_JOBS)},
                   timeout=TIMEOUT, what="every job to run once")
        testing.wait_for_idle(db.databases["async"], timeout=TIMEOUT)
        status = json.loads(_cli("status", *_db_options(server), "--json"))
        assert sorted(w["health"] for w in status["workers"]) == ["alive", "alive"]
        assert [w["claim_error"] for w in status["workers"]] == [None, None]
        listed = json.loads(_cli("jobs", *_db_options(server), "--json",
                                 "--status", "success", "--limit", "100"))
        assert len(listed["jobs"]) == WORKER_JOBS
        for worker in process_workers:
            assert worker.stop() == 0
            assert "claim failed" not in worker.log, worker.log
        # The 'mail' jobs ran in child processes, which opened both databases.
        assert process_workers[1].log.count("runs in child process") == WORKER_JOBS // 2
    finally:
        zasync.close_databases(db)
    # Every job ran once, none again after the workers stopped.
    again = zasync.open_databases(server.uris)
    try:
        assert multidb_jobs.runs(again) == {i: 1 for i in range(WORKER_JOBS)}
    finally:
        zasync.close_databases(again)


def test_a_worker_that_cannot_claim_says_why(tmp_path, zeo_two_storages, process_workers):
    """The issue's worker, given the async database alone: its claims fail
    on the jobs' references into 'main'.  It says so in its status and in
    the web view instead of appearing alive."""
    from process_jobs import wait_until
    server = zeo_two_storages
    db = zasync.open_databases(server.uris, pool_size=POOL)
    try:
        zasync.install(db.databases["async"])
        multidb_jobs.add_targets(db, 1)
        worker = process_workers.start(
            str(tmp_path / "worker.log"), server.uri_for("async"),
            "--poll-interval", "0.05", "--uuid-file", str(tmp_path / "worker.uuid"))
        oids, errors = _run_requests(db, count=1)
        assert errors == []

        def failing():
            found = json.loads(_cli("status", *_db_options(server), "--json"))["workers"]
            return found and found[0]["health"] == "failing" and found[0]
        seen = wait_until(failing, timeout=TIMEOUT, what="the worker to be failing")
        assert "KeyError" in seen["claim_error"] and "main" in seen["claim_error"]
        table = _cli("status", *_db_options(server))
        assert "failing" in table and "cannot claim jobs: StateLoadError" in table
        assert "KeyError: 'main'" in table

        # Listing the jobs reads no arguments (they are in each job's
        # call record): the async database alone serves.
        from click.testing import CliRunner

        from zasync.cli.cli import main
        listed = CliRunner().invoke(main, ["jobs", "--db", server.uri_for("async")],
                                    env={"COLUMNS": "400"})
        assert listed.exit_code == 0 and "multidb_jobs.touch" in listed.output, listed.output

        from zasync.web import make_app
        import webtest
        page = webtest.TestApp(make_app(db.databases["async"])).get("/workers")
        assert "health-failing" in page.text and "KeyError" in page.text
        assert worker.stop() == 0
        assert multidb_jobs.runs(db) == {0: 0}
    finally:
        zasync.close_databases(db)


def _zope_conf(tmp_path, server):
    """A Zope 5/6 instance's zope.conf, as mkwsgiinstance writes it, with
    the main and async databases on the ZEO server."""
    path = tmp_path / "etc" / "zope.conf"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"""\
%define INSTANCE {tmp_path}
%define ZEO_ADDRESS {server.host}:{server.port}
instancehome $INSTANCE
debug-mode off
security-policy-implementation C
verbose-security off
default-zpublisher-encoding utf-8

<environment>
  CHAMELEON_CACHE $INSTANCE/var/cache
</environment>

<dos_protection>
  form-memory-limit 1MB
</dos_protection>

<zodb_db async>
  <zeoclient>
    server $ZEO_ADDRESS
    storage async
    name async
  </zeoclient>
  mount-point /zasync
</zodb_db>

<zodb_db main>
  # Main database
  cache-size 10000
  <zeoclient>
    server $ZEO_ADDRESS
    storage main
    name main
  </zeoclient>
  mount-point /
</zodb_db>
""")
    return str(path)


def test_a_worker_reads_the_databases_of_zope_conf(tmp_path, zeo_two_storages):
    import subprocess
    import sys

    from process_jobs import process_env, stop, wait_until
    server = zeo_two_storages
    conf = _zope_conf(tmp_path, server)
    databases = zasync.queue.multidb.read_zope_conf(conf)
    # The root (mounted at /) first, whatever the order of the file.
    assert [name for name, _ in databases.pairs] == ["main", "async"]
    assert databases.queue_db == "async"
    db = zasync.open_databases(server.uris, pool_size=POOL)
    log = open(tmp_path / "worker.log", "wb")
    worker = subprocess.Popen(
        [sys.executable, "-m", "zasync", "worker", "--zope-conf", conf,
         "--threads", "2", "--poll-interval", "0.05",
         "--uuid-file", str(tmp_path / "worker.uuid")],
        stdout=log, stderr=subprocess.STDOUT, env=process_env())
    log.close()
    try:
        multidb_jobs.add_targets(db, 8)
        wait_until(lambda: _installed(db.databases["async"]), timeout=TIMEOUT,
                   what="the worker to install the queues")
        oids, errors = _run_requests(db, count=8)
        assert errors == []
        wait_until(lambda: multidb_jobs.runs(db) == {i: 1 for i in range(8)},
                   timeout=TIMEOUT, what="every job to run once")
        status = json.loads(_cli("status", "--zope-conf", conf, "--json"))
        assert [w["health"] for w in status["workers"]] == ["alive"]
    finally:
        assert stop(worker) == 0, (tmp_path / "worker.log").read_text()
        zasync.close_databases(db)


def _installed(queue_db):
    from zasync.queue.database import close_connection, open_connection
    conn = open_connection(queue_db)
    try:
        conn.transaction_manager.begin()
        return "zasync" in conn.root()
    finally:
        conn.transaction_manager.abort()
        close_connection(conn)


@pytest.mark.parametrize("values, queue_db, expected", [
    (["a=x", "b=y"], None, "none named 'async': say which one keeps the queues "
                           "with --queue-db NAME (one of 'a', 'b')"),
    (["x.fs", "y.fs"], None, "several databases need a name each"),
    (["main=x", "main=y"], None, "database name 'main' is given twice"),
    (["main=x", "async=y"], "mail", "--queue-db 'mail': no database of that name; "
                                    "expected one of 'main', 'async'"),
    (["x.fs"], "async", "--queue-db 'async': a single database has no name"),
])
def test_bad_database_options_are_refused_with_a_reason(values, queue_db, expected):
    with pytest.raises(zasync.ConfigurationError) as raised:
        zasync.queue.multidb.parse(values, queue_db)
    assert expected in str(raised.value)


def test_database_options_read_names_not_uris():
    parsed = zasync.queue.multidb.parse(
        ["main=zeo://127.0.0.1:8100?storage=main", "async=var/async.fs"])
    assert parsed.pairs == [("main", "zeo://127.0.0.1:8100?storage=main"),
                            ("async", "var/async.fs")]
    assert parsed.queue_db == "async"
    single = zasync.queue.multidb.parse(["zeo://127.0.0.1:8100?storage=async"])
    assert single.single and single.pairs == [(None, "zeo://127.0.0.1:8100?storage=async")]
    # pyramid_zodbconn names its main database ''
    pyramid = zasync.queue.multidb.parse(["=zeo://h:1?storage=main", "async=zeo://h:1?storage=async"])
    assert pyramid.pairs[0] == ("", "zeo://h:1?storage=main")
    again = zasync.queue.multidb.Databases.from_argument(parsed.to_argument())
    assert (again.pairs, again.queue_db) == (parsed.pairs, parsed.queue_db)


def test_a_zope_conf_without_databases_is_refused(tmp_path):
    conf = tmp_path / "zope.conf"
    conf.write_text("instancehome /tmp\n")
    with pytest.raises(zasync.ConfigurationError, match="no <zodb_db NAME> section"):
        zasync.queue.multidb.read_zope_conf(str(conf))
    with pytest.raises(zasync.ConfigurationError, match="cannot read it"):
        zasync.queue.multidb.read_zope_conf(str(tmp_path / "missing.conf"))


def _record(queue_db, dispatcher_id):
    from zasync.queue.database import close_connection, open_connection
    conn = open_connection(queue_db)
    try:
        conn.transaction_manager.begin()
        record = zasync.get_queues(conn).dispatchers[dispatcher_id]
        return record.claim_error, record.claim_error_at
    finally:
        conn.transaction_manager.abort()
        close_connection(conn)


def test_a_claim_error_is_recorded_once_and_cleared_when_claims_work(
        zeo_two_storages, caplog):
    from process_jobs import wait_until
    server = zeo_two_storages
    app = zasync.open_databases(server.uris, pool_size=POOL)
    lone = zasync.open_db(server.uri_for("async"), database_name="async")
    try:
        zasync.install(app.databases["async"])
        multidb_jobs.add_targets(app, 1)
        dispatcher = zasync.Dispatcher(lone, threads=1, poll_interval=0.05)
        with dispatcher:
            assert _run_requests(app, count=1)[1] == []
            error, first_at = wait_until(
                lambda: _record(app.databases["async"], dispatcher.id)[0] is not None
                and _record(app.databases["async"], dispatcher.id),
                timeout=TIMEOUT, what="the claim error to be recorded")
            assert "KeyError: 'main'" in error and "did not open" in error
            # It keeps failing, once a poll interval or so; the record is
            # not written again before a ping interval, and the failure is
            # logged once, not at each claim.
            failures = dispatcher.claim_failures
            wait_until(lambda: dispatcher.claim_failures >= failures + 3,
                       timeout=TIMEOUT, what="three more failed claims")
            assert _record(app.databases["async"], dispatcher.id) == (error, first_at)
            logged = [r for r in caplog.records
                      if r.name == "zasync.worker.dispatcher" and r.exc_info]
            assert len(logged) == 1, [r.getMessage() for r in logged]
            # The missing database is there now: the claims work, the job
            # runs once and the record says nothing is wrong any more.
            zasync.open_db(server.uri_for("main"), databases=lone.databases,
                           database_name="main")
            wait_until(lambda: multidb_jobs.runs(app) == {0: 1}, timeout=TIMEOUT,
                       what="the job to run")
            wait_until(lambda: _record(app.databases["async"], dispatcher.id) == (None, None),
                       timeout=TIMEOUT, what="the claim error to be cleared")
    finally:
        zasync.close_databases(lone)
        zasync.close_databases(app)


def test_a_declared_root_wins_over_the_order_of_opening(tmp_path):
    # The async database opened first, as an application might.
    db = testing.open_multidb(tmp_path, names=("async", "main"))
    main_db, queue_db = db.databases["main"], db.databases["async"]
    try:
        assert database.root_database(queue_db) is queue_db
        database.set_root_database(main_db)
        assert database.root_database(queue_db) is main_db
        conn = database.open_connection(queue_db)
        assert sorted(conn.connections) == ["async", "main"]
        assert conn.connections["main"].get_connection("async") is conn
        database.close_connection(conn)
        assert len(queue_db.pool.available) == 0
    finally:
        testing.close_multidb(db)


def test_the_web_command_shows_jobs_whose_arguments_live_in_main(
        tmp_path, zeo_two_storages):
    import os
    import signal
    import subprocess
    import sys
    import urllib.request

    from process_jobs import process_env, wait_until
    server = zeo_two_storages
    db = zasync.open_databases(server.uris, pool_size=POOL)
    port = testing.free_port()
    process = None
    try:
        zasync.install(db.databases["async"])
        multidb_jobs.add_targets(db, 1)
        with testing.running_dispatcher(db.databases["async"]):
            (oid,), errors = _run_requests(db, count=1)
            testing.wait_for_idle(db.databases["async"], timeout=TIMEOUT)
        conn = database.open_connection(db.databases["async"])
        try:
            job_id = conn.get(oid).id
        finally:
            conn.transaction_manager.abort()
            database.close_connection(conn)
        process = subprocess.Popen(
            [sys.executable, "-m", "zasync", "web", *_db_options(server),
             "--bind", f"127.0.0.1:{port}"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=process_env())

        def job_json():
            try:
                with urllib.request.urlopen(
                        f"http://127.0.0.1:{port}/api/jobs/{job_id}", timeout=TIMEOUT) as reply:
                    return json.load(reply)
            except OSError:
                assert process.poll() is None, process.stderr.read().decode()
                return None
        found = wait_until(job_json, timeout=TIMEOUT, what="zasync web answering")
        assert found["status"] == "completed" and "Target" in json.dumps(found)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/jobs/{job_id}",
                                    timeout=TIMEOUT) as reply:
            assert "multidb_jobs.touch" in reply.read().decode()
    finally:
        if process is not None:
            os.kill(process.pid, signal.SIGTERM)
            _, err = process.communicate(timeout=TIMEOUT)
            assert process.returncode == 0, err.decode()
        zasync.close_databases(db)


@pytest.mark.parametrize("storages, expected", [
    ("main", "expected storage names such as ('main', 'async')"),
    (("main", ""), "expected storage names"),
    (("main", "main"), "a name is given twice"),
])
def test_zeo_server_refuses_bad_storage_names(tmp_path, storages, expected):
    with pytest.raises(ValueError) as raised:
        testing.ZEOServer(folder=str(tmp_path), storages=storages)
    assert expected in str(raised.value)


def test_zeo_server_names_the_uri_of_each_storage(tmp_path):
    server = testing.ZEOServer(folder=str(tmp_path), storages=("main", "async"), port=8100)
    assert server.uris == {"main": "zeo://127.0.0.1:8100?storage=main",
                           "async": "zeo://127.0.0.1:8100?storage=async"}
    assert server.uri == server.uri_for("main")
    with pytest.raises(KeyError, match="no storage 'mail'; this server serves 'main', 'async'"):
        server.uri_for("mail")


def test_a_process_agent_hands_its_children_every_database():
    from zasync.worker.process import ProcessAgent
    databases = zasync.queue.multidb.parse(
        ["main=zeo://127.0.0.1:8100?storage=main", "async=zeo://127.0.0.1:8100?storage=async"])
    agent = ProcessAgent(1, uri=databases)
    again = zasync.queue.multidb.Databases.from_argument(agent.uri)
    assert (again.pairs, again.queue_db) == (databases.pairs, "async")
    with pytest.raises(zasync.ConfigurationError, match="child processes need a database URI"):
        ProcessAgent(1, uri="var/Data.fs")
