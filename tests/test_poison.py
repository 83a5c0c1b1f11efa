"""Jobs a worker cannot load (issue 15): a callable or an argument's class
the worker process lacks, a database it did not open, and arguments so big
that rewriting them at each change of the job's status stalls the worker.

The multi-process cases put from a real producer script whose module
(``onlyproducer``, in a folder of the test's own) the worker process does
not have, over a real ZEO server; the jobs write what they did to files,
and the tests count those lines.
"""

import datetime
import logging
import os
import subprocess
import sys

import pytest

import zasync
from zasync.job import clock
from zasync.cli import examples
from zasync.job.call import Call, Result
from zasync.interfaces import ASSIGNED, COMPLETED, PENDING, MissingCodeError
from zasync.worker.record import DispatcherRecord
from zasync.job.retry import Backoff, RetryTransient

import process_jobs
import unit_jobs
from process_jobs import TIMEOUT, process_env, read_lines, wait_until

ONLYPRODUCER = '''\
import os


class Task:
    def __init__(self, number):
        self.number = number


def work(folder):
    with open(os.path.join(folder, "poison.ran"), "a") as ran:
        ran.write("ran\\n")
'''

PRODUCER = '''\
import sys

import zasync

import onlyproducer
import process_jobs

db = zasync.open_db(sys.argv[1])
with db.transaction() as conn:
    queue = zasync.get_queue(conn)
    missing = queue.put(zasync.Job(onlyproducer.work, sys.argv[2]))
    broken = queue.put(zasync.Job(process_jobs.record_run, onlyproducer.Task(7), sys.argv[2]))
    ids = missing.id, broken.id
db.close()
print(*ids)
'''


