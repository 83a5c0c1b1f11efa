"""A job's status changes kept as one string: what is written reads back
the same, dispatcher ids that cannot be written so keep the tuple form,
and jobs stored with a tuple of changes load, run and read as before."""

import datetime

import zasync
from zasync.interfaces import ACTIVE, ASSIGNED, COMPLETED, NEW, PENDING
from zasync.job import clock, ledger

import unit_jobs

D1 = "c12ec1c2f1b9411ba58ce71e9a74c193"


def built(changes, start=()):
    history = start
    for change in changes:
        history = ledger.append(history, *change)
    return history


def test_changes_read_back_as_written():
    changes = [(NEW, 100, None), (PENDING, 105, None), (ASSIGNED, 200, D1),
               (ACTIVE, 200, D1), (COMPLETED, 350, D1), (PENDING, 360, None),
               (ASSIGNED, 400, "other worker"), (ACTIVE, 401, D1), (COMPLETED, 402, "")]
    history = built(changes)
    assert isinstance(history, str)
    assert ledger.entries(history) == tuple(changes)
    assert ledger.last_micros(history) == 402
    assert ledger.first_micros(history) == 100 and ledger.first_micros("") is None
    # one id written once, then the line before's
    assert history.count(D1) == 2


def test_ids_that_cannot_be_written_keep_the_tuple_form():
    for odd in ("=", "two\nlines"):
        changes = [(NEW, 1, None), (ASSIGNED, 2, odd), (ACTIVE, 3, odd), (COMPLETED, 4, D1)]
        history = built(changes)
        assert isinstance(history, tuple)
        assert ledger.entries(history) == tuple(changes)
        assert ledger.last_micros(history) == 4 and ledger.first_micros(history) == 1
    # an odd id after a string: the whole history becomes a tuple
    history = built([(ASSIGNED, 6, "=")], built([(NEW, 5, None)]))
    assert history == ((NEW, 5, None), (ASSIGNED, 6, "="))


def test_a_tuple_stored_before_is_written_anew_as_a_string():
    stored = ((NEW, 1, None), (PENDING, 2, None), (ASSIGNED, 3, D1))
    assert ledger.entries(stored) == stored and ledger.last_micros(stored) == 3
    history = ledger.append(stored, ACTIVE, 4, D1)
    assert isinstance(history, str)
    assert ledger.entries(history) == stored + ((ACTIVE, 4, D1),)


def test_a_job_stored_with_a_tuple_of_changes_loads_and_runs(db):
    # As an earlier version stored it: its changes as a tuple of tuples.
    with db.transaction() as conn:
        job = zasync.get_queue(conn).put(unit_jobs.add, 2, 3)
        job._history = tuple(ledger.entries(job._history))
        stored = job.status_history
        oid = job._p_oid
    with db.transaction() as conn:
        job = conn.get(oid)
        assert isinstance(job._history, tuple) and job.status_history == stored
    with zasync.Dispatcher(db, threads=1, poll_interval=0.05):
        with db.transaction() as conn:
            done = zasync.wait_for(conn.get(oid), timeout=30)
            assert done.result == 5
            history = done.status_history
            assert history[:2] == stored
            assert [status for status, _, _ in history[2:]] == [ASSIGNED, ACTIVE, COMPLETED]
            assert {by for _, _, by in history[2:]} == {done.dispatcher_id}
            assert history[-1][1] == done.ended_at
            assert clock.to_micros(done.started_at) == clock.to_micros(history[3][1])


def test_a_job_knows_when_it_was_made_from_its_first_change(db):
    with db.transaction() as conn:
        job = zasync.get_queue(conn).put(unit_jobs.add, 1, 2)
        made = job.created_at
    with db.transaction() as conn:
        job = zasync.get_queue(conn).get(job.id)
        assert isinstance(job._history, str)      # written as lines by the put
        assert job.created_at == made == job.status_history[0][1]


def test_a_put_records_when_it_was_made_and_put_and_is_due_then(db):
    before = datetime.datetime.now(datetime.timezone.utc)
    with db.transaction() as conn:
        job = zasync.get_queue(conn).put(unit_jobs.add, 1, 2)
        job_id = job.id
    after = datetime.datetime.now(datetime.timezone.utc)
    with db.transaction() as conn:
        job = zasync.get_queue(conn).get(job_id)
        (new, made, by_new), (pending, put, by_put) = job.status_history
        assert (new, pending, by_new, by_put) == (NEW, PENDING, None, None)
        assert before <= made == job.created_at <= put <= after
        assert job.begin_after == put
