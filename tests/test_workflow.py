"""Workflows: a job that waits for the job it returns without holding a
worker thread, and serial and parallel groups, run by a real dispatcher on
a FileStorage (in-process), then by real worker processes over a real ZEO
server that are killed in the middle of a group."""

import os

import pytest
import transaction

import zasync
import zasync.cli.examples
import zasync.testing
from zasync.interfaces import ACTIVE, ASSIGNED, COMPLETED, NEW, PENDING

import recovery_jobs
import workflow_jobs as jobs
from scenario_jobs import wait_until

TIMEOUT = 30.0


@pytest.fixture
def folder(tmp_path):
    path = tmp_path / "meet"
    path.mkdir()
    return str(path)


@pytest.fixture
def one_thread(db):
    with zasync.Dispatcher(db, threads=1, poll_interval=0.05) as running:
        yield running


def run(producer, job, **put_kwargs):
    return zasync.wait_for(producer.put(job, **put_kwargs), timeout=TIMEOUT)


def fresh_queue(viewer):
    viewer.root()      # a new transaction
    return zasync.get_queue(viewer.conn)


def release(folder, name):
    open(os.path.join(folder, f"{name}.release"), "w").close()


def arrived(folder, name):
    return os.path.exists(os.path.join(folder, f"{name}.arrived"))


# -- waiting for a job --------------------------------------------------------------

def test_a_job_that_puts_and_returns_a_child_completes_with_its_result(
        dispatcher, producer):
    done = run(producer, zasync.Job(jobs.put_child, 20, 22))
    assert done.succeeded and done.result == 42
    assert done.attempt_count == 1          # resumed, not run again
    assert done.waiting_for == []
    assert done.status_history[-1][0] == COMPLETED


def test_a_new_child_returned_is_put_in_the_parents_queue(dispatcher, producer, viewer):
    done = run(producer, zasync.Job(jobs.new_child, 1, 2), priority=3)
    assert done.result == 3
    queue = fresh_queue(viewer)
    children = [job for job in queue.jobs() if job.callable_name.endswith(".add")]
    assert [(child.result, child.priority, child.queue_name) for child in children] == [
        (3, 3, "")]
    [resume] = children[0].callbacks
    assert resume.callable_name == "zasync.job.workflow._resume"
    assert resume.result == f"resumed job {done.id}"


def test_a_waiting_parent_holds_no_thread_of_a_one_thread_dispatcher(
        db, one_thread, producer, viewer, folder):
    parent = producer.put(zasync.Job(jobs.gated_child, folder, "child"))
    wait_until(lambda: arrived(folder, "child"), TIMEOUT)
    # The child runs on the only thread: the parent does not hold it.
    seen = viewer.get(parent)
    [child] = seen.waiting_for
    assert seen.status == ACTIVE
    assert seen.progress_message == f"waiting for job {child.id}"
    record = (viewer.root(), zasync.get_queues(viewer.conn))[1].dispatchers[one_thread.id]
    assert set(record.jobs.ids()) == {child.id}
    assert child.status == ACTIVE and child.dispatcher_id == one_thread.id
    release(folder, "child")
    done = zasync.wait_for(parent, timeout=TIMEOUT)
    assert done.result == "child"
    assert (done.attempt_count, done.dispatcher_id) == (1, one_thread.id)
    assert [status for status, _, _ in done.status_history] == [
        NEW, PENDING, ASSIGNED, ACTIVE, PENDING, ASSIGNED, ACTIVE, COMPLETED]


def test_the_web_view_shows_what_a_job_waits_for(db, dispatcher, producer, folder):
    import webtest

    from zasync.web import make_app
    app = webtest.TestApp(make_app(db))
    parent = producer.put(zasync.Job(jobs.gated_child, folder, "child"))
    wait_until(lambda: arrived(folder, "child"), TIMEOUT)
    data = wait_until(lambda: (lambda d: d["waiting_for"] and d)(
        app.get(f"/api/jobs/{parent.id}").json), TIMEOUT)
    [child_id] = data["waiting_for"]
    assert (data["status"], data["message"]) == ("active", f"waiting for job {child_id}")
    page = app.get(f"/jobs/{parent.id}")
    assert [a.text for a in page.html.select(".waiting-for a")] == [child_id]
    release(folder, "child")
    zasync.wait_for(parent, timeout=TIMEOUT)
    assert app.get(f"/api/jobs/{parent.id}").json["waiting_for"] == []
    [callback] = app.get(f"/api/jobs/{child_id}").json["callbacks"]
    assert callback["callable"] == "zasync.job.workflow._resume"
    assert (callback["status"], callback["failure"]) == ("completed", None)


