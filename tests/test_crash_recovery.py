"""Crash recovery, with real ``zasync worker`` processes on a real ZEO
server: a worker killed with SIGKILL mid-job, a worker restarted under the
same id, two live processes under one id, a worker paused (SIGSTOP) past
its death interval, jobs a killed worker took ahead of a free thread, a job
whose policy forbids a second run, and a graceful SIGTERM.

Workers write a heartbeat every `PING` seconds and count another worker as
dead after `DEATH` seconds without one.  Jobs (`recovery_jobs.hold`) say
they started through a file and wait for a release file; each increments a
persistent counter of its own in its own transaction, so the counter says
how often a job's work was committed.
"""

import signal
import time


import zasync
from zasync.interfaces import ACTIVE, ASSIGNED, COMPLETED, NEW, PENDING

import recovery_jobs as jobs
from recovery_jobs import STARTUP, Counter, hold, started_pid, touch, wait_until

PING = 0.5
DEATH = 3.0
#: "A few seconds" after the death interval: the recovering worker's next
#: heartbeat, its claim and the job's run, on a loaded CI machine.
SLACK = 5.0


def start_registered(client, workers, name, **options):
    return jobs.start_registered(client, workers, name, ping=PING, **options)


def counter_of(job):
    return job.args[2].value


def test_a_job_killed_mid_run_completes_once_on_another_worker(client, workers, folder):
    first, second = (workers.start(name, ping=PING) for name in ("first", "second"))
    wait_until(lambda: client.registered(first) and client.registered(second),
               STARTUP, "both workers to register")
    job = client.put(hold, folder, "job", Counter())
    pid = started_pid(folder, "job")
    victim, survivor = (first, second) if pid == first.pid else (second, first)
    assert pid == victim.pid

    victim.kill()
    killed = time.monotonic()
    touch(folder, "job.release")    # the next run goes through at once
    done = zasync.wait_for(job, timeout=jobs.TIMEOUT)
    elapsed = time.monotonic() - killed

    assert done.succeeded, done.failure
    assert counter_of(done) == 1
    assert done.attempt_count == 2
    assert [failure.check(zasync.InterruptedJobError) for failure in done.attempts] == [
        zasync.InterruptedJobError]
    assert done.dispatcher_id == survivor.id
    assert done.result == {"attempt": 2, "pid": survivor.pid}
    assert elapsed < DEATH + SLACK, elapsed
    assert jobs.runs_of(folder, "job") == [(1, victim.pid), (2, survivor.pid)]
    assert jobs.runs_of(folder, "job", "finished") == [(2, survivor.pid)]
    record = client.record(victim.id)
    assert len(record.jobs) == 0
    # counted dead once its heartbeat was older than the death interval, not before
    assert (record.dead_at - record.last_ping).total_seconds() > DEATH
    survivor.wait_log(f"dispatcher {victim.id} is dead; recovered 1 retried")
    assert survivor.alive()


def test_a_worker_restarted_under_its_id_recovers_its_own_job_at_once(
        client, workers, folder):
    # A death interval of a minute: only the restart can recover the job
    # within the test's time.
    first = start_registered(client, workers, "worker", death=60.0)
    job = client.put(hold, folder, "job", Counter())
    assert started_pid(folder, "job") == first.pid
    first.kill()
    touch(folder, "job.release")

    restarted = time.monotonic()
    again = workers.start("worker", ping=PING, death=60.0)   # the same uuid file
    assert again.id == first.id and again.pid != first.pid
    done = zasync.wait_for(job, timeout=jobs.TIMEOUT)
    elapsed = time.monotonic() - restarted

    assert elapsed < STARTUP < 60.0, elapsed
    assert done.succeeded, done.failure
    assert counter_of(done) == 1
    assert done.attempt_count == 2
    assert done.attempts[0].check(zasync.InterruptedJobError)
    assert "restarted" in done.attempts[0].message
    assert done.dispatcher_id == first.id
    assert done.result == {"attempt": 2, "pid": again.pid}
    assert jobs.runs_of(folder, "job") == [(1, first.pid), (2, again.pid)]
    again.wait_log(f"dispatcher {first.id}: recovered 1 job(s) of its earlier run")