def _produce(tmp_path, uri, folder):
    """Run the producer script (with `onlyproducer` on its path alone);
    return the ids of its two jobs."""
    app = tmp_path / "app"
    app.mkdir()
    (app / "onlyproducer.py").write_text(ONLYPRODUCER)
    (app / "producer.py").write_text(PRODUCER)
    env = process_env()
    env["PYTHONPATH"] = os.pathsep.join((str(app), env["PYTHONPATH"]))
    done = subprocess.run([sys.executable, str(app / "producer.py"), uri, folder],
                          env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def _zasync(*args, cwd):
    """Run a `zasync` command from a folder without the producer's code."""
    return subprocess.run([sys.executable, "-m", "zasync", *args], env=process_env(),
                          capture_output=True, text=True, timeout=TIMEOUT, cwd=cwd)


def _look(db, job_id, read):
    conn = db.open()
    try:
        return read(zasync.get_queues(conn).find_job(job_id))
    finally:
        conn.close()


def _attempted(db, job_id):
    return _look(db, job_id, lambda job: len(job.attempts) >= 1 and job.status == PENDING
                 and (job.attempts[0], job.begin_after))


@pytest.mark.slow(reason="starts a worker process, a producer script and two `zasync` "
                         "commands, each importing zasync and ZODB")
def test_jobs_whose_code_the_worker_lacks_fail_alone_while_the_others_run(
        zeo_db, zeo_server, tmp_path, folder, process_workers):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    worker = process_workers.start(
        str(tmp_path / "worker.log"), zeo_server.uri, "--id", "w-1", "--queue", "",
        "--queue", "mail", "--threads", "2", "--poll-interval", "0.1")
    missing_id, broken_id = _produce(tmp_path, zeo_server.uri, folder)
    good = []
    for queue_name in ("", "mail"):
        with zeo_db.transaction() as conn:
            good.append(zasync.get_queue(conn, queue_name).put(
                zasync.Job(process_jobs.record_run, queue_name, folder)).id)
    for job_id in good:
        wait_until(lambda: _look(zeo_db, job_id, lambda job: job.status == COMPLETED),
                   what=f"good job {job_id} to run")

    # 1. The callable the worker lacks: the attempt fails by itself, naming
    # the module and the worker, and is retried later, not in a hot loop.
    failure, due = wait_until(lambda: _attempted(zeo_db, missing_id),
                              what="the job with missing code to fail an attempt")
    assert failure.check(MissingCodeError) is not None, failure
    assert "cannot import onlyproducer.work on worker w-1" in failure.message
    assert "No module named 'onlyproducer'" in failure.message
    assert "PYTHONPATH" in failure.message
    assert (due - clock.now()).total_seconds() > 5
    assert not os.path.exists(os.path.join(folder, "poison.ran"))

    # 2. An argument whose class the worker lacks: not run with a broken
    # object, but failed, naming the class.
    failure, due = wait_until(lambda: _attempted(zeo_db, broken_id),
                              what="the job with a broken argument to fail an attempt")
    assert failure.check(MissingCodeError) is not None, failure
    assert "cannot import onlyproducer.Task on worker w-1" in failure.message
    assert "argument 0 of process_jobs.record_run" in failure.message
    assert (due - clock.now()).total_seconds() > 5

    # Each good job ran once, the broken one not at all.
    assert sorted(read_lines(folder, "runs")) == sorted(good)

    # A process without the code cancels and removes such jobs.
    cancelled = _zasync("cancel", missing_id, "--db", zeo_server.uri, cwd=elsewhere)
    assert cancelled.returncode == 0, cancelled.stderr
    assert _look(zeo_db, missing_id, lambda job: job.cancelled)
    removed = _zasync("remove", broken_id, "--db", zeo_server.uri, cwd=elsewhere)
    assert removed.returncode == 0, removed.stderr
    conn = zeo_db.open()
    try:
        assert zasync.get_queues(conn).find_job(broken_id) is None
    finally:
        conn.close()
    assert worker.stop() == 0
    log = worker.log
    assert "claim failed" not in log and "Traceback" not in log, log
    assert sum(missing_id in line for line in log.splitlines()) <= 2, log


# -- in one process -----------------------------------------------------------------

def _put(db, *args, **kwargs):
    with db.transaction() as conn:
        return zasync.get_queue(conn).put(zasync.Job(*args, **kwargs)).id


def test_the_default_policy_retries_missing_code_with_backoff():
    policy = RetryTransient()
    error = MissingCodeError("cannot import x.y on worker w-1")
    delays = [policy.retry_after(None, error, attempt) for attempt in range(1, 6)]
    assert delays[:4] == [datetime.timedelta(seconds=s) for s in (10, 20, 40, 60)]
    assert delays[4] is None        # after five attempts it fails
    quick = RetryTransient(missing_code_delay=0.5)
    assert quick.retry_after(None, error, 1) == datetime.timedelta(seconds=0.5)
    # a policy retrying every exception fast keeps the slow pace for these
    assert Backoff(initial=0.1).retry_after(None, error, 1) == datetime.timedelta(seconds=10)


def test_a_call_and_a_result_are_records_of_their_own(db):
    big = "x" * 1000
    job_id = _put(db, examples.add, big, "y")
    conn = db.open()
    job = zasync.get_queues(conn).find_job(job_id)
    assert isinstance(job._call, Call) and job._call._p_oid is not None
    assert job.callable is examples.add and job.args == (big, "y")
    assert job.callable_name == "zasync.cli.examples.add"
    conn.close()
    with zasync.Dispatcher(db, threads=1, poll_interval=0.05):
        wait_until(lambda: _look(db, job_id, lambda job: job.status == COMPLETED))
    assert _look(db, job_id, lambda job: (isinstance(job._result, Result), job.result)) == (
        True, big + "y")


def test_a_job_stored_with_its_call_inline_still_runs(db):
    """Jobs stored before calls had a record of their own keep their
    callable and arguments in their own state."""
    job = zasync.Job(examples.add, 2, 3)
    state = job.__getstate__()
    for name in ("_call", "_callable_name", "_callable_ref"):
        state.pop(name, None)
    state.update(callable=examples.add, args=(2, 3), kwargs={})
    old = zasync.Job.__new__(zasync.Job)
    old.__setstate__(state)
    with db.transaction() as conn:
        zasync.get_queue(conn).put(old)
        job_id = old.id
    assert _look(db, job_id, lambda job: (job._call, job.callable_name)) == (
        None, "zasync.cli.examples.add")
    with zasync.Dispatcher(db, threads=1, poll_interval=0.05):
        wait_until(lambda: _look(db, job_id, lambda job: job.status == COMPLETED))
    assert _look(db, job_id, lambda job: job.result) == 5


def _written_last(db):
    """The classes of the records the database's last transaction wrote."""
    from ZODB.utils import get_pickle_metadata
    last = db.storage.lastTransaction()
    return sorted(get_pickle_metadata(record.data)[1]
                  for txn in db.storage.iterator(last, last) for record in txn)


def test_a_small_call_is_kept_in_the_jobs_own_record(db):
    """A callable found by its name with a few plain arguments costs
    nothing to rewrite: a put writes the job and its inbox lane, no `Call`
    record (issue 19)."""
    job_id = _put(db, examples.add, 2, b=3)
    assert _written_last(db) == ["Job", "JobSet"]
    conn = db.open()
    try:
        job = zasync.get_queues(conn).find_job(job_id)
        assert job._call is None
        assert job.callable is examples.add
        assert (job.args, job.kwargs) == ((2,), {"b": 3})
        assert job.callable_name == "zasync.cli.examples.add"
        assert job.args_summary == "2, b=3"
    finally:
        conn.close()
    builtin = _put(db, len, ["x", "y"])
    assert _written_last(db) == ["Job", "JobSet"]
    assert _look(db, builtin, lambda job: (job.callable, job.callable_name)) == (len, "len")
    with zasync.Dispatcher(db, threads=1, poll_interval=0.05):
        for done in (job_id, builtin):
            wait_until(lambda: _look(db, done, lambda job: job.status == COMPLETED))
    assert _look(db, job_id, lambda job: job.result) == 5
    assert _look(db, builtin, lambda job: job.result) == 2


@pytest.mark.parametrize("args", [
    ("x" * 1000, "y"),                               # big
    (datetime.date(2026, 1, 1), 1),                  # not a plain value
    ([list(range(100))], 1),                         # many items
])
def test_a_call_that_is_not_small_has_a_record_of_its_own(db, args):
    _put(db, examples.add, *args)
    assert _written_last(db) == ["Call", "Job", "JobSet"]


def test_only_plain_values_of_exact_types_are_small():
    """A subclass of a plain type pickles by its class's name, which a
    worker may lack: such an argument keeps the call in a record."""
    import enum
    from zasync.job.call import CALL_INLINE_LIMIT, small

    class Level(enum.IntEnum):
        LOW = 1

    assert small((1, 2.5, True, None, "text", b"raw", (1, 2), [3], {"k": "v"}), {"n": 1})
    assert not small((Level.LOW,), {})
    assert not small(((1, (2,)),), {})                  # two levels deep at most
    assert not small(("x" * CALL_INLINE_LIMIT,), {})
    assert not small((), {"big": 10 ** 1000})
    assert not small((datetime.timedelta(1),), {})


def test_a_method_or_a_persistent_argument_has_a_record_of_its_own(db):
    with db.transaction() as conn:
        conn.root()["box"] = box = unit_jobs.Counter()
        conn.root()["doubler"] = doubler = unit_jobs.Doubler()
        queue = zasync.get_queue(conn)
        ids = [queue.put(unit_jobs.count_of, box).id, queue.put(doubler, 2).id,
               queue.put(box.increment).id]
    for job_id in ids:
        assert _look(db, job_id, lambda job: job._call is not None)


def test_a_job_stored_with_a_call_record_for_a_small_call_still_runs(db):
    """Jobs stored before small calls were kept inline have a `Call`."""
    job = zasync.Job(examples.add, 2, 3)
    state = job.__getstate__()
    for name in ("_callable_ref", "args", "kwargs"):
        state.pop(name, None)
    state.update(_call=Call(examples.add, (2, 3), {}), _callable_name="zasync.cli.examples.add",
                 _args_summary="2, 3")
    old = zasync.Job.__new__(zasync.Job)
    old.__setstate__(state)
    with db.transaction() as conn:
        zasync.get_queue(conn).put(old)
        job_id = old.id
    assert "Call" in _written_last(db)
    with zasync.Dispatcher(db, threads=1, poll_interval=0.05):
        wait_until(lambda: _look(db, job_id, lambda job: job.status == COMPLETED))
    assert _look(db, job_id, lambda job: (job.result, job.args_summary)) == (5, "2, 3")


VANISHING = '''\
def work(number):
    return number + 1
'''


def test_a_small_call_of_code_this_process_lacks_fails_its_attempt(tmp_path, monkeypatch):
    """Kept by name, a callable this process cannot import loads as
    ZODB's placeholder, as from a `Call` record: the job is claimed, its
    attempt fails with `MissingCodeError` naming the module, and a process
    without the code still cancels it."""
    code = tmp_path / "code"
    code.mkdir()
    (code / "vanishing.py").write_text(VANISHING)
    monkeypatch.syspath_prepend(str(code))
    import vanishing
    path = str(tmp_path / "Data.fs")
    db = zasync.open_db(path)
    zasync.install(db)
    job_id = _put(db, vanishing.work, 1)
    assert _written_last(db) == ["Job", "JobSet"]
    db.close()
    monkeypatch.syspath_prepend(str(tmp_path / "elsewhere"))
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(code)])
    monkeypatch.delitem(sys.modules, "vanishing")
    db = zasync.open_db(path)
    try:
        with zasync.Dispatcher(db, threads=1, poll_interval=0.05):
            failure, _ = wait_until(lambda: _attempted(db, job_id),
                                    what="the job of missing code to fail an attempt")
        assert failure.check(MissingCodeError) is not None, failure
        assert "cannot import vanishing.work" in failure.message
        assert "No module named 'vanishing'" in failure.message
        with db.transaction() as conn:
            assert zasync.get_queues(conn).find_job(job_id).cancel()
        assert _look(db, job_id, lambda job: job.cancelled)
    finally:
        db.close()