def test_a_waiting_parent_leaves_room_in_its_quota_for_its_child(dispatcher, producer):
    with producer.tm:
        producer.queue().set_quota("one", 1)
    done = run(producer, zasync.Job(jobs.child_in_quota, 2, 2, "one"), quotas="one")
    assert done.result == 4
    with producer.tm:
        assert producer.queue().quotas["one"].held == 0


def test_a_waiting_job_sends_each_event_once(dispatcher, producer):
    import zope.event
    seen = []

    def subscriber(event):
        job = getattr(event, "job", None)
        if job is not None:
            seen.append((type(event).__name__, job.id))
    zope.event.subscribers.append(subscriber)
    try:
        done = run(producer, zasync.Job(jobs.new_child, 1, 1))
        wait_until(lambda: ("JobSucceeded", done.id) in seen, TIMEOUT)
    finally:
        zope.event.subscribers.remove(subscriber)
    assert [name for name, job_id in seen if job_id == done.id] == [
        "JobPut", "JobStarted", "JobSucceeded"]


def test_a_direct_call_cannot_wait_for_a_job_running_elsewhere(db):
    with db.transaction() as conn:
        child = zasync.get_queue(conn).put(zasync.Job(jobs.add, 1, 1))
        [claimed] = zasync.get_queue(conn).claim("elsewhere")
        claimed._start("elsewhere")
        waiting = zasync.Job(jobs.same, child)
        failure = waiting()
        assert failure.check(zasync.JobStateError)
        assert failure.message == (
            f"job {waiting.id}, called directly, waits for job {child.id}, which is "
            f"active; a direct call can only run new or pending jobs inline")


def test_the_failure_of_a_child_is_the_failure_of_its_parent(dispatcher, producer):
    done = run(producer, zasync.Job(jobs.failing_child, "no stock"))
    assert done.failed
    assert done.failure.check(ValueError)
    assert done.failure.message == "no stock"
    assert done.attempt_count == 1


def test_a_child_that_waits_makes_its_parent_wait_too(one_thread, producer):
    done = run(producer, zasync.Job(jobs.nested, 3, "deep"))
    assert done.result == "deep"


def test_cancelling_a_waiting_parent_cancels_its_child(dispatcher, producer, viewer):
    parent = producer.put(zasync.Job(jobs.later_child, 3600))
    seen = wait_until(lambda: viewer.get(parent)._waiting_for and viewer.get(parent), TIMEOUT)
    [child] = seen.waiting_for
    assert child.status == PENDING
    # A cancel may conflict with the worker filing the child out of the
    # inbox: like the web view's and the command line's, it is retried.
    for attempt in producer.tm.attempts(5):
        with attempt:
            assert producer.conn.get(parent._p_oid).cancel()
    done = zasync.wait_for(parent, timeout=TIMEOUT)
    assert done.cancelled
    assert "cancelled while it waited for job " + child.id in done.failure.message
    assert viewer.get(child).cancelled


def test_a_direct_call_runs_what_the_job_waits_for_inline(db):
    with db.transaction() as conn:
        assert zasync.Job(jobs.nested, 2, "inline")() == "inline"
        group = zasync.serial(zasync.Job(jobs.add, 1, 1), zasync.Job(jobs.add, 2, 2))
        assert group() == [2, 4]
        queued = zasync.get_queue(conn).put(zasync.Job(jobs.put_child, 1, 1))
        assert queued() == 2
        [child] = [job for job in zasync.get_queue(conn).jobs()
                   if job.callable_name.endswith(".add")]
        assert child.status == COMPLETED


def test_eager_mode_completes_a_group_at_commit(db):
    with zasync.testing.eager() as ran:
        tm = transaction.TransactionManager()
        conn = db.open(transaction_manager=tm)
        with tm:
            group = zasync.get_queue(conn).put(zasync.parallel(
                zasync.Job(jobs.add, 1, 2), zasync.Job(jobs.new_child, 3, 4)))
        tm.begin()
        assert conn.get(group._p_oid).result == [3, 7]
        assert ran.job_ids[0] == group.id
        conn.close()


# -- groups ------------------------------------------------------------------------

def test_serial_runs_its_parts_one_after_another(one_thread, producer, folder):
    done = run(producer, zasync.serial(
        *(zasync.Job(jobs.append, folder, label) for label in "abcd")))
    assert done.result == ["a", "b", "c", "d"]
    assert jobs.order(folder) == ["a", "b", "c", "d"]
    assert done.attempt_count == 1


