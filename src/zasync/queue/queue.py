"""The persistent queue and the container of named queues.

Where jobs live, and who writes what:

- ``_inbox``: a few `JobSet` lanes.  `put` adds the new job to one lane
  and writes nothing else, so concurrent producers never conflict (the
  lanes merge concurrent additions and removals themselves).  Rejected: a
  BTree of pending jobs written by producers, which raises ConflictError
  whenever two puts split the same bucket -- in the producer's transaction,
  where zasync cannot retry it.
- ``_pending`` and ``_more_pending``: `PENDING_LANES` `WideTree`s (OOBTrees
  with larger buckets), a job's lane chosen by its id, keyed by (-priority,
  due time, id), written only by claiming workers, who first move the inbox
  into them.  Workers retry their own conflicts.  Claiming takes the first
  due keys of the best priority level across the lanes, those of the
  claimer's own share of lanes first: O(lanes log n) per level.
- ``_deadlines``: (deadline, id) for pending jobs with a `begin_by`, so that
  expired ones are found without a scan.
- ``_index``: id -> job for every job the queue has seen and not pruned.
- ``_taken_out``: a `JobSet` of the jobs a cancel or a remove took out in
  a producer's transaction, which writes nothing else of the queue; the
  next claim takes them out of the structures above.
- ``history``: completed jobs (see `zasync.queue.history`); a finishing job's
  own transaction only adds to a merging set there.
- ``quotas``: name -> `Quota`, limits on the jobs held at once.
- ``_key_lanes``: key -> job for the jobs put with a ``key`` and not yet
  completed, in lanes that merge (see `zasync.job.key`).
- ``_schedules``: name -> `Schedule` (see `zasync.queue.schedule`).

What workers call (claiming, and the housekeeping claims do) is in
`zasync.queue.claim`, mixed into `Queue`.
"""

import datetime
import heapq
import random
import types

import BTrees.Length
import persistent
from BTrees.OOBTree import OOBTree
from zope.interface import implementer

from zasync.job import clock, events, ledger

from zasync.queue import instance
from zasync.queue import wake
from zasync.queue.claim import Claiming, pending_key
from zasync.job.context import captured_on_put
from zasync.job.job import Job
# PUT_OPTIONS stays a name of this module, where it was defined before.
from zasync.job.options import (  # noqa: F401
    PUT_OPTIONS, check_priority, check_retry_policy, split_put_arguments)
from zasync.interfaces import (
    CALLBACKS, NEW, PENDING, AlreadyQueuedError,
    ConfigurationError, IJob, IQueue, IQueues,
    JobStateError, NotPendingError, UnknownQueueError)
from zasync.queue.history import History
from zasync.job.key import check_key, holder_of, key_index, release_key, take_key
from zasync.job.jobset import JobSet
from zasync.queue.quota import Quota, check_size
from zasync.queue.trees import WideTree

#: Inbox lanes of a new queue.  A put rewrites one lane whole, and with no
#: worker draining them lanes fill up: 5,000 puts leave about 20 jobs in
#: each of 256 lanes (78 in each of 64, whose puts cost a quarter more).
LANES = 256
#: Pending trees of a new queue.  Two dispatchers claiming the first jobs
#: of one tree conflict every time: BTrees refuse to merge a change to a
#: bucket that deletes its first key.  With lanes, each dispatcher claims
#: from its own while it holds jobs of the best level.
PENDING_LANES = 8
#: What a queue that never had a schedule shows (read only)
_NO_SCHEDULES = types.MappingProxyType({})
_AFTER_ALL = (float("inf"),)


def _check_timeout(timeout):
    if timeout is None:
        return None
    if isinstance(timeout, datetime.timedelta):
        timeout = timeout.total_seconds()
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ConfigurationError(
            f"timeout={timeout!r}: expected seconds (a number > 0) or a timedelta")
    return float(timeout)


