"""Jobs: what they accept and refuse, their ids, running them directly,
failures, callbacks, annotations, progress and the simple status words."""

import collections.abc
import contextlib
import datetime
import functools
import pickle
import re
import threading
import types

import pytest
import transaction
from zope.interface.verify import verifyObject

import zasync
from zasync.job.failure import Failure
from zasync.interfaces import IJob
from zasync.job.job import Job
from zasync.job.local import check_fraction

import unit_jobs


def _open(db):
    tm = transaction.TransactionManager()
    return tm, db.open(transaction_manager=tm)


def _store(db, key, value):
    """Commit `value` under `key` in the root; return its oid."""
    with db.transaction() as conn:
        conn.root()[key] = value
    return value._p_oid


@contextlib.contextmanager
def _fresh(db):
    """A fresh connection, aborted and closed after the block."""
    tm, conn = _open(db)
    try:
        yield conn
    finally:
        tm.abort()
        conn.close()


def test_provides_ijob():
    assert verifyObject(IJob, Job(unit_jobs.add, 1, 2))


# -- what a job accepts -------------------------------------------------------

def test_module_function_runs_after_reload(db):
    oid = _store(db, "job", Job(unit_jobs.add, 2, b=3))
    with _fresh(db) as conn:
        job = conn.get(oid)
        assert job.callable is unit_jobs.add
        assert job.args == (2,) and job.kwargs == {"b": 3}
        assert job() == 5
        assert job.callable_name == "unit_jobs.add"


def test_builtin_runs_after_reload(db):
    oid = _store(db, "job", Job(len, "four"))
    with _fresh(db) as conn:
        job = conn.get(oid)
        assert job() == 4
        assert job.callable_name == "len"


def test_method_of_a_persistent_object(db):
    counter = unit_jobs.Counter()
    with db.transaction() as conn:
        conn.root()["counter"] = counter
        conn.root()["job"] = job = Job(counter.increment, 5)
    tm, conn = _open(db)
    job = conn.root()["job"]
    assert job.callable.__self__ is conn.root()["counter"]  # the same object, not a copy
    assert job() == 5
    tm.commit()
    with db.transaction() as conn:
        assert conn.root()["counter"].count == 5
        assert conn.root()["job"].result == 5
        assert conn.root()["job"].callable_name == "unit_jobs.Counter.increment"
    conn.close()


def test_persistent_callable_object(db):
    doubler = unit_jobs.Doubler()
    with db.transaction() as conn:
        conn.root()["doubler"] = doubler
        conn.root()["job"] = Job(doubler, 21)
    tm, conn = _open(db)
    job = conn.root()["job"]
    assert job.callable is conn.root()["doubler"]
    assert job() == 42
    tm.commit()
    with db.transaction() as conn:
        assert conn.root()["doubler"].calls == 1
    conn.close()


def test_persistent_arguments_are_references(db):
    box = unit_jobs.Counter()
    with db.transaction() as conn:
        conn.root()["box"] = box
        conn.root()["job"] = Job(unit_jobs.count_of, box)
    # the job sees the committed object, not a copy taken at Job() time
    with db.transaction() as conn:
        conn.root()["box"].count = 7
    with _fresh(db) as conn:
        job = conn.root()["job"]
        assert job.args[0] is conn.root()["box"]
        assert job() == 7


def test_arguments_are_checked_but_not_copied():
    values = [1, 2]
    job = Job(unit_jobs.identity, values)
    assert job.args[0] is values


# -- what a job refuses ---------------------------------------------------------

def _nothing_written(db, make):
    """Run `make` in a transaction that then commits; return the error it
    raised, after checking that the commit wrote nothing."""
    before = db.lastTransaction()
    tm, conn = _open(db)
    queue = zasync.get_queue(conn)
    with pytest.raises(zasync.ZasyncError) as info:
        make(queue)
    tm.commit()
    conn.close()
    assert db.lastTransaction() == before
    with db.transaction() as conn:
        assert len(zasync.get_queue(conn)) == 0
    return info.value