def test_serial_order_holds_with_free_threads(dispatcher, producer, folder):
    # Two free threads: a part is only put once the one before completed.
    done = run(producer, zasync.serial(
        *(zasync.Job(jobs.append, folder, label) for label in "abcdef")))
    assert jobs.order(folder) == list("abcdef") == done.result


def test_serial_stops_at_the_first_failed_part(dispatcher, producer, viewer, folder):
    parts = [zasync.Job(jobs.append, folder, "a"), zasync.Job(jobs.fail, "broken"),
             zasync.Job(jobs.append, folder, "c"), zasync.Job(jobs.append, folder, "d")]
    done = run(producer, zasync.serial(*parts))
    assert jobs.order(folder) == ["a"]
    assert done.failed and done.failure.check(zasync.GroupFailedError)
    assert done.failure.message == (
        f"serial group {done.id}: 1 of 4 parts failed: part 2 (job {parts[1].id}, "
        f"workflow_jobs.fail): ValueError: broken; parts 3, 4 not run")
    third, fourth = viewer.wait_completed(parts[2:])
    for part in (third, fourth):
        assert part.cancelled and part.attempt_count == 0
        assert part.failure.message == (
            f"job {part.id} was not run: part 2 (job {parts[1].id}) of serial "
            f"group {done.id} failed")
        assert fresh_queue(viewer).get(part.id) is not None


def test_a_postprocess_receives_every_part_of_a_stopped_serial_group(
        dispatcher, producer, folder):
    parts = [zasync.Job(jobs.append, folder, "a"), zasync.Job(jobs.fail, "broken"),
             zasync.Job(jobs.append, folder, "c")]
    done = run(producer, zasync.serial(*parts, postprocess=jobs.describe))
    assert done.succeeded
    assert done.result == [(parts[0].id, "ok", "a"), (parts[1].id, "ValueError", None),
                           (parts[2].id, "Cancelled", None)]


def test_parallel_parts_run_at_once(dispatcher, producer, folder):
    # Each part completes only once the other started: with two threads,
    # only if the group holds neither of them.
    done = run(producer, zasync.parallel(
        zasync.Job(jobs.meet, folder, "left", "right"),
        zasync.Job(jobs.meet, folder, "right", "left")))
    assert done.result == ["left", "right"]
    assert done.attempt_count == 1


def test_a_parallel_group_fails_naming_its_failed_parts(dispatcher, producer):
    parts = [zasync.Job(jobs.fail, "one"), zasync.Job(jobs.add, 1, 1),
             zasync.Job(jobs.fail, "three")]
    done = run(producer, zasync.parallel(*parts))
    assert done.failure.check(zasync.GroupFailedError)
    assert done.failure.message == (
        f"parallel group {done.id}: 2 of 3 parts failed: "
        f"part 1 (job {parts[0].id}, workflow_jobs.fail): ValueError: one; "
        f"part 3 (job {parts[2].id}, workflow_jobs.fail): ValueError: three")


def test_many_parallel_parts_finishing_at_once_resume_their_group_once(
        db, producer, viewer):
    # Four threads finish parts at the same time: their resume callbacks
    # all write the group, conflict, and retry; the group resumes once.
    with zasync.Dispatcher(db, threads=4, poll_interval=0.05):
        done = run(producer, zasync.parallel(*(zasync.Job(jobs.add, i, i) for i in range(40))))
        assert done.result == [2 * i for i in range(40)]
        assert done.attempt_count == 1
        assert [status for status, _, _ in done.status_history].count(PENDING) == 2
        parts = viewer.wait_completed(done.args[0])
    resumed = [part.callbacks[0].result for part in parts]
    assert resumed.count(f"resumed job {done.id}") == 1


def test_a_resumed_group_that_conflicts_is_retried_as_new_attempts(dispatcher, producer):
    done = run(producer, zasync.serial(zasync.Job(jobs.add, 1, 1),
                                       postprocess=jobs.always_conflict))
    assert done.failed and done.failure.check("ZODB.POSException.ConflictError")
    # the default policy's 5 attempts: the resumption itself counted no new one
    assert done.attempt_count == 5 and len(done.attempts) == 4


def test_a_postprocess_gets_the_parts_and_may_return_a_job(dispatcher, producer):
    done = run(producer, zasync.parallel(
        zasync.Job(jobs.add, 1, 2), zasync.Job(jobs.add, 3, 4),
        postprocess=jobs.total_later))
    assert done.result == 110


