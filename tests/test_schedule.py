"""Recurring jobs: `queue.schedule(...)` with real dispatchers on a
FileStorage, and two worker processes over a real ZEO server.

Periods are a fraction of a second.  Where a test lets time pass with no
worker running (the scenario of missed occurrences), the sleep *is* the
scenario; everything else waits for a condition, with a timeout.
"""

import datetime
import types

import pytest
import transaction
from ZODB.POSException import ConflictError
from zope.interface.verify import verifyObject

import zasync
from zasync.interfaces import COMPLETED, PENDING, ISchedule
from zasync.queue.schedule import Occurrence, Schedule

import schedule_jobs
from process_jobs import Workers, wait_until

UTC = datetime.timezone.utc
TIMEOUT = 30.0
PERIOD = datetime.timedelta(seconds=0.25)
HOUR_PERIOD = datetime.timedelta(hours=1)


def utc(*args):
    return datetime.datetime(*args, tzinfo=UTC)


def snapshot(db, name, queue=""):
    """The schedule `name` as committed now, as plain values."""
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    try:
        found = zasync.get_queue(conn, queue).schedules.get(name)
        if found is None:
            return None
        next_job = found.next_job
        last = found.last_job
        return types.SimpleNamespace(
            runs=found.runs, skipped=found.skipped, next_at=found.next_at,
            next_status=None if next_job is None else next_job.status,
            last_at=found.last_at,
            last_skipped=None if last is None else last.late_skipped)
    finally:
        tm.abort()
        conn.close()


def define(db, *args, **kwargs):
    """Define a schedule in a transaction of its own; return its name."""
    with db.transaction() as conn:
        return zasync.get_queue(conn).schedule(*args, **kwargs).name


def unschedule(db, name):
    """Unschedule in a transaction retried on conflicts (cancelling the
    pending occurrence may conflict with a worker moving it out of the
    inbox)."""
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    try:
        for attempt in tm.attempts(5):
            with attempt:
                zasync.get_queue(conn).unschedule(name)
    finally:
        conn.close()


def cancelled(job):
    return job.failure is not None and job.failure.check(zasync.Cancelled) is not None


def at(run):
    return datetime.datetime.fromisoformat(run[0])


def periods(first, second, every=PERIOD):
    """How many periods from one occurrence time to another (exact)."""
    count, rest = divmod(second - first, every)
    assert rest == datetime.timedelta(0), (first, second)
    return count


@pytest.fixture
def log_dir(tmp_path):
    folder = tmp_path / "runs"
    folder.mkdir()
    return str(folder)


def start_dispatcher(db):
    dispatcher = zasync.Dispatcher(db, threads=2, poll_interval=0.05)
    dispatcher.start()
    return dispatcher


# -- the object ----------------------------------------------------------------

def test_a_schedule_provides_its_interface(db):
    with db.transaction() as conn:
        queue = zasync.get_queue(conn)
        made = queue.schedule(schedule_jobs.record, "/nowhere", every=PERIOD, name="s")
        assert verifyObject(ISchedule, made)
        assert queue.schedules["s"] is made and made.queue is queue
        assert made.callable_name == "schedule_jobs.record"
        assert isinstance(made.next_job, Occurrence)
        assert made.next_job.status == PENDING
        assert made.next_job.begin_after == made.next_at == made.start
        assert made.runs == made.skipped == 0 and made.last_job is None


def test_the_name_defaults_to_the_callable_and_is_unique(db):
    with db.transaction() as conn:
        queue = zasync.get_queue(conn)
        made = queue.schedule(schedule_jobs.fail, "x", every=PERIOD)
        assert made.name == "schedule_jobs.fail"
        with pytest.raises(zasync.ConfigurationError, match="schedule_jobs.fail") as info:
            queue.schedule(schedule_jobs.fail, "y", cron="* * * * *")
        assert type(info.value).__name__ == "DuplicateScheduleError"
        assert list(queue.schedules) == ["schedule_jobs.fail"]