def test_a_second_live_process_under_the_same_id_is_refused(client, workers, folder):
    first = start_registered(client, workers, "first", dispatcher_id="shared-id")
    second = workers.start("second", ping=PING, dispatcher_id="shared-id")
    status = second.process.wait(jobs.TIMEOUT)

    assert status not in (0, None)
    assert (f"Error: dispatcher id shared-id is in use by live process "
            f"{first.pid} on this host") in second.log
    assert "Traceback" not in second.log
    assert first.alive()
    record = client.record("shared-id")
    assert record.info["pid"] == first.pid and record.stopped_at is None
    done = zasync.wait_for(client.put(zasync.cli.examples.add, 1, 2), timeout=jobs.TIMEOUT)
    assert (done.result, done.dispatcher_id) == (3, "shared-id")

    # Once the first has stopped, the id is free again.
    assert first.terminate()[0] == 0
    third = start_registered(client, workers, "third", dispatcher_id="shared-id")
    assert client.record("shared-id").info["pid"] == third.pid


def test_a_worker_paused_past_its_death_interval_never_commits_over_the_new_owner(
        client, workers, folder):
    paused = start_registered(client, workers, "paused")
    job = client.put(hold, folder, "job", Counter())
    assert started_pid(folder, "job") == paused.pid

    paused.signal(signal.SIGSTOP)
    try:
        other = workers.start("other", ping=PING)
        # The other worker counts the paused one dead and runs the job again.
        assert started_pid(folder, "job", 2, STARTUP + DEATH + SLACK) == other.pid
        touch(folder, "job.release")
        done = zasync.wait_for(job, timeout=jobs.TIMEOUT)
        assert done.succeeded, done.failure
        assert (done.dispatcher_id, done.result) == (other.id, {"attempt": 2, "pid": other.pid})
        assert client.record(paused.id).dead_at is not None
    finally:
        paused.signal(signal.SIGCONT)

    # Woken, the paused worker's job finds the release file, increments its
    # counter and tries to commit: the commit conflicts, and the job is no
    # longer its own, so the outcome is dropped.
    paused.wait_log(f"job {done.id} was handed on while it ran")
    assert (1, paused.pid) in jobs.runs_of(folder, "job", "finished")
    done = client.job(job)
    assert done.status == COMPLETED and done.succeeded
    assert (done.dispatcher_id, done.result) == (other.id, {"attempt": 2, "pid": other.pid})
    assert done.attempt_count == 2
    assert counter_of(done) == 1
    assert [status for status, _ in client.history(job)].count(COMPLETED) == 1

    # It lives on, and counts as alive again: if it dies now, its jobs are
    # recovered like any other worker's (a record left marked as dead would
    # be skipped by every other worker's search for the dead).
    wait_until(lambda: client.registered(paused), STARTUP, "the paused worker's heartbeat")
    paused.wait_log(f"dispatcher {paused.id}: was counted as dead at ")
    assert other.terminate()[0] == 0
    later = client.put(hold, folder, "later", Counter())
    assert started_pid(folder, "later") == paused.pid
    paused.kill()
    killed = time.monotonic()
    touch(folder, "later.release")
    rescuer = workers.start("rescuer", ping=PING)
    done = zasync.wait_for(later, timeout=jobs.TIMEOUT)
    assert time.monotonic() - killed < STARTUP + DEATH + SLACK
    assert done.succeeded, done.failure
    assert (done.dispatcher_id, done.attempt_count, counter_of(done)) == (rescuer.id, 2, 1)


