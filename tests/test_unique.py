"""Unique jobs: `queue.put(..., key=...)` adds no second job of a key while
one is pending or active, also when two producers race."""

import pytest
import transaction
from BTrees.OOBTree import OOBTree
from ZODB.POSException import ConflictError

import zasync
from zasync.interfaces import COMPLETED, NEW, PENDING

import unit_jobs

TIMEOUT = 30


class Producer:
    """A connection with a transaction manager of its own."""

    def __init__(self, db):
        self.tm = transaction.TransactionManager()
        self.conn = db.open(transaction_manager=self.tm)
        self.tm.begin()

    @property
    def queue(self):
        return zasync.get_queue(self.conn)

    def close(self):
        self.tm.abort()
        self.conn.close()


@pytest.fixture
def producers(db):
    opened = []

    def make():
        opened.append(Producer(db))
        return opened[-1]
    yield make
    for producer in opened:
        producer.close()


def test_a_second_put_of_a_key_returns_the_first_job_and_writes_nothing(db, producers):
    first = producers()
    job = first.queue.put(unit_jobs.add, 1, 2, key="report-2026-Q3")
    assert job.key == "report-2026-Q3"
    first.tm.commit()
    second = producers()
    queue = second.queue
    again = queue.put(unit_jobs.add, 5, 6, key="report-2026-Q3")
    assert again.id == job.id and again.args == (1, 2)
    assert not second.conn._registered_objects   # nothing written
    assert queue.get_by_key("report-2026-Q3").id == job.id
    assert len(queue) == 1


def test_other_keys_and_no_key_add_jobs(db, producers):
    queue = producers().queue
    a = queue.put(unit_jobs.add, 1, 2, key="a")
    b = queue.put(unit_jobs.add, 1, 2, key="b")
    c = queue.put(unit_jobs.add, 1, 2)
    d = queue.put(unit_jobs.add, 1, 2)
    assert len({a.id, b.id, c.id, d.id}) == 4
    assert c.key is None and queue.get_by_key("c") is None


@pytest.mark.parametrize("bad", ["", 42, b"key", ("a",), False])
def test_a_bad_key_is_refused_naming_it(db, producers, bad):
    queue = producers().queue
    with pytest.raises(zasync.ConfigurationError, match="key=") as info:
        queue.put(unit_jobs.add, 1, 2, key=bad)
    assert repr(bad) in str(info.value)
    assert len(queue) == 0


def test_the_key_is_free_once_the_job_completed(db, dispatcher, producers):
    producer = producers()
    job = producer.queue.put(unit_jobs.add, 1, 2, key="once")
    producer.tm.commit()
    done = zasync.wait_for(job, timeout=TIMEOUT)
    assert done.status == COMPLETED and done.key == "once"
    producer.tm.begin()
    assert producer.queue.get_by_key("once") is None
    again = producer.queue.put(unit_jobs.add, 3, 4, key="once")
    assert again.id != job.id and again.status == PENDING


def test_cancel_and_remove_free_the_key(db, producers):
    queue = producers().queue
    cancelled = queue.put(unit_jobs.add, 1, 2, key="c")
    removed = queue.put(unit_jobs.add, 1, 2, key="r")
    cancelled.cancel()
    queue.remove(removed)
    assert removed.status == NEW
    assert queue.get_by_key("c") is None and queue.get_by_key("r") is None
    assert queue.put(unit_jobs.add, 1, 2, key="c") is not cancelled


def test_retry_takes_the_key_again_or_refuses_if_held(db, producers):
    producer = producers()
    queue = producer.queue
    failed = queue.put(unit_jobs.fail_value, "no", key="k")
    failed()                       # run here: fails, frees the key
    assert failed.failed and queue.get_by_key("k") is None
    holder = queue.put(unit_jobs.add, 1, 2, key="k")
    with pytest.raises(zasync.JobStateError, match=f"held by job {holder.id}"):
        queue.retry(failed)
    assert failed.failed
    holder.cancel()
    queue.retry(failed)
    assert failed.status == PENDING and queue.get_by_key("k") is failed