@pytest.mark.parametrize("kwargs, message", [
    (dict(), "exactly one of every"),
    (dict(every=PERIOD, cron="* * * * *"), "exactly one of every"),
    (dict(every=datetime.timedelta(0)), r"every=datetime.timedelta\(0\)"),
    (dict(every=-PERIOD), "positive"),
    (dict(every=5), "every=5"),
    (dict(cron="61 * * * *"), r"cron='61 \* \* \* \*'"),
    (dict(cron="every day"), "cron='every day'"),
    (dict(cron=5), "cron=5"),
    (dict(every=PERIOD, catch_up="some"), "catch_up='some'"),
    (dict(every=PERIOD, name="a/b"), "'a/b'"),
    (dict(every=PERIOD, name=""), "''"),
    (dict(every=PERIOD, priority="high"), "priority='high'"),
    (dict(every=PERIOD, retry_policy="again"), "retry_policy='again'"),
    (dict(every=PERIOD, start=datetime.datetime(2030, 1, 1)), "timezone"),
])
def test_bad_input_is_refused_naming_the_value_and_nothing_is_written(db, kwargs, message):
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    try:
        queue = zasync.get_queue(conn)
        with pytest.raises(zasync.ConfigurationError, match=message):
            queue.schedule(schedule_jobs.fail, "x", **kwargs)
        assert len(queue.schedules) == 0 and len(queue) == 0
    finally:
        tm.abort()
        conn.close()


def test_a_callable_a_worker_cannot_import_is_refused(db):
    with db.transaction() as conn:
        with pytest.raises(zasync.UnstorableError, match="lambda"):
            zasync.get_queue(conn).schedule(lambda: None, every=PERIOD)


def test_unscheduling_an_unknown_name_says_which_exist(db):
    define(db, schedule_jobs.fail, "x", every=PERIOD, name="known")
    with db.transaction() as conn:
        with pytest.raises(KeyError, match="'missing'.*'known'") as info:
            zasync.get_queue(conn).unschedule("missing")
        assert type(info.value).__name__ == "UnknownScheduleError"


# -- times -----------------------------------------------------------------------

def test_cron_next_times_are_in_utc():
    made = Schedule(schedule_jobs.fail, "x", cron="*/5 * * * *")
    assert made.next_time(utc(2026, 3, 1, 12, 3, 20)) == utc(2026, 3, 1, 12, 5)
    assert made.next_time(utc(2026, 3, 1, 12, 5)) == utc(2026, 3, 1, 12, 10)
    assert made.next_time(utc(2026, 3, 1, 23, 58)) == utc(2026, 3, 2, 0, 0)
    paris = datetime.timezone(datetime.timedelta(hours=1))
    weekly = Schedule(schedule_jobs.fail, "x", cron="0 9 * * 1")   # Mondays 09:00 UTC
    found = weekly.next_time(datetime.datetime(2026, 3, 4, 10, 0, tzinfo=paris))
    assert found == utc(2026, 3, 9, 9, 0) and found.utcoffset() == datetime.timedelta(0)
    assert made.first_time(utc(2026, 3, 1, 12, 5)) == utc(2026, 3, 1, 12, 5)


def test_a_cron_schedule_starts_no_sooner_than_start():
    made = Schedule(schedule_jobs.fail, "x", cron="0 * * * *", start=utc(2026, 5, 1, 6, 30))
    assert made.first_time(utc(2026, 1, 1)) == utc(2026, 5, 1, 7, 0)
    assert made.first_time(utc(2026, 6, 1, 0, 1)) == utc(2026, 6, 1, 1, 0)


def test_every_counts_from_start():
    start = utc(2026, 1, 1, 0, 0)
    made = Schedule(schedule_jobs.fail, "x", every=datetime.timedelta(minutes=10), start=start)
    assert made.first_time(utc(2025, 12, 1)) == start
    assert made.first_time(utc(2026, 1, 1, 0, 25)) == utc(2026, 1, 1, 0, 30)
    assert made.next_time(utc(2026, 1, 1, 0, 30)) == utc(2026, 1, 1, 0, 40)
    assert made._count(utc(2026, 1, 1, 0, 10), utc(2026, 1, 1, 1, 0)) == 6
    default = Schedule(schedule_jobs.fail, "x", every=datetime.timedelta(minutes=10))
    assert default.start == default.created_at + datetime.timedelta(minutes=10)