@implementer(IQueue)
class Queue(Claiming, persistent.Persistent):
    """See `IQueue`."""

    __parent__ = None

    def __init__(self, name=""):
        self.name = name
        self._inbox = tuple(JobSet() for _ in range(LANES))
        self._pending = WideTree()
        self._more_pending = tuple(WideTree() for _ in range(PENDING_LANES - 1))
        self._pending_count = BTrees.Length.Length()
        self._deadlines = OOBTree()
        self._index = OOBTree()
        self.history = History()
        self.quotas = OOBTree()
        self._key_lanes = key_index()
        self._schedules = OOBTree()
        self._taken_out = JobSet()

    # Queues of databases made before keys and schedules have neither
    # tree: they are made by the first write that needs them, never by a
    # read.
    _keys = None
    _schedules = None
    # Keys in lanes (see `zasync.job.key`); queues made before have `_keys`, a
    # BTree, until `install` moves it into lanes.
    _key_lanes = None
    # Queues made before it have no set of jobs taken out: `install` adds
    # one, and until then a cancel writes the ordered structures itself.
    _taken_out = None

    def __repr__(self):
        return f"<zasync.Queue {self.name!r}>"

    # -- producers ---------------------------------------------------------

    def put(self, job, *args, **kwargs):
        """See `IQueue`."""
        is_job = job.__class__ is Job or IJob.providedBy(job)
        if kwargs or (args and is_job):
            options, kwargs = split_put_arguments(job, args, kwargs)
        else:
            options = {}    # no option given, nothing to refuse
        if not is_job:
            job = Job(job, *args, **kwargs)
        return self._put(job, **options)

    def _put(self, job, begin_after=None, begin_by=None, retry_policy=None,
             priority=0, quotas=(), timeout=None, key=None):
        # Check everything before writing anything.
        if job.status != NEW or job._queue is not None:
            raise AlreadyQueuedError(
                f"job {job.id} ({job.callable_name}) is already {job.status}"
                + (f" in queue {job._queue.name!r}" if job._queue is not None else "")
                + "; a job is put once")
        if job._parent is not None:
            raise AlreadyQueuedError(
                f"job {job.id} is a callback of job {job._parent.id}")
        jar = self._p_jar
        if jar is None:
            raise JobStateError(
                f"{self!r} is not stored in a database; get it with "
                f"zasync.get_queue(connection)")
        if job._p_jar is not None and job._p_jar is not jar:
            raise JobStateError(
                f"job {job.id} belongs to another connection than {self!r}")
        # (microseconds, as a job stores its times: no datetime made and
        # taken apart again)
        now_us = clock.now_micros()
        # (each check only for an option given: a put without options is
        # most of them, and calls add up)
        if begin_after is not None:
            begin_after = clock.aware(begin_after, "begin_after")
        if begin_by is not None:
            begin_by = clock.duration(begin_by, "begin_by")
        if priority.__class__ is not int or priority:
            priority = check_priority(priority)
        if quotas.__class__ is not tuple or quotas:
            quotas = self._check_quota_names(quotas)
        if timeout is not None:
            timeout = _check_timeout(timeout)
        if retry_policy is not None:
            check_retry_policy(retry_policy)
        if key is not None:
            holder = self.get_by_key(check_key(key))
            if holder is not None:
                return holder    # writes nothing: the job of the key stands
        instance.check_put(self)

        if begin_after is None:
            job._begin_after_us = now_us
        else:
            job.begin_after = begin_after
        # Defaults are the class's: stored, they would be pickled again at
        # every write of the job (each key and value costs the pickler a
        # persistent_id call).
        if begin_by is not None or "begin_by" in job.__dict__:
            job.begin_by = begin_by
        if priority != 0 or "priority" in job.__dict__:
            job.priority = priority
        if quotas:
            job.quotas = quotas
        if timeout is not None:
            job.timeout = timeout
        if retry_policy is not None:
            job.retry_policy = retry_policy
        if key is not None:
            job.key = key
            take_key(self, job, checked=True)   # no holder, looked up above
        job._queue = self
        for callback in job._callbacks:
            callback._queue = self
        captured_on_put(job)     # nothing unless an application configured it
        # (what `job._set_status(PENDING)` does, from the microseconds)
        job._status = PENDING
        job._history = ledger.append(job._history, PENDING, now_us, None)
        if job._p_jar is None:
            jar.add(job)
            # A lane at random.  (Rejected: a connection going on putting
            # into the lane of its last put while no drain changed it.
            # Over ZEO beside two worker processes it cut the producer's
            # loads per put from 0.97 to 0.15, bench/put_beside_workers.py,
            # but over RelStorage producers then met PostgreSQL lock
            # deadlocks at commit, 2 runs in 27 of test_relstorage's
            # concurrent producers: a producer must never see an error.)
            self._inbox[random.randrange(len(self._inbox))].add(job)
        else:
            self._add_to_inbox(job)
        txn = jar.transaction_manager.get()
        if events.wanted():
            events.notify_after_commit(txn, events.JobPut(job))
        if wake.waiting():
            # (not otherwise: calling any after-commit hook costs the
            # commit an abort of each of its resources, a tenth of a put's
            # instructions.  A waiter registered meanwhile is a dispatcher
            # starting, which claims what was committed, or hears of it
            # through invalidations, or at its next poll.)
            txn.addAfterCommitHook(wake.after_commit)
        return job

    def _add_to_inbox(self, job):
        """Add a job that has waited before (a retry, a removed job put
        again) to an inbox lane.  Taken out and not yet filed, it may still
        sit in its old lane; another lane keeps `len` counting it once (the
        lanes hold it twice, the taken-out set subtracts one)."""
        lanes = self._inbox
        if self._taken_out is not None and job.id in self._taken_out:
            lanes = [lane for lane in lanes if job.id not in lane] or lanes
        random.choice(lanes).add(job)

    def _check_quota_names(self, quotas):
        if isinstance(quotas, str):
            quotas = (quotas,)
        try:
            quotas = tuple(quotas)
        except TypeError:
            raise ConfigurationError(
                f"quotas={quotas!r}: expected quota names (strings)") from None
        for name in quotas:
            if not isinstance(name, str) or name not in self.quotas:
                raise ConfigurationError(
                    f"quota {name!r} is not defined in {self!r}; defined: "
                    + (", ".join(repr(n) for n in self.quotas.keys()) or "none")
                    + " (define one with queue.set_quota(name, size))")
        return quotas

    # -- quotas --------------------------------------------------------------

    def set_quota(self, name, size):
        """Define quota `name` or change its size (also while workers run);
        return it."""
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"quota name {name!r}: expected a non-empty str")
        size = check_size(size, name)
        quota = self.quotas.get(name)
        if quota is None:
            quota = self.quotas[name] = Quota(name, size)
        elif quota.size != size:
            quota.size = size
        return quota

    def _quota_check(self, accept):
        """Wrap `accept` so that a job is taken only while each of its
        quotas has room, counting the jobs taken in this claim."""
        quotas = self.quotas

        def check(job):
            names = job.quotas
            if names:
                for name in names:
                    quota = quotas.get(name)
                    if quota is not None and not quota.has_room():
                        return False
            if accept is not None and not accept(job):
                return False
            for name in names:
                quota = quotas.get(name)
                if quota is not None:
                    quota.take(job)
            return True
        return check

    # -- keys ----------------------------------------------------------------

    def get_by_key(self, key, default=None):
        """See `IQueue`."""
        job = holder_of(self, key) if isinstance(key, str) and key else None
        return default if job is None else job

    def _release_quotas(self, job):
        for name in job.quotas:
            quota = self.quotas.get(name)
            if quota is not None:
                quota.release(job.id)

    # -- schedules -------------------------------------------------------------

    @property
    def schedules(self):
        """See `IQueue`."""
        return _NO_SCHEDULES if self._schedules is None else self._schedules

    def schedule(self, callable, *args, **options):
        """See `IQueue` and `ISchedule`."""
        from zasync.queue.schedule import define
        return define(self, callable, *args, **options)

    def unschedule(self, name):
        """See `IQueue`."""
        from zasync.queue.schedule import undefine
        return undefine(self, name)

    def remove(self, job):
        """See `IQueue`."""
        if job._queue is not self or job.status != PENDING:
            raise NotPendingError(
                f"job {job.id} is {job.status}"
                + ("" if job._queue is self else f" and not in {self!r}")
                + ": only a pending job can be removed")
        if getattr(job, "schedule", None) is not None:
            job.schedule.check_removable(job)
        self._take_out(job)
        release_key(self, job)
        job._queue = None
        job._set_status(NEW)
        if self._taken_out is None and job.id in self._index:
            del self._index[job.id]     # else the claim that takes it out

    def _take_out(self, job):
        """Take a pending job out of the queue, in a producer's transaction
        (a cancel, a remove, a direct call).

        Like a put, this writes only a set that merges (`_taken_out`),
        noting where the job waits; the next claim, a worker's transaction
        that retries, takes it out of the inbox lane or pending tree that
        holds it.  Writing those here conflicted with the workers draining
        the lane or claiming from the tree's bucket at the same moment, in
        a transaction zasync cannot retry.  Until then a claim skips it: it
        is no longer pending.
        """
        taken_out = self._taken_out
        if taken_out is None:      # a queue made before: at once
            self._take_out_now(job)
            return
        deadline = None if job.begin_by is None else (self._deadline(job), job.id)
        taken_out.add(job, note=(pending_key(job), deadline))
        txn = self._p_jar.transaction_manager.get()
        txn.addAfterCommitHook(wake.after_commit)

    def _take_out_now(self, job):
        """Remove a pending job from wherever it waits (workers only, and
        queues made before `_taken_out`)."""
        for lane in self._inbox:
            if job.id in lane:
                lane.discard(job.id)
                return
        key = pending_key(job)
        lane = self._pending_lane(job.id)
        if key in lane:
            del lane[key]
            self._pending_count.change(-1)
        if job.begin_by is not None:
            self._deadlines.pop((self._deadline(job), job.id), None)

    def _put_completed(self, job, notify=True):
        """File a job completed outside a worker (a cancelled pending job).

        A job still owing callbacks goes back through the inbox, so that a
        worker claims it and runs them, each in its own transaction.
        """
        if job.status == CALLBACKS:
            if self._taken_out is None or job.id not in self._taken_out:
                self._inbox[random.randrange(len(self._inbox))].add(job)
            # else the claim that takes it out hands it to a thread
            txn = self._p_jar.transaction_manager.get()
            txn.addAfterCommitHook(wake.after_commit)
        else:
            self.history.add(job)
        if notify:
            events.notify_after_commit(
                self._p_jar.transaction_manager.get(), events.completed_event(job))

    # -- reading -----------------------------------------------------------

    def __len__(self):
        # jobs taken out still wait in a lane or tree until the next claim
        taken_out = 0 if self._taken_out is None else len(self._taken_out)
        return max(0, self._pending_count() + sum(len(lane) for lane in self._inbox)
                   - taken_out)

    def _waits_here(self, job):
        return job._queue is self and job.status == PENDING

    def __iter__(self):
        waiting = sorted(
            (job for lane in self._inbox for job in lane if self._waits_here(job)),
            key=pending_key)
        filed = ((job for key, job in tree.items()
                  if self._waits_here(job) and key == pending_key(job))
                 for tree in self._pending_lanes())
        return iter(heapq.merge(*filed, waiting, key=pending_key))

    def get(self, job_id, default=None):
        """See `IQueue`."""
        if not isinstance(job_id, str):
            return default
        # A job removed is no longer the queue's, though the index and the
        # inbox hold it until the next claim takes it out.
        job = self._index.get(job_id)
        if job is not None:
            return job if job._queue is self else default
        for lane in self._inbox:
            job = lane.get(job_id)
            if job is not None:
                return job if job._queue is self else default
        job = self.history._done.get(job_id)
        return default if job is None else job

    def dismiss(self, job):
        """Take a failed job off the list of failures to look at."""
        if job.failure is None:
            raise ConfigurationError(f"job {job.id} did not fail; only failures are dismissed")
        self.history.dismiss(job)

    def failed(self):
        """Failed jobs not yet dismissed, newest first."""
        return self.history.failed()

    def retry(self, job):
        """Put a failed job back in the queue to run again now, under its
        id; the failure is kept among its attempts.  Return the job."""
        if job._queue is not self or not job.failed:
            raise JobStateError(
                f"job {job.id} is {job.status}"
                + (" and succeeded" if job.succeeded else "")
                + ": only a failed job of this queue can be retried")
        if job._parent is not None:
            raise JobStateError(f"job {job.id} is a callback; retry job {job._parent.id}")
        if job.key is not None:
            take_key(self, job)
        self.history.forget(job)
        job._record_attempt(job._failure)
        job._result = job._failure = None
        job.ended_at = None
        job.dismissed = False
        job.dispatcher_id = None
        job.begin_after = clock.now()
        for callback in job._callbacks:
            callback._reset()
        job._set_status(PENDING, job.begin_after)
        self._add_to_inbox(job)
        txn = self._p_jar.transaction_manager.get()
        events.notify_after_commit(txn, events.JobPut(job))
        txn.addAfterCommitHook(wake.after_commit)
        return job

    def jobs(self):
        """Every job the queue knows (pending, running and completed)."""
        seen = set()
        for lane in self._inbox:
            for job in lane:
                if job.id not in seen and job._queue is self:
                    seen.add(job.id)
                    yield job
        for job in self._index.values():
            if job.id not in seen and job._queue is self:
                seen.add(job.id)
                yield job
        # Completed outside a worker (cancelled while pending) and not yet
        # filed by a claim: only the history's merging set holds them.
        for job in self.history._done:
            if job.id not in seen:
                yield job