def test_groups_nest(dispatcher, producer, folder):
    done = run(producer, zasync.serial(
        zasync.parallel(zasync.Job(jobs.add, 1, 1), zasync.Job(jobs.nested, 1, "n")),
        zasync.Job(jobs.append, folder, "after")))
    assert done.result == [[2, "n"], "after"]


def test_callables_are_wrapped_in_jobs(dispatcher, producer):
    done = run(producer, zasync.parallel(zasync.cli.examples.noop, zasync.cli.examples.noop))
    assert done.succeeded and len(done.result) == 2


def test_cancelling_a_waiting_group_cancels_its_running_part(
        dispatcher, producer, viewer, folder):
    parts = [zasync.Job(jobs.gate, folder, "first"), zasync.Job(jobs.add, 1, 1)]
    group = producer.put(zasync.serial(*parts))
    wait_until(lambda: arrived(folder, "first"), TIMEOUT)
    with producer.tm:
        producer.conn.get(group._p_oid).cancel()
    release(folder, "first")   # it does not look for the cancellation: it completes
    done = zasync.wait_for(group, timeout=TIMEOUT)
    assert done.cancelled
    assert done.failure.message == (
        f"job {group.id} was cancelled while it waited for job {parts[0].id}")
    first, second = viewer.wait_completed(parts)
    assert first.succeeded
    assert second.cancelled and second.attempt_count == 0
    assert second.failure.message == (
        f"job {second.id} was not run: its group {group.id} was cancelled")


@pytest.mark.parametrize("make", [zasync.serial, zasync.parallel])
def test_bad_parts_are_refused_naming_them(db, make):
    kind = make.__name__
    with pytest.raises(zasync.ConfigurationError, match=rf"^{kind}\(\) needs at least one part"):
        make()
    with pytest.raises(zasync.UnstorableError,
                       match=rf"^{kind}\(\): part 2: cannot store the callable <function"):
        make(jobs.add, lambda: 1)
    with pytest.raises(zasync.UnstorableError, match=rf"^{kind}\(\): part 1: 42 is not callable"):
        make(42)
    with pytest.raises(zasync.UnstorableError, match=rf"^{kind}\(\): postprocess: "):
        make(jobs.add, postprocess=lambda parts: parts)
    with db.transaction() as conn:
        queued = zasync.get_queue(conn).put(zasync.Job(jobs.add, 1, 1))
        with pytest.raises(zasync.AlreadyQueuedError, match=(
                rf"^{kind}\(\): part 2, job {queued.id} \(workflow_jobs.add\), is "
                rf"already pending in queue ''")):
            make(jobs.add, queued)
        part = zasync.Job(jobs.add, 1, 1)
        with pytest.raises(zasync.ConfigurationError, match=f"part 2, job {part.id}, was given twice"):
            make(part, part)


def test_a_job_returning_itself_fails(dispatcher, producer):
    done = run(producer, zasync.Job(zasync.current_job))
    assert done.failure.check(zasync.JobStateError)
    assert "cannot wait for itself" in done.failure.message



# -- worker processes over ZEO, killed in the middle of a group ---------------------

PING = 0.5
DEATH = 3.0
STARTUP = 20.0


@pytest.fixture
def client(zeo_db):
    opened = recovery_jobs.Client(zeo_db)
    yield opened
    opened.close()


@pytest.fixture
def workers(tmp_path, zeo_server):
    started = recovery_jobs.Workers(tmp_path, zeo_server.uri)
    try:
        yield started
    finally:
        started.end_all()       # each by its pid


def two_workers(client, workers):
    pair = [workers.start(name, ping=PING, death=DEATH) for name in ("first", "second")]
    wait_until(lambda: all(client.registered(worker) for worker in pair), STARTUP)
    return pair


def held(folder, name):
    return zasync.Job(recovery_jobs.hold, folder, name, recovery_jobs.Counter())


def put(client, job):
    """Put `job` itself (`Client.put` wraps a callable in a new job)."""
    with client.tm:
        return zasync.get_queue(client.conn).put(job)


def kill_the_runner_of(folder, name, pair):
    """Kill -9 the worker running part `name`; return the other one."""
    pid = recovery_jobs.started_pid(folder, name)
    victim, survivor = pair if pair[0].pid == pid else pair[::-1]
    assert victim.pid == pid
    victim.kill()
    return victim, survivor