# -- runs ------------------------------------------------------------------------

def test_one_run_per_period_never_overlapping(db, log_dir):
    name = define(db, schedule_jobs.record, log_dir, every=PERIOD, name="tick")
    dispatcher = start_dispatcher(db)
    try:
        wait_until(lambda: len(schedule_jobs.runs(log_dir)) >= 5, TIMEOUT)
        unschedule(db, name)
    finally:
        dispatcher.stop(timeout=TIMEOUT)
    runs = schedule_jobs.runs(log_dir)
    times = [at(run) for run in runs]
    assert len(set(times)) == len(times)               # each occurrence once
    # On the schedule's grid, in order; a time that passed while the run
    # before was late is skipped, as documented (seen at a load of 13:
    # periods 0, 1, 2, 3, 5 of 0.25 s), never run late beside another.
    counted = [periods(times[0], t) for t in times]
    assert counted == sorted(set(counted)) and counted[0] == 0, counted
    for run in runs:
        assert run[3] >= at(run).timestamp()           # not before its time
    for before, after in zip(runs, runs[1:]):
        assert after[3] >= before[4]                   # never overlapping
    seen = snapshot(db, name)
    assert seen is None                                # unscheduled


def test_a_failing_occurrence_does_not_stop_the_schedule(db):
    name = define(db, schedule_jobs.fail, "boom", every=PERIOD)
    dispatcher = start_dispatcher(db)
    try:
        wait_until(lambda: snapshot(db, name).runs >= 2, TIMEOUT)
    finally:
        dispatcher.stop(timeout=TIMEOUT)
    with db.transaction() as conn:
        made = zasync.get_queue(conn).schedules[name]
        assert made.last_job.failed and "boom" in made.last_job.failure.message
        assert made.next_job.status == PENDING


def test_a_cron_schedule_runs_at_its_times(db, log_dir):
    # six fields: the last is seconds
    name = define(db, schedule_jobs.record, log_dir, cron="* * * * * *", name="each second")
    dispatcher = start_dispatcher(db)
    try:
        wait_until(lambda: len(schedule_jobs.runs(log_dir)) >= 2, TIMEOUT)
        unschedule(db, name)
    finally:
        dispatcher.stop(timeout=TIMEOUT)
    times = [at(run) for run in schedule_jobs.runs(log_dir)]
    assert all(t.microsecond == 0 for t in times)
    assert [periods(times[0], t, datetime.timedelta(seconds=1))
            for t in times] == list(range(len(times)))


def _missed(db, log_dir, catch_up, missed_periods=5):
    """Define a schedule while no worker runs, let `missed_periods` pass,
    then start a dispatcher; return (name, the first occurrence's time,
    when the dispatcher started, the dispatcher)."""
    name = define(db, schedule_jobs.record, log_dir, every=PERIOD, catch_up=catch_up,
                  name=f"catch-up {catch_up}")
    first = snapshot(db, name).next_at
    # every worker is down for several periods: the time passing is the scenario
    wait_until(lambda: zasync.job.clock.now() > first + missed_periods * PERIOD, TIMEOUT,
               interval=0.05)
    return name, first, zasync.job.clock.now(), start_dispatcher(db)


def test_catch_up_one_runs_the_late_occurrence_once_then_the_next_future_one(db, log_dir):
    name, first, restarted, dispatcher = _missed(db, log_dir, "one")
    try:
        wait_until(lambda: len(schedule_jobs.runs(log_dir)) >= 2, TIMEOUT)
        # counted by each run's callback, after the run: wait for the count
        wait_until(lambda: snapshot(db, name).runs >= 2, TIMEOUT)
        unschedule(db, name)
    finally:
        dispatcher.stop(timeout=TIMEOUT)
    runs = schedule_jobs.runs(log_dir)
    assert at(runs[0]) == first                       # the late one, once
    second = at(runs[1])
    assert second.timestamp() >= runs[0][4]           # in the future when put
    passed_over = periods(first, second) - 1
    assert passed_over >= 4
    with db.transaction() as conn:
        # unscheduled: read what it counted from its last occurrence's callback
        made = conn.get(_schedule_oid(conn, runs[1][1]))
        assert made.skipped >= passed_over and made.runs >= 2