def test_lambda_is_refused(db):
    with pytest.raises(zasync.UnstorableError, match="lambda"):
        Job(lambda: 1)
    error = _nothing_written(db, lambda queue: queue.put(lambda: 1))
    assert isinstance(error, zasync.UnstorableError)
    assert "lambda" in str(error)


def test_nested_function_is_refused(db):
    def helper_inside():
        return 1

    with pytest.raises(zasync.UnstorableError, match="helper_inside"):
        Job(helper_inside)
    error = _nothing_written(db, lambda queue: queue.put(Job(helper_inside)))
    assert "helper_inside" in str(error)


def test_method_of_a_plain_object_is_refused(db):
    plain = unit_jobs.Plain()
    with pytest.raises(zasync.UnstorableError, match=r"unit_jobs\.Plain\.method"):
        Job(plain.method)
    error = _nothing_written(db, lambda queue: queue.put(plain.method))
    assert "Plain.method" in str(error)
    assert "persistent" in str(error)


def test_a_job_as_the_callable_of_a_job_is_refused(db):
    inner = Job(unit_jobs.add, 1, 2)
    with pytest.raises(zasync.ConfigurationError, match="not the callable of another job"):
        Job(inner)
    error = _nothing_written(db, lambda queue: queue.put(Job(Job(unit_jobs.add, 1, 2))))
    assert "queue.put(job)" in str(error)


def test_partial_is_refused(db):
    partial = functools.partial(unit_jobs.add, 1)
    with pytest.raises(zasync.UnstorableError, match="partial") as info:
        Job(partial)
    assert "add" in str(info.value)
    error = _nothing_written(db, lambda queue: queue.put(partial, 2))
    assert isinstance(error, zasync.UnstorableError)


def test_unpicklable_argument_is_refused(db):
    lock = threading.Lock()
    with pytest.raises(zasync.UnstorableError) as info:
        Job(unit_jobs.add, 1, lock)
    message = str(info.value)
    assert "unit_jobs.add" in message and "argument 1" in message
    assert "lock" in message
    with pytest.raises(zasync.UnstorableError, match="'b'"):
        Job(unit_jobs.add, 1, b=lock)
    error = _nothing_written(db, lambda queue: queue.put(unit_jobs.add, 1, lock))
    assert "unit_jobs.add" in str(error)


def test_unstorable_error_is_a_configuration_error():
    with pytest.raises(zasync.ConfigurationError):
        Job(lambda: 1)
    with pytest.raises(ValueError):
        Job(lambda: 1)


def test_not_callable_is_refused():
    with pytest.raises(zasync.UnstorableError, match="not callable"):
        Job("unit_jobs.add")


# -- ids ------------------------------------------------------------------------

def test_id_is_a_url_safe_str():
    job = Job(len, "x")
    assert isinstance(job.id, str)
    assert re.fullmatch(r"[A-Za-z0-9_.~-]+", job.id)


def test_ids_are_unique_over_many_jobs():
    ids = [Job(len, "x").id for _ in range(20_000)]
    assert len(set(ids)) == len(ids)