def test_a_serial_group_goes_on_after_its_worker_is_killed_mid_part(
        client, workers, folder):
    pair = two_workers(client, workers)
    names = ["one", "two", "three"]
    recovery_jobs.touch(folder, "one.release")
    group = put(client, zasync.serial(*(held(folder, name) for name in names),
                                     postprocess=jobs.results_with_attempts))
    victim, survivor = kill_the_runner_of(folder, "two", pair)
    for name in names[1:]:
        recovery_jobs.touch(folder, f"{name}.release")

    done = zasync.wait_for(group, timeout=recovery_jobs.TIMEOUT)
    assert done.succeeded, done.failure
    [(first, one), (second, two), (third, three)] = done.result
    assert (one, two, three) == (1, 2, 1)
    assert second == {"attempt": 2, "pid": survivor.pid}
    assert third["pid"] == survivor.pid
    parts = client.job(group).args[0]
    assert [part.args[2].value for part in parts] == [1, 1, 1]   # each committed once
    assert parts[1].attempts[0].check(zasync.InterruptedJobError)
    assert len(recovery_jobs.runs_of(folder, "one")) == 1
    assert recovery_jobs.runs_of(folder, "two") == [(1, victim.pid), (2, survivor.pid)]
    assert recovery_jobs.runs_of(folder, "three") == [(1, survivor.pid)]
    # one after another: each started once the one before had ended
    assert parts[0].ended_at <= parts[1].started_at
    assert parts[1].ended_at <= parts[2].started_at
    assert done.attempt_count == 1
    survivor.wait_log(f"dispatcher {victim.id} is dead; recovered")


def test_a_parallel_group_goes_on_after_its_worker_is_killed_mid_part(
        client, workers, folder):
    pair = two_workers(client, workers)
    names = ["a", "b", "c"]
    group = put(client, zasync.parallel(*(held(folder, name) for name in names)))
    for name in names:
        recovery_jobs.started_pid(folder, name)    # all three run at once
    victim, survivor = kill_the_runner_of(folder, "a", pair)
    for name in names:
        recovery_jobs.touch(folder, f"{name}.release")

    done = zasync.wait_for(group, timeout=recovery_jobs.TIMEOUT)
    assert done.succeeded, done.failure
    assert [result["pid"] for result in done.result][0] == survivor.pid
    assert done.result[0]["attempt"] == 2
    parts = client.job(group).args[0]
    assert [part.args[2].value for part in parts] == [1, 1, 1]
    for part, name in zip(parts, names):
        runs = recovery_jobs.runs_of(folder, name)
        if runs[0][1] == victim.pid:     # the killed worker's parts ran again
            assert [pid for _, pid in runs] == [victim.pid, survivor.pid]
            assert part.attempts[0].check(zasync.InterruptedJobError)
        else:
            assert runs == [(1, survivor.pid)]
    assert done.attempt_count == 1


def test_a_handed_result_whose_job_gained_a_callback_meanwhile_runs_it(db, viewer):
    # A job that wrote nothing hands its result to its dispatcher; if a job
    # that waits for it added its callback meanwhile, the dispatcher's
    # commit must leave the callbacks to run, not file the job as completed.
    from zasync.worker.runner import complete_handed
    with db.transaction() as conn:
        job = zasync.get_queue(conn).put(zasync.Job(jobs.add, 1, 1))
    with db.transaction() as conn:
        [claimed] = zasync.get_queue(conn).claim("gone")
        claimed._start("gone")
        callback = claimed.add_callback(zasync.Job(jobs.add, 2))
        filed = []
        done = complete_handed(conn, "gone", job._p_oid, 2, None,
                               lambda conn, job, history=True: filed.append(history))
        assert (done.status, filed) == (zasync.CALLBACKS, [False])
    with zasync.Dispatcher(db, threads=1, poll_interval=0.05):
        [ran] = viewer.wait_completed([callback])
    assert ran.result == 4
    assert viewer.get(job).status == COMPLETED


def test_jobs_wait_under_a_worker_whose_jobs_run_in_child_processes(client, workers):
    # A process agent looks at each job its child left: a waiting job is
    # not one left unfinished.
    worker = workers.start("processes", "--processes", ping=PING, death=DEATH)
    wait_until(lambda: client.registered(worker), STARTUP)
    waiting = put(client, zasync.Job(jobs.new_child, 2, 3))
    group = put(client, zasync.parallel(zasync.Job(jobs.add, 1, 1),
                                        zasync.Job(jobs.add, 2, 2)))
    assert zasync.wait_for(waiting, timeout=recovery_jobs.TIMEOUT).result == 5
    done = zasync.wait_for(group, timeout=recovery_jobs.TIMEOUT)
    assert (done.result, done.attempt_count) == ([2, 4], 1)
    assert "Traceback" not in worker.log