def test_a_queue_of_an_older_database_gets_its_key_index_on_first_put(db, producers):
    producer = producers()
    queue = producer.queue
    del queue._key_lanes           # as stored before keys existed
    producer.tm.commit()
    producer.tm.begin()
    assert queue.get_by_key("x") is None
    assert not producer.conn._registered_objects   # reading wrote nothing
    job = queue.put(unit_jobs.add, 1, 2, key="x")
    assert queue._key_lanes is not None and queue.get_by_key("x") is job
    assert queue.get_by_key("") is None


def test_a_key_btree_of_an_older_database_is_read_then_moved_into_lanes(db, producers):
    producer = producers()
    queue = producer.queue
    del queue._key_lanes           # as stored with keys in a BTree
    queue._keys = OOBTree({"": None})
    held = queue.put(unit_jobs.add, 1, 2, key="held")
    done = queue.put(unit_jobs.add, 1, 2, key="done")
    assert queue._keys["held"] is held
    done()                          # completes: frees its key
    assert "done" not in queue._keys
    producer.tm.commit()
    zasync.install(db)
    producer.tm.begin()
    assert queue._keys is None and queue._key_lanes is not None
    assert queue.get_by_key("held").id == held.id and queue.get_by_key("done") is None
    assert queue.put(unit_jobs.add, 3, 4, key="held").id == held.id


def test_a_put_of_a_key_merges_with_a_completion_in_a_full_index(db, producers):
    # With the keys in a BTree, a put splitting a full bucket while a job of
    # that bucket completed conflicted, in the producer's transaction.
    setup = producers()
    held = [setup.queue.put(unit_jobs.add, 0, n, key=f"k{n:02}") for n in range(40)]
    setup.tm.commit()
    runner, producer = producers(), producers()
    for job in held[::3]:           # a worker completes some of them
        runner.conn.get(job._p_oid)()
    new = [producer.queue.put(unit_jobs.add, 1, n, key=f"k{n:02}-new") for n in range(40)]
    runner.tm.commit()
    producer.tm.commit()           # merged: no ConflictError
    check = producers()
    assert [check.queue.get_by_key(job.key) for job in held[::3]] == [None] * 14
    assert [check.queue.get_by_key(job.key).id for job in held[1::3]] == [
        job.id for job in held[1::3]]
    assert [check.queue.get_by_key(job.key).id for job in new] == [job.id for job in new]


def test_two_producers_racing_one_key_end_with_one_job(db, producers):
    first, second = producers(), producers()
    one = first.queue.put(unit_jobs.add, 1, 2, key="race")
    other = second.queue.put(unit_jobs.add, 3, 4, key="race")
    first.tm.commit()
    with pytest.raises(ConflictError):
        second.tm.commit()
    second.tm.abort()
    # the producer's retry finds the job the other committed
    for attempt in second.tm.attempts(3):
        with attempt:
            found = second.queue.put(unit_jobs.add, 3, 4, key="race")
    assert found.id == one.id != other.id
    assert len(second.queue) == 1


def test_two_producers_putting_different_keys_merge(db, producers):
    setup = producers()
    for index in range(10):
        setup.queue.put(unit_jobs.add, 0, index, key=f"old-{index}")
    setup.tm.commit()
    first, second = producers(), producers()
    a = first.queue.put(unit_jobs.add, 1, 2, key="a-key")
    b = second.queue.put(unit_jobs.add, 3, 4, key="b-key")
    first.tm.commit()
    second.tm.commit()             # resolved by the BTree: no ConflictError
    check = producers()
    assert check.queue.get_by_key("a-key").id == a.id
    assert check.queue.get_by_key("b-key").id == b.id
    assert len(check.queue) == 12


def test_a_completing_job_and_a_new_key_merge(db, producers):
    first = producers()
    done = first.queue.put(unit_jobs.add, 1, 2, key="done")
    first.queue.put(unit_jobs.add, 1, 2, key="stays")
    first.tm.commit()
    runner, producer = producers(), producers()
    runner.conn.get(done._p_oid)()     # completes in the runner's transaction
    producer.queue.put(unit_jobs.add, 5, 6, key="new")
    producer.tm.commit()
    runner.tm.commit()
    check = producers()
    assert check.queue.get_by_key("done") is None
    assert check.queue.get_by_key("stays") is not None
    assert check.queue.get_by_key("new") is not None