def test_ids_are_unique_across_threads():
    found = []
    lock = threading.Lock()

    def make():
        mine = [Job(len, "x").id for _ in range(2_000)]
        with lock:
            found.extend(mine)
    threads = [threading.Thread(target=make) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(found) == 16_000
    assert len(set(found)) == len(found)


def test_id_is_stable_after_commit_and_reload(db):
    with db.transaction() as conn:
        job = zasync.get_queue(conn).put(unit_jobs.add, 1, 2)
        job_id = job.id
    assert job.id == job_id
    with _fresh(db) as conn:
        found = zasync.get_queues(conn).find_job(job_id)
        assert found is not None and found.id == job_id
        assert found._p_oid == job._p_oid


# -- running a job directly ------------------------------------------------------

def test_calling_a_job_runs_it_and_stores_the_result(db):
    oid = _store(db, "job", Job(unit_jobs.add, 20, 22))
    tm, conn = _open(db)
    job = conn.get(oid)
    assert job.status == zasync.NEW and job.result is None
    assert job() == 42
    assert job.status == zasync.COMPLETED
    assert job.succeeded and not job.failed
    assert job.result == 42 and job.failure is None
    assert job.progress == 1.0
    assert job.attempt_count == 1
    assert job.started_at is not None and job.ended_at >= job.started_at
    assert job.duration >= 0
    assert [status for status, _, _ in job.status_history] == [
        zasync.NEW, zasync.ACTIVE, zasync.COMPLETED]
    tm.commit()
    conn.close()
    with _fresh(db) as conn:
        seen = conn.get(oid)
        assert seen.status == zasync.COMPLETED and seen.result == 42


def test_a_new_job_has_no_outcome():
    job = Job(len, "abc")
    assert job.status == zasync.NEW
    assert job.result is None and job.failure is None
    assert not job.succeeded and not job.failed
    assert job.progress == 0.0 and job.progress_message is None
    assert job.started_at is None and job.ended_at is None and job.duration is None
    assert job.created_at.tzinfo is not None
    assert job.queue is None and job.queue_name is None
    assert job.callbacks == []


def test_a_raising_job_records_its_failure():
    job = Job(unit_jobs.fail_deep, "it broke")
    returned = job()
    failure = job.failure
    assert returned is failure
    assert isinstance(failure, Failure)
    assert job.status == zasync.COMPLETED
    assert job.failed and not job.succeeded
    assert job.result is None
    assert failure.type == "unit_jobs.DeepTrouble"
    assert failure.type_name == "DeepTrouble"
    assert failure.message == "it broke"
    assert failure.check(ValueError) is ValueError
    # the whole traceback: both frames of the job's own code, and the line
    text = failure.traceback
    assert text.startswith("Traceback (most recent call last):")
    assert "in fail_deep" in text and "in _fail_inner" in text
    assert "raise DeepTrouble(message)" in text
    assert text.rstrip().endswith("unit_jobs.DeepTrouble: it broke")


def _reachable(obj, seen=None):
    """Every object reachable from a failure's attributes and containers."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return
    seen.add(id(obj))
    yield obj
    children = []
    if isinstance(obj, dict):
        children = list(obj.keys()) + list(obj.values())
    elif isinstance(obj, (list, tuple, set, frozenset)):
        children = list(obj)
    elif hasattr(obj, "__dict__") and not isinstance(obj, type):
        children = list(vars(obj).values())
    for child in children:
        yield from _reachable(child, seen)


def test_a_failure_keeps_no_frames():
    job = Job(unit_jobs.fail_deep, "it broke")
    job()
    failure = job.failure
    for obj in _reachable(failure):
        assert not isinstance(obj, (types.TracebackType, types.FrameType,
                                    BaseException)), obj
    # the megabyte local of the raising frame is not carried along
    data = pickle.dumps(failure)
    assert len(data) < len(failure.traceback) + 2_000
    assert pickle.loads(data) == failure


def test_a_failed_job_pickles_small(db):
    oid = _store(db, "job", Job(unit_jobs.fail_deep, "it broke"))
    tm, conn = _open(db)
    conn.get(oid)()
    tm.commit()
    conn.close()
    record, _ = db.storage.load(oid)
    assert len(record) < 10_000
    with _fresh(db) as conn:
        seen = conn.get(oid)
        assert seen.failure.message == "it broke"
        assert "in _fail_inner" in seen.failure.traceback


def test_base_exceptions_pass_through():
    job = Job(unit_jobs.exit_now)
    with pytest.raises(SystemExit):
        job()
    assert job.failure is None


def test_calling_a_completed_job_raises():
    job = Job(unit_jobs.add, 1, 1)
    job()
    with pytest.raises(zasync.AlreadyCompletedError, match=job.id):
        job()
    assert job.result == 2 and job.attempt_count == 1
    failed = Job(unit_jobs.fail_value, "no")
    failed()
    with pytest.raises(zasync.AlreadyCompletedError):
        failed()


def test_an_unstorable_result_fails_the_job():
    job = Job(unit_jobs.make_lock)
    job()
    assert job.failed
    assert job.failure.check(zasync.UnstorableResultError)
    assert job.result is None


# -- callbacks ------------------------------------------------------------------

def test_add_callback_receives_the_result():
    job = Job(unit_jobs.add, 1, 2)
    callback = job.add_callback(unit_jobs.describe_outcome)
    assert isinstance(callback, Job)
    assert callback.parent is job and job.callbacks == [callback]
    assert callback.status == zasync.NEW
    job()
    assert callback.status == zasync.COMPLETED
    assert callback.result == "success:3"
    assert job.status == zasync.COMPLETED


def test_add_callback_receives_the_failure():
    job = Job(unit_jobs.fail_value, "broken")
    callback = job.add_callback(unit_jobs.describe_outcome)
    job()
    assert callback.result == "failure:ValueError:broken"
    assert job.failed


def test_add_callbacks_routes_a_success():
    job = Job(unit_jobs.add, 2, 2)
    on_success, on_failure = job.add_callbacks(
        success=unit_jobs.describe_outcome, failure=unit_jobs.describe_outcome)
    job()
    assert on_success.result == "success:4" and on_success.succeeded
    assert on_failure.status == zasync.COMPLETED
    assert on_failure.result is None and on_failure.skipped
    assert not on_failure.succeeded


def test_add_callbacks_routes_a_failure():
    job = Job(unit_jobs.fail_value, "nope")
    on_success, on_failure = job.add_callbacks(
        success=unit_jobs.describe_outcome, failure=unit_jobs.describe_outcome)
    job()
    assert on_failure.result == "failure:ValueError:nope"
    assert on_success.status == zasync.COMPLETED
    assert on_success.result is None and on_success.skipped


def test_add_callbacks_with_one_side_only():
    job = Job(unit_jobs.add, 1, 1)
    (only,) = job.add_callbacks(failure=unit_jobs.describe_outcome)
    job()
    assert only.skipped
    with pytest.raises(zasync.ConfigurationError):
        Job(len, "x").add_callbacks()


def test_a_callback_added_to_a_completed_job_runs_at_once():
    job = Job(unit_jobs.add, 3, 4)
    job()
    callback = job.add_callback(unit_jobs.describe_outcome)
    assert callback.status == zasync.COMPLETED
    assert callback.result == "success:7"
    failed = Job(unit_jobs.fail_value, "late")
    failed()
    on_success, on_failure = failed.add_callbacks(
        success=unit_jobs.describe_outcome, failure=unit_jobs.describe_outcome)
    assert on_failure.result == "failure:ValueError:late"
    assert on_success.skipped


def test_callbacks_of_a_stored_job_persist(db):
    job = Job(unit_jobs.add, 5, 5)
    job.add_callbacks(success=unit_jobs.describe_outcome)
    oid = _store(db, "job", job)
    tm, conn = _open(db)
    conn.get(oid)()
    tm.commit()
    conn.close()
    with _fresh(db) as conn:
        assert conn.get(oid).callbacks[0].result == "success:10"


def test_a_failing_callback_does_not_fail_its_parent():
    job = Job(unit_jobs.add, 1, 2)
    callback = job.add_callback(unit_jobs.fail_value)   # gets 3 as message
    job()
    assert job.succeeded and job.result == 3
    assert callback.failed and callback.failure.message == "3"


def test_unstorable_callback_is_refused():
    job = Job(len, "x")
    with pytest.raises(zasync.UnstorableError):
        job.add_callback(lambda outcome: outcome)
    assert job.callbacks == []


def test_a_used_job_cannot_become_a_callback():
    job = Job(len, "x")
    done = Job(len, "y")
    done()
    with pytest.raises(zasync.JobStateError):
        job.add_callback(done)


def test_a_callback_cannot_be_called_on_its_own():
    job = Job(len, "x")
    callback = job.add_callback(unit_jobs.describe_outcome)
    with pytest.raises(zasync.JobStateError):
        callback()


# -- annotations ------------------------------------------------------------------

def test_annotations_are_a_mapping_that_persists(db):
    job = Job(len, "x")
    assert isinstance(job.annotations, collections.abc.MutableMapping)
    assert len(job.annotations) == 0
    job.annotations["owner"] = "editor"
    oid = _store(db, "job", job)
    with db.transaction() as conn:
        conn.get(oid).annotations["step"] = 2
    with _fresh(db) as conn:
        assert dict(conn.get(oid).annotations) == {"owner": "editor", "step": 2}



def _classes_written_last(db):
    """The classes of the records the database's last transaction wrote."""
    from ZODB.utils import get_pickle_metadata
    last = db.storage.lastTransaction()
    found = []
    for txn in db.storage.iterator(last, last):
        for record in txn:
            found.append(get_pickle_metadata(record.data)[1])
    return sorted(found)


def test_a_put_writes_no_live_state_until_one_is_needed(db):
    with db.transaction() as conn:
        job = zasync.get_queue(conn).put(unit_jobs.add, 1, 2)
        oid = job._p_oid
    written = _classes_written_last(db)
    assert "LiveState" not in written
    assert written.count("Job") == 1 and "Call" not in written   # a small call: inline
    with _fresh(db) as conn:
        job = conn.get(oid)
        # read as before: the defaults, no annotations, nothing written
        assert (job.progress, job.progress_message) == (0.0, None)
        assert not job.annotations.cancel_requested
        assert dict(job.annotations) == {} and len(job.annotations) == 0
        assert "x" not in job.annotations
        assert not job._p_changed
    with db.transaction() as conn:
        conn.get(oid).annotations["owner"] = "editor"
    assert _classes_written_last(db) == ["Job", "LiveState"]
    with db.transaction() as conn:
        conn.get(oid).annotations["step"] = 2       # only the live state now
    assert _classes_written_last(db) == ["LiveState"]
    with _fresh(db) as conn:
        assert dict(conn.get(oid).annotations) == {"owner": "editor", "step": 2}



def test_a_job_stores_no_defaults_through_put_run_and_completion(db):
    """Each key a job stores is pickled again at every write of it."""
    with db.transaction() as conn:
        job = zasync.get_queue(conn).put(unit_jobs.add, 1, 2)
        oid = job._p_oid
    with db.transaction() as conn:
        job = conn.get(oid)
        job._start("worker")
        job._complete(result=3, dispatcher_id="worker")
    with _fresh(db) as conn:
        job = conn.get(oid)
        job._p_activate()
        state = job.__getstate__()
        for name in ("begin_by", "priority", "_failure", "_live", "_created_at_us",
                     "_call", "_callable_name", "_args_summary", "kwargs"):
            assert name not in state
        assert job.begin_by is None and job.priority == 0 and job.failure is None
        # its first status's time
        assert job.created_at == job.status_history[0][1] and job.created_at is not None
        assert job.succeeded and job.result == 3 and job.ended_at is not None
    with db.transaction() as conn:       # put with the options: stored
        job = zasync.get_queue(conn).put(
            unit_jobs.add, 1, 2, begin_by=datetime.timedelta(seconds=60), priority=3)
        oid = job._p_oid
    with _fresh(db) as conn:
        job = conn.get(oid)
        assert job.begin_by.total_seconds() == 60 and job.priority == 3

def test_a_live_state_made_elsewhere_merges_with_the_jobs_own_write(db):
    """A cancel request (or a first progress report) made in another
    transaction while the job runs gives the job its live state; the job's
    own transaction, writing its outcome, still commits."""
    with db.transaction() as conn:
        job = zasync.get_queue(conn).put(unit_jobs.add, 1, 2)
        oid = job._p_oid
    tm1, conn1 = _open(db)
    tm2, conn2 = _open(db)
    try:
        tm1.begin()
        running = conn1.get(oid)
        running._start("worker")
        tm1.commit()
        tm1.begin()
        running = conn1.get(oid)
        running._complete(result=3, dispatcher_id="worker")
        tm2.begin()
        assert conn2.get(oid).cancel() is True      # makes the live state
        tm2.commit()
        tm1.commit()                                # resolved, not a conflict
    finally:
        tm1.abort()
        tm2.abort()
        conn1.close()
        conn2.close()
    with _fresh(db) as conn:
        job = conn.get(oid)
        assert job.succeeded and job.result == 3
        assert job.annotations.cancel_requested


def test_job_conflicts_merge_only_the_addition_of_a_live_state():
    from ZODB.POSException import ConflictError
    from zasync.job.job import _merge_job_states
    old = {"id": "a", "_status": "active"}
    done = {"id": "a", "_status": "completed", "_result": 3}
    with_live = {"id": "a", "_status": "active", "_live": "L"}
    merged = {"id": "a", "_status": "completed", "_result": 3, "_live": "L"}
    assert _merge_job_states(old, with_live, done) == merged
    assert _merge_job_states(old, done, with_live) == merged
    with pytest.raises(ConflictError):      # two changes of the job
        _merge_job_states(old, done, dict(done, _status="pending"))
    with pytest.raises(ConflictError):      # two live states
        _merge_job_states(old, with_live, dict(with_live, _live="M"))
    with pytest.raises(ConflictError):      # the adder changed more
        _merge_job_states(old, dict(with_live, _status="pending"), done)
    with pytest.raises(ConflictError):      # it had one already
        _merge_job_states(dict(old, _live="L"), dict(with_live, progress=1), done)
    job = Job(len, "x")
    with pytest.raises(ConflictError):      # through the job's resolver
        job._p_resolveConflict(old, done, dict(done, _status="pending"))


# -- progress -----------------------------------------------------------------------

def test_progress_outside_a_job_raises():
    with pytest.raises(zasync.NotInJobError, match="progress"):
        zasync.progress(0.5)
    with pytest.raises(zasync.NotInJobError):
        zasync.check_cancelled()
    assert zasync.current_job() is None


def test_progress_is_recorded_on_the_running_job():
    job = Job(unit_jobs.report_progress, 0.25, "a quarter")
    assert job() == (0.25, "a quarter")
    assert job.progress == 1.0                 # completed
    assert job.progress_message == "a quarter"
    assert zasync.current_job() is None        # not left behind


@pytest.mark.parametrize("given, clamped", [
    (1.5, 1.0), (-2, 0.0), (0, 0.0), (1, 1.0), (0.5, 0.5),
    (float("inf"), 1.0), (float("-inf"), 0.0)])
def test_progress_clamps_to_the_unit_interval(given, clamped):
    job = Job(unit_jobs.report_progress, given)
    assert job()[0] == clamped


@pytest.mark.parametrize("bad", ["half", None, True, float("nan"), [0.5]])
def test_progress_rejects_non_numbers(bad):
    job = Job(unit_jobs.report_progress, bad)
    job()
    assert job.failed
    assert job.failure.check(zasync.ConfigurationError)
    assert "progress fraction" in job.failure.message
    with pytest.raises(zasync.ConfigurationError):
        check_fraction(bad)


def test_progress_message_is_text():
    job = Job(unit_jobs.report_progress, 0.5, 12)
    assert job() == (0.5, "12")


def test_progress_of_a_cancel_requested_job_raises_cancelled():
    job = Job(unit_jobs.report_progress, 0.5)
    job._live.cancel_requested = True   # as a cancel from elsewhere leaves it
    job()
    assert job.failed and job.failure.check(zasync.Cancelled)


# -- simple status --------------------------------------------------------------------

def test_simple_status_of_each_status(db):
    assert Job(len, "x").simple_status == "pending"                 # new
    tm, conn = _open(db)
    queue = zasync.get_queue(conn)
    job = queue.put(unit_jobs.add, 1, 1)
    assert job.status == zasync.PENDING and job.simple_status == "pending"
    tm.commit()
    (claimed,) = queue.claim("a-dispatcher")
    assert claimed.status == zasync.ASSIGNED and claimed.simple_status == "pending"
    tm.abort()
    conn.close()

    running = Job(unit_jobs.own_simple_status)                     # active
    assert running() == "started"
    assert running.simple_status == "success"                      # completed

    job = Job(unit_jobs.add, 1, 1)                                 # callbacks
    seen = job.add_callback(unit_jobs.parent_simple_status)
    job()
    assert seen.result == "success"

    failed = Job(unit_jobs.fail_value, "x")
    seen = failed.add_callback(unit_jobs.parent_simple_status)
    failed()
    assert seen.result == "failure"
    assert failed.simple_status == "failure"                       # completed


def test_simple_status_words_are_few():
    words = set()
    for job in (Job(len, "x"), Job(len, "x"), Job(unit_jobs.fail_value, "x")):
        words.add(job.simple_status)
        job()
        words.add(job.simple_status)
    assert words == {"pending", "success", "failure"}


# -- cancel outside a queue ------------------------------------------------------------

def test_cancel_a_new_job():
    job = Job(len, "x")
    assert job.cancel() is True
    assert job.status == zasync.COMPLETED and job.failed
    assert job.failure.check(zasync.Cancelled)
    assert job.cancelled
    assert job.cancel() is False      # a completed job stays as it is
    with pytest.raises(zasync.AlreadyCompletedError):
        job()


def test_cancelling_runs_the_failure_callback():
    job = Job(len, "x")
    on_success, on_failure = job.add_callbacks(
        success=unit_jobs.describe_outcome, failure=unit_jobs.describe_outcome)
    job.cancel()
    assert job.status == zasync.COMPLETED
    assert on_failure.result.startswith("failure:Cancelled:")
    assert on_success.skipped


def test_a_job_keeps_its_times_across_a_commit_and_reads_an_older_state(tmp_path):
    # Times are stored as integer microseconds (a cheaper pickle) and read
    # back as the same aware datetimes; a job stored by an earlier zasync,
    # with datetimes in its state, reads the same.
    import datetime
    from zasync.job import clock
    from zasync.interfaces import NEW, PENDING
    db = zasync.open_db(str(tmp_path / "Data.fs"))
    try:
        zasync.install(db)
        tm, conn = _open(db)
        with tm:
            job = zasync.get_queue(conn).put(unit_jobs.add, 1, 2)
            made = (job.created_at, job.begin_after, job.status_history)
        tm2, other = _open(db)
        with tm2:
            again = other.get(job._p_oid)
            assert (again.created_at, again.begin_after, again.status_history) == made
            assert again.started_at is None and again.ended_at is None
            assert made[0].tzinfo is not None and made[2][0][1] == made[0]
        other.close()
        conn.close()
    finally:
        db.close()

    when = datetime.datetime(2025, 5, 4, 3, 2, 1, 123456, tzinfo=datetime.timezone.utc)
    older = Job(unit_jobs.add, 1, 2)
    state = dict(older.__getstate__())
    for name in ("_created_at_us", "_begin_after_us", "_started_at_us", "_ended_at_us",
                 "_history"):
        state.pop(name, None)
    state.update(created_at=when, begin_after=when, started_at=None, ended_at=when,
                 status_history=((NEW, when, None), (PENDING, when, "d1")))
    loaded = Job.__new__(Job)
    loaded.__setstate__(state)
    assert (loaded.created_at, loaded.begin_after, loaded.started_at, loaded.ended_at) == (
        when, when, None, when)
    assert loaded.status_history == ((NEW, when, None), (PENDING, when, "d1"))
    assert clock.to_micros(loaded.ended_at) == clock.to_micros(when)


def test_add_callback_takes_arguments_only_inside_the_callback_job():
    # add_callback(f, x) would make x the callback's trigger, not its
    # argument: refused at once; arguments go to Job(f, x).
    job = Job(unit_jobs.add, 1, 2)
    with pytest.raises(TypeError):
        job.add_callback(unit_jobs.add, 5)
    assert job.callbacks == []
    callback = job.add_callback(Job(unit_jobs.add, 5))
    assert job.callbacks == [callback] and callback.args == (5,)