def _schedule_oid(conn, job_id):
    return zasync.get_queues(conn).find_job(job_id).schedule._p_oid


def test_catch_up_all_runs_every_missed_occurrence_one_after_another(db, log_dir):
    name, first, restarted, dispatcher = _missed(db, log_dir, "all")
    try:
        wait_until(lambda: len(schedule_jobs.runs(log_dir)) >= 7, TIMEOUT)
        unschedule(db, name)
    finally:
        dispatcher.stop(timeout=TIMEOUT)
    runs = schedule_jobs.runs(log_dir)
    times = [at(run) for run in runs]
    assert times[0] == first
    assert [periods(first, t) for t in times] == list(range(len(times)))   # no gap
    for before, after in zip(runs, runs[1:]):
        assert after[3] >= before[4]                   # one after another
    # the missed ones ran once the worker was back, late
    assert all(run[3] >= restarted.timestamp() for run in runs[:5])
    with db.transaction() as conn:
        assert conn.get(_schedule_oid(conn, runs[0][1])).skipped == 0


def test_catch_up_none_skips_the_late_occurrence_without_calling_it(db, log_dir):
    name, first, restarted, dispatcher = _missed(db, log_dir, "none")
    try:
        wait_until(lambda: len(schedule_jobs.runs(log_dir)) >= 1, TIMEOUT)
        # the run is counted by its callback, after the run itself: an
        # unschedule before that would leave it uncounted
        wait_until(lambda: snapshot(db, name).runs >= 1, TIMEOUT)
        unschedule(db, name)
    finally:
        dispatcher.stop(timeout=TIMEOUT)
    runs = schedule_jobs.runs(log_dir)
    ran = at(runs[0])
    assert ran > restarted                           # the late one did not run
    with db.transaction() as conn:
        job = zasync.get_queues(conn).find_job(runs[0][1])
        made = job.schedule
        assert made.runs >= 1
        assert made.skipped >= periods(first, ran) >= 5  # the late one and those passed over
        late = [j for j in zasync.get_queue(conn).jobs()
                if isinstance(j, Occurrence) and j.occurs_at == first]
        [late] = late
        assert late.late_skipped and late.succeeded and late.result is None


def test_a_run_longer_than_the_period_is_not_overlapped(db, log_dir):
    name = define(db, schedule_jobs.record, log_dir, 0.6, every=PERIOD, name="long")
    dispatcher = start_dispatcher(db)
    try:
        wait_until(lambda: len(schedule_jobs.runs(log_dir)) >= 2, TIMEOUT)
        seen = snapshot(db, name)
        unschedule(db, name)
    finally:
        dispatcher.stop(timeout=TIMEOUT)
    runs = schedule_jobs.runs(log_dir)
    assert runs[1][3] >= runs[0][4]
    assert periods(at(runs[0]), at(runs[1])) >= 3     # 0.6 s at least 2 periods over
    assert seen.skipped >= 2


# -- removing ------------------------------------------------------------------------

def test_unschedule_cancels_the_pending_occurrence(db, dispatcher):
    name = define(db, schedule_jobs.fail, "x", every=datetime.timedelta(hours=1))
    with db.transaction() as conn:
        pending = zasync.get_queue(conn).schedules[name].next_job
    unschedule(db, name)
    done = zasync.wait_for(pending, timeout=TIMEOUT)   # its callback ran, put nothing
    assert done.cancelled and done.status == COMPLETED
    with db.transaction() as conn:
        queue = zasync.get_queue(conn)
        assert len(queue) == 0 and len(queue.schedules) == 0


