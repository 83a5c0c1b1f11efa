"""The merging job set: its conflict resolver on plain state dicts, then two
real transactions on a storage that resolves conflicts."""

import pytest
import transaction
from ZODB.POSException import ConflictError

import zasync
from zasync.job.jobset import JobSet, merge_job_states

import unit_jobs


def state(**jobs):
    """A JobSet state as the resolver gets it: ids mapped to (references
    to) jobs; plain strings stand in for the references here."""
    return {"_jobs": dict(jobs)}


# -- the resolver, without a database ----------------------------------------

def test_disjoint_additions_merge():
    old = state(a="A")
    merged = merge_job_states(old, state(a="A", b="B"), state(a="A", c="C"))
    assert merged == state(a="A", b="B", c="C")


def test_addition_and_removal_merge():
    old = state(a="A", b="B")
    merged = merge_job_states(old, state(a="A", b="B", c="C"), state(b="B"))
    assert merged == state(b="B", c="C")
    # the same, with the roles of the two transactions swapped
    merged = merge_job_states(old, state(b="B"), state(a="A", b="B", c="C"))
    assert merged == state(b="B", c="C")


def test_removals_of_different_jobs_merge():
    old = state(a="A", b="B", c="C")
    merged = merge_job_states(old, state(b="B", c="C"), state(a="A", c="C"))
    assert merged == state(c="C")


def test_a_job_taken_out_merges_with_a_claim_filing_others():
    # A queue's set of jobs taken out: a cancel adds a job with a note of
    # where it waits while a worker's claim files (removes) earlier ones.
    old = state(a=(("key a", None), "A"))
    cancel = state(a=(("key a", None), "A"), b=(("key b", ("deadline b",)), "B"))
    claim = state()
    expected = state(b=(("key b", ("deadline b",)), "B"))
    assert merge_job_states(old, cancel, claim) == expected
    assert merge_job_states(old, claim, cancel) == expected


def test_both_removing_the_same_job_conflicts():
    # This is what keeps two workers from claiming one job.
    old = state(a="A", b="B")
    with pytest.raises(ConflictError, match="removed job 'a'"):
        merge_job_states(old, state(b="B"), state(b="B"))


def test_both_removing_the_same_job_among_others_conflicts():
    old = state(a="A", b="B", c="C")
    with pytest.raises(ConflictError, match="'b'"):
        merge_job_states(old, state(a="A", c="C"), state(c="C"))


def test_both_adding_the_same_job_conflicts():
    old = state()
    with pytest.raises(ConflictError, match="added job 'x'"):
        merge_job_states(old, state(x="X"), state(x="X"))


def test_another_attribute_changed_conflicts():
    old = dict(state(a="A"), label="one")
    saved = dict(state(a="A"), label="two")
    new = dict(state(a="A", b="B"), label="one")
    with pytest.raises(ConflictError, match="'label'"):
        merge_job_states(old, saved, new)


def test_an_attribute_added_by_one_side_conflicts():
    old = state(a="A")
    new = dict(state(a="A", b="B"), extra=1)
    with pytest.raises(ConflictError, match="'extra'"):
        merge_job_states(old, state(a="A"), new)


def test_unchanged_other_attributes_are_kept():
    old = dict(state(), label="same")
    merged = merge_job_states(old, dict(state(a="A"), label="same"),
                              dict(state(b="B"), label="same"))
    assert merged == dict(state(a="A", b="B"), label="same")


@pytest.mark.parametrize("bad", [None, {}, {"jobs": {}}])
def test_a_state_without_jobs_conflicts(bad):
    with pytest.raises(ConflictError):
        merge_job_states(state(), state(a="A"), bad)


def test_the_resolver_leaves_its_inputs_alone():
    old, saved, new = state(a="A"), state(a="A", b="B"), state(c="C")
    copies = [dict(s, _jobs=dict(s["_jobs"])) for s in (old, saved, new)]
    merge_job_states(old, saved, new)
    assert [old, saved, new] == copies