def test_a_big_argument_is_stored_once(tmp_path):
    """Put, claim, start and completion rewrite the job's record, not its
    arguments: the database grows by the argument once."""
    db = zasync.open_db(str(tmp_path / "Data.fs"))
    try:
        zasync.install(db)
        path = tmp_path / "Data.fs"
        size = 4 * 1024 * 1024
        before = path.stat().st_size
        job_id = _put(db, len, os.urandom(size))
        with zasync.Dispatcher(db, threads=1, poll_interval=0.05):
            wait_until(lambda: _look(db, job_id, lambda job: job.status == COMPLETED))
        grown = path.stat().st_size - before
        assert size < grown < 1.2 * size, grown
    finally:
        db.close()


class _Unrepresentable:
    def __repr__(self):
        raise RuntimeError("no repr")


def test_a_job_keeps_a_short_text_of_its_arguments():
    job = zasync.Job(examples.add, 1, "two", three=[3])
    assert job.args_summary == "1, 'two', three=[3]"
    big = zasync.Job(len, b"\x00" * 50_000_000, note="x" * 1000)
    assert len(big.args_summary) == 200 and big.args_summary.endswith("…")
    assert big.args_summary.startswith("b'\\x00\\x00")
    failing = zasync.Job(examples.add, _Unrepresentable(), 1).args_summary
    assert failing.startswith("<_Unrepresentable instance at ") and failing.endswith(">, 1")
    assert zasync.Job(examples.add).args_summary == ""


