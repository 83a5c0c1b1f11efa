"""Scenarios: callbacks run by a dispatcher after a job's result is
stored, each in a transaction of its own."""

import zasync
from zasync.job.failure import Failure

import scenario_jobs as jobs
from scenario_jobs import Viewer, unique

TIMEOUT = jobs.TIMEOUT


def test_a_callback_receives_the_result(dispatcher, producer):
    name = unique("result")
    job = zasync.Job(jobs.add, 20, 22)
    callback = job.add_callback(zasync.Job(jobs.record_outcome, name))
    producer.put(job)
    done = zasync.wait_for(job, timeout=TIMEOUT)
    assert done.status == zasync.COMPLETED
    assert jobs.records[name] == [42]
    [seen] = done.callbacks
    assert seen.id == callback.id
    assert seen.status == zasync.COMPLETED
    assert seen.result == 42
    assert seen.parent.id == job.id


def test_a_callback_runs_after_the_result_is_stored_in_its_own_transaction(
        dispatcher, producer):
    name = unique("after")
    job = zasync.Job(jobs.add, 1, 2)
    job.add_callback(zasync.Job(jobs.look_at_parent, name))
    producer.put(job)
    done = zasync.wait_for(job, timeout=TIMEOUT)
    [seen] = jobs.records[name]
    # while the callback ran, another connection already saw the parent's
    # result committed, its callbacks still to run
    assert seen == {"outcome": 3, "status": zasync.CALLBACKS, "result": 3,
                    "ended_at": done.ended_at}
    assert done.callbacks[0].result == "looked"


def test_add_callbacks_routes_by_outcome(dispatcher, producer, viewer):
    name = unique("route")
    good = zasync.Job(jobs.add, 2, 2)
    bad = zasync.Job(jobs.raise_value_error, "no")
    added = {}
    for label, job in (("good", good), ("bad", bad)):
        added[label] = job.add_callbacks(
            success=zasync.Job(jobs.record_outcome, f"{name}-{label}-success"),
            failure=zasync.Job(jobs.record_outcome, f"{name}-{label}-failure"))
        producer.put(job)
    done_good = zasync.wait_for(good, timeout=TIMEOUT)
    done_bad = zasync.wait_for(bad, timeout=TIMEOUT)
    assert done_good.succeeded and done_bad.failed

    assert jobs.records[f"{name}-good-success"] == [4]
    assert jobs.records[f"{name}-good-failure"] == []
    assert jobs.records[f"{name}-bad-success"] == []
    [failure] = jobs.records[f"{name}-bad-failure"]
    assert isinstance(failure, Failure)
    assert failure.check(ValueError) and failure.message == "no"

    good_success, good_failure = viewer.wait_completed(added["good"])
    bad_success, bad_failure = viewer.wait_completed(added["bad"])
    assert good_success.result == 4 and not good_success.skipped
    assert good_failure.skipped
    assert bad_success.skipped
    assert not bad_failure.skipped and bad_failure.result.check(ValueError)


def test_a_callback_added_to_a_completed_job_runs_at_once(dispatcher, producer):
    name = unique("late")
    job = producer.put(zasync.Job(jobs.add, 5, 5))
    done = zasync.wait_for(job, timeout=TIMEOUT)
    tm = done._p_jar.transaction_manager
    callback = done.add_callback(zasync.Job(jobs.record_outcome, name))
    # ran at once, before anything committed
    assert jobs.records[name] == [10]
    assert callback.status == zasync.COMPLETED
    assert callback.result == 10
    tm.commit()
    with Viewer(producer.db) as fresh:
        [stored] = fresh.get(done).callbacks
        assert stored.status == zasync.COMPLETED
        assert stored.result == 10
    assert jobs.records[name] == [10]


def test_a_failing_callback_is_recorded_and_leaves_the_parent_result(
        dispatcher, producer, viewer):
    name = unique("failing")
    job = zasync.Job(jobs.add, 3, 4)
    failing = job.add_callback(zasync.Job(jobs.failing_callback))
    after = job.add_callback(zasync.Job(jobs.record_outcome, name))
    producer.put(job)
    done = zasync.wait_for(job, timeout=TIMEOUT)
    assert done.status == zasync.COMPLETED
    assert done.succeeded
    assert done.result == 7
    assert done.failure is None
    failed, later = viewer.wait_completed([failing, after])
    assert failed.failed
    assert failed.failure.check(ValueError)
    assert "the callback refused 7" in failed.failure.message
    assert "in failing_callback" in failed.failure.traceback
    # the next callback still ran, with the parent's result
    assert later.succeeded and later.result == 7
    assert jobs.records[name] == [7]


def test_chained_callbacks_receive_the_result_of_the_callback_before(
        dispatcher, producer, viewer):
    name = unique("chain")
    job = zasync.Job(jobs.add, 1, 2)
    doubled = job.add_callback(zasync.Job(jobs.double))
    doubled_again = doubled.add_callback(zasync.Job(jobs.double))
    last = doubled_again.add_callback(zasync.Job(jobs.record_outcome, name))
    producer.put(job)
    zasync.wait_for(job, timeout=TIMEOUT)
    first, second, third = viewer.wait_completed([doubled, doubled_again, last])
    assert (first.result, second.result, third.result) == (6, 12, 12)
    assert jobs.records[name] == [12]
    assert third.parent.id == second.id and second.parent.id == first.id


def test_a_failing_callback_is_logged_with_ids_and_shown_in_the_web_view(
        db, dispatcher, producer, viewer, caplog):
    import webtest

    from zasync.web import make_app
    job = zasync.Job(jobs.add, 3, 4)
    failing = job.add_callback(zasync.Job(jobs.failing_callback))
    name = unique("after-failed")
    chained = failing.add_callback(zasync.Job(jobs.record_outcome, name))
    producer.put(job)
    with caplog.at_level("WARNING", logger="zasync.worker.runner"):
        zasync.wait_for(job, timeout=TIMEOUT)
        failed, after = viewer.wait_completed([failing, chained])
    assert failed.failed
    # the callback of a failed callback receives its failure
    [received] = jobs.records[name]
    assert isinstance(received, Failure) and received.message == "the callback refused 7"
    assert after.succeeded
    logged = [r.getMessage() for r in caplog.records if "callback" in r.getMessage()]
    assert any(f"callback {failing.id} (scenario_jobs.failing_callback) of job {job.id} "
               f"failed: ValueError: the callback refused 7" in line for line in logged), logged

    app = webtest.TestApp(make_app(db))
    [shown] = app.get(f"/api/jobs/{job.id}").json["callbacks"]
    assert (shown["id"], shown["status"], shown["state"]) == (failing.id, "completed", "failure")
    assert shown["failure"]["message"] == "the callback refused 7"
    page = app.get(f"/jobs/{job.id}")
    [item] = page.html.select("li.callback")
    assert "(failed)" in item.text
    assert item.select_one(".failure-text").text == "ValueError: the callback refused 7"


def test_a_callbacks_callbacks_are_routed_by_its_outcome(dispatcher, producer, viewer):
    job = zasync.Job(jobs.add, 1, 1)
    first = job.add_callback(zasync.Job(jobs.double))
    on_success, on_failure = first.add_callbacks(
        success=zasync.Job(jobs.double), failure=zasync.Job(jobs.double))
    producer.put(job)
    zasync.wait_for(job, timeout=TIMEOUT)
    first, on_success, on_failure = viewer.wait_completed([first, on_success, on_failure])
    assert (first.result, on_success.result) == (4, 8)
    assert on_failure.skipped and not on_success.skipped