@implementer(IQueues)
class Queues(persistent.Persistent):
    """See `IQueues`."""

    def __init__(self):
        self._queues = OOBTree()
        self.dispatchers = OOBTree()

    def __getitem__(self, name):
        queue = self._queues.get(name) if isinstance(name, str) else None
        if queue is None:
            raise UnknownQueueError(
                f"no queue named {name!r}; installed: "
                + ", ".join(repr(n) for n in self.keys())
                + " (add one with zasync.install(db, queues=(...)))")
        return queue

    def get(self, name, default=None):
        return self._queues.get(name, default) if isinstance(name, str) else default

    def keys(self):
        return list(self._queues.keys())

    def values(self):
        return list(self._queues.values())

    def items(self):
        return list(self._queues.items())

    def __iter__(self):
        return iter(self.keys())

    def __contains__(self, name):
        return isinstance(name, str) and name in self._queues

    def __len__(self):
        return len(self._queues)

    def add(self, name):
        if not isinstance(name, str):
            raise ConfigurationError(f"queue name {name!r}: expected a str")
        queue = self._queues.get(name)
        if queue is None:
            queue = Queue(name)
            queue.__parent__ = self
            self._queues[name] = queue
        return queue

    def find_job(self, job_id, default=None):
        for queue in self._queues.values():
            job = queue.get(job_id)
            if job is not None:
                return job
        return default

    def __repr__(self):
        return f"<zasync.Queues {self.keys()!r}>"