def test_a_big_argument_is_loaded_only_by_the_thread_that_runs_it(zeo_db, zeo_server):
    """Issue 15: a small job put behind one with a big argument waited
    seconds, as the dispatcher loaded the argument again (over ZEO) to file
    the finished job for search, before its next claim.  Only the thread
    that runs the job loads its call; filing, claiming and the dispatcher's
    commit of the results read what the job's own record keeps."""
    unit_jobs.Bulky.loads.clear()
    size = 3 * 1024 * 1024
    # an application's own ZEO client puts (the worker's connections must
    # not find the call in a cache the put left)
    producer = zasync.open_db(zeo_server.uri)
    try:
        big = _put(producer, unit_jobs.measure, unit_jobs.Bulky(size))
        small = _put(producer, examples.add, 1, 2)
    finally:
        producer.close()
    with zasync.Dispatcher(zeo_db, threads=2, poll_interval=0.05):
        for job_id in (small, big):
            wait_until(lambda: _look(zeo_db, job_id, lambda job: job.status == COMPLETED))
    measured, thread = _look(zeo_db, big, lambda job: job.result)
    assert measured == size
    assert unit_jobs.Bulky.loads == [thread]
    assert _look(zeo_db, small, lambda job: job.result) == 3
    # the job is still found by its arguments' words, and listed with them
    conn = zeo_db.open()
    try:
        queue = zasync.get_queue(conn)
        assert big in queue.history.ids_with_word("bulky")
        assert zasync.get_queues(conn).find_job(big).args_summary == (
            f"<Bulky of {size} bytes>")
    finally:
        conn.close()
    assert unit_jobs.Bulky.loads == [thread]