def test_schedule_remove_is_unschedule(db):
    with db.transaction() as conn:
        made = zasync.get_queue(conn).schedule(schedule_jobs.fail, "x", every=PERIOD)
        job = made.next_job
        assert made.remove() is True and made.remove() is False
        assert cancelled(job) and len(zasync.get_queue(conn).schedules) == 0


def test_the_pending_occurrence_cannot_be_removed_but_can_be_cancelled(db, dispatcher):
    name = define(db, schedule_jobs.fail, "x", every=datetime.timedelta(hours=1))
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    try:
        for attempt in tm.attempts(5):
            with attempt:
                queue = zasync.get_queue(conn)
                job = queue.schedules[name].next_job
                with pytest.raises(zasync.JobStateError, match="cancel it to skip this run"):
                    queue.remove(job)
                job.cancel()
    finally:
        conn.close()
    zasync.wait_for(job, timeout=TIMEOUT)
    seen = wait_until(lambda: (s := snapshot(db, name)).next_at != job.begin_after and s)
    assert seen.skipped == 1 and seen.runs == 0
    assert seen.next_at == job.begin_after + datetime.timedelta(hours=1)


def test_a_queue_of_an_older_database_reads_no_schedules_without_writing(db):
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    try:
        queue = zasync.get_queue(conn)
        del queue._schedules
        tm.commit()
        assert len(queue.schedules) == 0 and not conn._registered_objects
        queue.schedule(schedule_jobs.fail, "x", every=PERIOD, name="new")
        tm.commit()
        assert list(queue.schedules) == ["new"]
    finally:
        tm.abort()
        conn.close()


# -- worker processes ------------------------------------------------------------------

def test_two_worker_processes_over_zeo_run_each_occurrence_once(zeo_server, tmp_path, log_dir):
    db = zasync.testing.installed_db(zeo_server.uri)
    try:
        with Workers() as workers:
            for index in range(2):
                workers.start(str(tmp_path / f"worker-{index}.log"), zeo_server.uri,
                              "--threads", "2", "--poll-interval", "0.05",
                              "--id", f"worker-{index}")
            name = define(db, schedule_jobs.record, log_dir, every=PERIOD,
                          catch_up="all", name="shared")
            wait_until(lambda: len(schedule_jobs.runs(log_dir)) >= 12, 2 * TIMEOUT)
            unschedule(db, name)
        logs = "".join(worker.log for worker in workers)
        assert "Traceback" not in logs, logs
    finally:
        db.close()
    runs = schedule_jobs.runs(log_dir)
    times = [at(run) for run in runs]
    assert len(set(times)) == len(times), runs          # none ran twice
    assert [periods(times[0], t) for t in times] == list(range(len(times)))
    for before, after in zip(runs, runs[1:]):
        assert after[3] >= before[4]


def test_eager_mode_leaves_the_runs_of_a_schedule_pending_until_due(db):
    with zasync.testing.eager() as ran:
        with db.transaction() as conn:
            queue = zasync.get_queue(conn)
            queue.schedule(schedule_jobs.fail, "x", every=datetime.timedelta(hours=1))
            plain = queue.put(schedule_jobs.fail, "now")
    assert ran.job_ids == [plain.id]
    with db.transaction() as conn:
        [pending] = list(zasync.get_queue(conn))
        assert isinstance(pending, Occurrence) and pending.status == PENDING