def test_jobs_a_killed_worker_took_ahead_of_a_free_thread_go_back_to_the_queue(
        client, workers, folder):
    names = [f"job{number}" for number in range(10)]
    put = client.put_many([(hold, (folder, name, Counter())) for name in names])
    # One thread, and under this backlog up to 3 jobs taken ahead of it.
    greedy = workers.start("greedy", ping=PING, threads=1, prefetch=3)

    def held():
        seen = client.jobs(put)
        active = [job.id for job in seen if job.status == ACTIVE]
        assigned = [job.id for job in seen if job.status == ASSIGNED]
        if len(active) == 1 and len(assigned) == 3:
            return active[0], assigned
    active_id, assigned_ids = wait_until(held, STARTUP, "1 job active and 3 assigned")
    by_id = {job.id: (job, name) for job, name in zip(put, names)}
    active, active_name = by_id[active_id]
    assert started_pid(folder, active_name) == greedy.pid

    greedy.kill()
    killed = time.monotonic()
    for name in names:
        touch(folder, f"{name}.release")
    rescuer = workers.start("rescuer", ping=PING, threads=4)
    done = [zasync.wait_for(job, timeout=jobs.TIMEOUT) for job in put]
    assert time.monotonic() - killed < STARTUP + DEATH + SLACK

    assert all(job.succeeded for job in done), [job.failure for job in done]
    assert [counter_of(job) for job in client.jobs(put)] == [1] * len(put)
    assert {job.dispatcher_id for job in done} == {rescuer.id}
    # the running one was interrupted: run again
    assert client.job(active).attempt_count == 2
    assert jobs.runs_of(folder, active_name) == [(1, greedy.pid), (2, rescuer.pid)]
    assert client.history(active) == [
        (NEW, None), (PENDING, None), (ASSIGNED, greedy.id), (ACTIVE, greedy.id),
        (PENDING, None), (ASSIGNED, rescuer.id), (ACTIVE, rescuer.id),
        (COMPLETED, rescuer.id)]
    # the ones not started went back to the queue as they were: run once
    for job_id in assigned_ids:
        job, name = by_id[job_id]
        seen = client.job(job)
        assert (seen.attempt_count, seen.attempts) == (1, ())
        assert jobs.runs_of(folder, name) == [(1, rescuer.pid)]
        assert client.history(job) == [
            (NEW, None), (PENDING, None), (ASSIGNED, greedy.id), (PENDING, None),
            (ASSIGNED, rescuer.id), (ACTIVE, rescuer.id), (COMPLETED, rescuer.id)]
    rescuer.wait_log(f"dispatcher {greedy.id} is dead; recovered 3 requeued, 1 retried")


def test_a_job_that_must_not_run_twice_fails_when_its_worker_is_killed(
        client, workers, folder):
    first = start_registered(client, workers, "first")
    job = client.put(hold, folder, "job", Counter(), retry_policy=zasync.NeverRetry(),
                     callbacks={"failure": jobs.describe_outcome})
    assert started_pid(folder, "job") == first.pid
    second = workers.start("second", ping=PING)
    first.kill()
    touch(folder, "job.release")     # were it run again, it would succeed

    done = zasync.wait_for(job, timeout=STARTUP + DEATH + SLACK)
    assert done.failed
    assert done.failure.check(zasync.InterruptedJobError)
    assert done.attempt_count == 1
    assert counter_of(done) == 0
    assert jobs.runs_of(folder, "job") == [(1, first.pid)]
    [callback] = done.callbacks
    assert callback.status == COMPLETED and callback.succeeded
    assert callback.result.startswith("failed: zasync.interfaces.InterruptedJobError: ")
    assert callback.dispatcher_id == second.id


def test_sigterm_lets_the_running_job_finish_and_gives_back_the_others(
        client, workers, folder):
    names = [f"job{number}" for number in range(10)]
    put = client.put_many([(hold, (folder, name, Counter())) for name in names])
    worker = workers.start("worker", "--grace", "20", ping=PING, threads=1, prefetch=3)

    def held():
        seen = client.jobs(put)
        active = [job for job, now in zip(put, seen) if now.status == ACTIVE]
        if len(active) == 1 and sum(job.status == ASSIGNED for job in seen) == 3:
            return active[0]
    active = wait_until(held, STARTUP, "1 job active and 3 assigned")
    active_name = names[put.index(active)]
    started_pid(folder, active_name)

    worker.signal(signal.SIGTERM)
    began = time.monotonic()
    worker.wait_log("SIGTERM received")
    late = client.put(hold, folder, "late", Counter())
    assert worker.alive()            # draining: its job still runs
    touch(folder, f"{active_name}.release")
    status = worker.process.wait(jobs.TIMEOUT)
    assert status == 0
    assert time.monotonic() - began < 20.0      # within --grace

    seen = client.jobs(put + [late])
    finished = seen[put.index(active)]
    assert finished.succeeded and counter_of(finished) == 1
    assert finished.dispatcher_id == worker.id
    others = [job for job in seen if job is not finished]
    assert {job.status for job in others} == {PENDING}
    assert {job.dispatcher_id for job in others} == {None}
    assert {job.attempt_count for job in others} == {0}
    assert sum((ASSIGNED, worker.id) in client.history(job) for job in others) == 3
    assert jobs.runs_of(folder, active_name) == [(1, worker.pid)]
    assert len(jobs.runs(folder)) == 2          # started and finished, one job
    record = client.record(worker.id)
    assert record.stopped_at is not None and len(record.jobs) == 0
    assert "Traceback" not in worker.log