def test_listing_searching_and_pruning_jobs_load_no_call(db):
    """The web view's lists, searches and the history's pruning show and
    find a job by the short text of its arguments its record keeps; only
    the job's own page loads them."""
    import webtest
    from zasync.web import make_app
    done = _put(db, unit_jobs.measure, unit_jobs.Bulky(5000))
    with zasync.Dispatcher(db, threads=1, poll_interval=0.05):
        wait_until(lambda: _look(db, done, lambda job: job.status == COMPLETED))
    with db.transaction() as conn:
        pending = zasync.get_queue(conn, "mail").put(zasync.Job(
            unit_jobs.measure, unit_jobs.Bulky(6000), b"\xff" * 1_000_000)).id
    db.cacheMinimize()      # as in a web server of its own: nothing cached
    unit_jobs.Bulky.loads.clear()
    app = webtest.TestApp(make_app(db))
    rows = app.get("/jobs").text
    assert "&lt;Bulky of 5000 bytes&gt;" in rows
    assert "(&lt;Bulky of 6000 bytes&gt;, b'\\xff\\xff" in rows
    assert len(rows) < 20_000      # the 1 MB argument is not shown whole
    listed = app.get("/api/jobs").json["jobs"]
    assert {job["id"] for job in listed} == {done, pending}
    for query in ("q=bulky", "q=5000", "callable=measure", "q=bulky&source=all"):
        found = {job["id"] for job in app.get(f"/api/jobs?{query}").json["jobs"]}
        assert done in found, query
    assert unit_jobs.Bulky.loads == []
    with db.transaction() as conn:
        queue = zasync.get_queue(conn)
        queue.history.prune(clock.to_micros(clock.now()) + 10**12, queue._index)
        assert not queue.history.ids_with_word("bulky")   # unindexed whole
    assert unit_jobs.Bulky.loads == []
    # the job's own page shows its call: that loads it
    assert "&lt;Bulky of 6000 bytes&gt;" in app.get(f"/jobs/{pending}").text
    assert unit_jobs.Bulky.loads


def _claims_fail(self):
    raise RuntimeError("the claims break")


def test_the_heartbeat_goes_on_while_claims_fail(db, monkeypatch, caplog):
    """A dispatcher whose claims fail still pings and recovers a dead
    sibling's job; the failure is logged with its traceback once."""
    job_id = _put(db, examples.add, 1, 2)
    with db.transaction() as conn:
        container = zasync.get_queues(conn)
        ghost = container.dispatchers["ghost"] = DispatcherRecord("ghost")
        ghost.last_ping = clock.now() - datetime.timedelta(hours=1)
        ghost.info = {"queues": [""], "death_interval": 3}
    with db.transaction() as conn:
        assert [job.id for job in zasync.get_queue(conn).claim("ghost", 1)] == [job_id]
    assert _look(db, job_id, lambda job: job.status) == ASSIGNED
    monkeypatch.setattr(zasync.Dispatcher, "_cycle", _claims_fail)
    caplog.set_level(logging.INFO, "zasync")
    dispatcher = zasync.Dispatcher(db, threads=1, poll_interval=0.01, ping_interval=0.2)
    with dispatcher:
        wait_until(lambda: _look(db, job_id, lambda job: job.status == PENDING
                                 and job.dispatcher_id is None),
                   what="the dead sibling's job to be recovered")
        wait_until(lambda: dispatcher.claim_failures >= 5, what="five failed claims")
    logged = [r for r in caplog.records if "claim failed" in r.getMessage()]
    assert len(logged) == 1 and logged[0].exc_info is not None
    assert "the claims break" in str(logged[0].exc_info[1])