def test_the_method_is_the_resolver():
    merged = JobSet()._p_resolveConflict(state(), state(a="A"), state(b="B"))
    assert merged == state(a="A", b="B")


# -- the set itself ------------------------------------------------------------

def test_set_operations():
    jobs = JobSet()
    first, second = zasync.Job(unit_jobs.add, 1, 2), zasync.Job(len, "ab")
    assert not jobs and len(jobs) == 0
    jobs.add(first)
    jobs.add(second)
    assert len(jobs) == 2 and jobs
    assert first.id in jobs and jobs.get(first.id) is first
    assert jobs.get("missing", "default") == "default"
    assert set(jobs.ids()) == {first.id, second.id}
    assert {job.id for job in jobs} == {first.id, second.id}
    jobs.discard(first.id)
    jobs.discard("missing")
    assert jobs.ids() == [second.id]
    jobs.remove_all([second.id, "missing"])
    assert len(jobs) == 0


def test_a_job_added_with_a_note_reads_as_a_job_and_its_note_beside_it():
    jobs = JobSet()
    noted, plain = zasync.Job(unit_jobs.add, 1, 2), zasync.Job(len, "ab")
    jobs.add(noted, note=(1_000, False))
    jobs.add(plain)
    assert jobs.get(noted.id) is noted
    assert {job.id for job in jobs} == {noted.id, plain.id}
    assert {job_id: (note, job) for job_id, note, job in jobs.noted()} == {
        noted.id: ((1_000, False), noted), plain.id: (None, plain)}


def test_concurrent_additions_with_notes_merge():
    old = state(a="A")
    merged = merge_job_states(old, state(a="A", b=((5, True), "B")), state(a="A", c="C"))
    assert merged == state(a="A", b=((5, True), "B"), c="C")


# -- real concurrency: two transaction managers on a FileStorage ---------------

def _open(db):
    tm = transaction.TransactionManager()
    return tm, db.open(transaction_manager=tm)


def _stored_set(db, *jobs):
    with db.transaction() as conn:
        jobs_set = conn.root()["set"] = JobSet()
        for job in jobs:
            jobs_set.add(job)


def test_two_transactions_adding_different_jobs_both_commit(db):
    _stored_set(db, zasync.Job(len, "seed"))
    tm1, conn1 = _open(db)
    tm2, conn2 = _open(db)
    one = zasync.Job(unit_jobs.add, 1, 1)
    two = zasync.Job(unit_jobs.add, 2, 2)
    conn1.root()["set"].add(one)
    conn2.root()["set"].add(two)
    tm1.commit()
    tm2.commit()   # conflicts on the set, which resolves it

    with db.transaction() as conn:
        stored = conn.root()["set"]
        assert len(stored) == 3
        assert stored.get(one.id).args == (1, 1)
        assert stored.get(two.id).args == (2, 2)
    conn1.close()
    conn2.close()


def test_one_adds_while_another_removes_both_commit(db):
    seed = zasync.Job(len, "seed")
    _stored_set(db, seed)
    tm1, conn1 = _open(db)
    tm2, conn2 = _open(db)
    added = zasync.Job(unit_jobs.add, 1, 1)
    conn1.root()["set"].add(added)
    conn2.root()["set"].discard(seed.id)
    tm1.commit()
    tm2.commit()

    with db.transaction() as conn:
        assert conn.root()["set"].ids() == [added.id]
    conn1.close()
    conn2.close()


def test_two_transactions_removing_the_same_job_conflict(db):
    seed = zasync.Job(len, "seed")
    _stored_set(db, seed)
    tm1, conn1 = _open(db)
    tm2, conn2 = _open(db)
    conn1.root()["set"].discard(seed.id)
    conn2.root()["set"].discard(seed.id)
    tm1.commit()
    with pytest.raises(ConflictError):
        tm2.commit()
    tm2.abort()

    with db.transaction() as conn:
        assert len(conn.root()["set"]) == 0
    conn1.close()
    conn2.close()