def test_a_worker_killed_mid_run_is_recovered_and_the_schedule_goes_on(
        zeo_server, tmp_path):
    import recovery_jobs
    folder = tmp_path / "jobs"
    folder.mkdir()
    db = zasync.testing.installed_db(zeo_server.uri)
    client = recovery_jobs.Client(db)
    workers = recovery_jobs.Workers(tmp_path, zeo_server.uri)
    try:
        started = [workers.start(name, ping=0.5, death=3.0) for name in ("first", "second")]
        wait_until(lambda: all(client.registered(w) for w in started), 2 * TIMEOUT)
        define(db, recovery_jobs.hold, str(folder), "tick", every=PERIOD, name="crashy")
        pid = recovery_jobs.started_pid(str(folder), "tick")
        [victim] = [w for w in started if w.pid == pid]
        victim.kill()
        recovery_jobs.touch(str(folder), "tick.release")   # every later run goes through
        wait_until(lambda: snapshot(db, "crashy").runs >= 3, 2 * TIMEOUT)
        unschedule(db, "crashy")
    finally:
        workers.end_all()
        client.close()
    with db.transaction() as conn:
        queue = zasync.get_queue(conn)
        runs = sorted((job for job in queue.jobs() if isinstance(job, Occurrence)),
                      key=lambda job: job.occurs_at)
        first = runs[0]
        assert first.succeeded and first.attempt_count == 2
        assert first.attempts[0].check(zasync.InterruptedJobError)
        assert first.result["pid"] != victim.pid
        times = [job.occurs_at for job in runs]
        assert len(set(times)) == len(times)         # one job per occurrence
        # each callback put one next run: the runs form one chain
        assert all(job.callbacks[0].result == after.id for job, after in zip(runs, runs[1:]))
    db.close()


def test_a_stalled_schedule_is_shown_and_resumed(db):
    with db.transaction() as conn:
        made = zasync.get_queue(conn).schedule(schedule_jobs.fail, "x", every=HOUR_PERIOD)
        assert not made.stalled and made.resume() is None
        job = made.next_job
        job._callbacks = ()            # as if the callback that puts the next had failed
        job()
        assert made.stalled and made.next_job is job
        again = made.resume()
        assert again.status == PENDING and made.next_job is again and not made.stalled
        assert again.begin_after > job.begin_after - HOUR_PERIOD
        made.remove()
        assert not made.stalled        # removed: nothing is expected of it


# -- concurrent transactions (two transaction managers on the FileStorage) ---------

class Session:
    """A connection with a transaction manager of its own."""

    def __init__(self, db):
        self.tm = transaction.TransactionManager()
        self.conn = db.open(transaction_manager=self.tm)
        self.tm.begin()
        self.queue = zasync.get_queue(self.conn)

    def close(self):
        self.tm.abort()
        self.conn.close()


@pytest.fixture
def sessions(db):
    opened = []

    def make():
        opened.append(Session(db))
        return opened[-1]
    yield make
    for session in opened:
        session.close()


def test_two_transactions_defining_one_name_leave_one_schedule(sessions):
    first, second = sessions(), sessions()
    first.queue.schedule(schedule_jobs.fail, "a", every=HOUR_PERIOD, name="same")
    second.queue.schedule(schedule_jobs.fail, "b", every=HOUR_PERIOD, name="same")
    first.tm.commit()
    with pytest.raises(ConflictError):
        second.tm.commit()
    second.tm.abort()
    with pytest.raises(zasync.DuplicateScheduleError):
        second.queue.schedule(schedule_jobs.fail, "b", every=HOUR_PERIOD, name="same")
    assert second.queue.schedules["same"].args == ("a",)


@pytest.mark.parametrize("first_commits", ["run", "unschedule"])
def test_unschedule_racing_a_run_leaves_no_run_behind(db, sessions, first_commits):
    setup = sessions()
    setup.queue.schedule(schedule_jobs.fail, "x", every=HOUR_PERIOD, name="race",
                         start=zasync.job.clock.now())
    setup.tm.commit()
    runner, operator = sessions(), sessions()
    job = runner.queue.schedules["race"].next_job
    job()                                   # runs, and its callback puts the next
    operator.queue.unschedule("race")       # cancels the run it sees pending
    order = [runner, operator] if first_commits == "run" else [operator, runner]
    order[0].tm.commit()
    with pytest.raises(ConflictError):
        order[1].tm.commit()
    order[1].tm.abort()
    if first_commits == "run":              # the operator retries, and wins
        operator.queue.unschedule("race")
        operator.tm.commit()
    check = sessions()
    assert len(check.queue.schedules) == 0
    pending = [j for j in check.queue if isinstance(j, Occurrence)]
    assert pending == []                    # nothing left to run for ever
