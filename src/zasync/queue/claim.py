"""The workers' side of a queue: finding due work, claiming it, and the
housekeeping that claims do (filing the inbox and completed jobs, failing
missed deadlines), as a mixin of `zasync.queue.queue.Queue`.

Only workers' transactions run this code, and workers retry their own
conflicts, so it may write the ordered structures (``_pending``,
``_deadlines``, ``_index``, the history's trees) that producers never touch;
see `zasync.queue.queue` for who writes what.
"""

import logging
import os
import time
import zlib

from zasync.job import clock, events
from zasync.job.failure import Failure
from zasync.interfaces import CALLBACKS, PENDING, JobTimeoutError
from zasync.job.storable import unimportable
from zasync.queue import wake


logger = logging.getLogger(__name__)

#: Ids of the jobs this process said it cannot import, to say it once.
_unimportable_said = set()


def _say_unimportable(dispatcher_id, job, why):
    if job.id in _unimportable_said:
        return
    _unimportable_said.add(job.id)
    logger.warning(
        "dispatcher %s: job %s calls %s, which this worker cannot import (%s); "
        "it stays pending for a worker that can.  Run the worker from the folder "
        "that holds the module (this one runs in %s), install the application "
        "in the worker's environment, or add its folder to PYTHONPATH",
        dispatcher_id, job.id, job.callable_name, why, os.getcwd())


#: Seconds a dispatcher leaves an inbox lane of another's, unchanged, to
#: its owner before it files the lane's jobs itself (see
#: `Claiming._inbox_to_file`).  More than an owner's longest filing (in
#: bench/run.py, two workers over ZEO finish their first job of a backlog
#: of 5,000 1.2 to 1.6 s after they start), so that a lagging owner rarely
#: meets another in its lanes.
INBOX_GRACE = 2.0

#: (dispatcher id, lane oid) -> (the lane's serial, time.monotonic() when
#: this process first saw it so), for the lanes of others a dispatcher
#: found holding jobs and left to their owner.  An entry of a lane since
#: filed is harmless: the lane's next jobs give it another serial.
_unfiled = {}


def _rank(serving, dispatcher_id):
    """(rank of `dispatcher_id`, how many) among `serving` (see
    `Claiming._serving`)."""
    ids = [record.id for record in serving]
    return ids.index(dispatcher_id), len(ids)


def _left_unfiled(dispatcher_id, lane):
    """Whether `lane`, another's, held jobs unchanged since this dispatcher
    first saw it so, `INBOX_GRACE` seconds or more ago."""
    key = (dispatcher_id, lane._p_oid)
    seen = _unfiled.get(key)
    now = time.monotonic()
    if seen is None or seen[0] != lane._p_serial:
        if len(_unfiled) > 100_000:      # dispatchers of this process come and go
            _unfiled.clear()
        _unfiled[key] = (lane._p_serial, now)
        return False
    if now - seen[1] >= INBOX_GRACE:
        _unfiled.pop(key, None)     # (another thread may have cleared it)
        return True
    return False


def _may_not_claim(record):
    """Whether the dispatcher of `record` may not claim a job it files at
    once: it holds as many jobs as its agents have threads, or an agent of
    its takes only the jobs its filter accepts.  (A record that does not
    say: no.)"""
    agents = record.info.get("agents", ())
    if any(agent.get("filtered") for agent in agents):
        return True
    size = sum(agent.get("size", 0) for agent in agents)
    return size > 0 and len(record.jobs) >= size


def pending_key(job):
    return (-job.priority, job._begin_after_us, job.id)


def _lane_number(job_id, lanes):
    """Which of `lanes` pending trees holds the job (the same in every
    process: Python's own str hash differs between them)."""
    return zlib.crc32(job_id.encode()) % lanes if lanes > 1 else 0


def _head_key(head):
    return head[0][0]


def _level_firsts(tree):
    """The first key of each priority level in a pending tree, best first."""
    if not tree:
        return
    key = tree.minKey()
    while True:
        yield key
        try:
            key = tree.minKey((key[0] + 1,))
        except ValueError:
            return


def _due(tree, now_us):
    """(key, job) of a pending tree's due jobs, in claim order."""
    for first in _level_firsts(tree):
        level = first[0]
        yield from tree.items(min=(level,), max=(level, now_us + 1), excludemax=True)


def prefetch(jar, objects):
    """Ask the storage for the state of the ghosts among `objects` at once.

    A ZEO client otherwise loads one object per round trip to the server;
    asked in advance, it sends every request at once and each later load
    waits for its answer (or finds it in the cache).  Other storages load
    from memory or disk and ignore this.
    """
    if jar is None:
        return
    ghosts = [ob._p_oid for ob in objects if ob._p_changed is None and ob._p_oid is not None]
    if len(ghosts) > 1:
        jar.prefetch(ghosts)


class Claiming:
    """What workers call on a queue (mixed into `zasync.queue.queue.Queue`)."""

    def _deadline(self, job):
        return clock.to_micros(job.begin_after + job.begin_by)

    def pending_count(self):
        """Pending jobs the workers have already moved out of the inbox."""
        return self._pending_count()

    def has_work(self, now=None):
        """Whether a claim could find something to do, read without writing."""
        now_us = clock.to_micros(now or clock.now())
        taken_out = self._taken_out
        prefetch(self._p_jar, self._inbox if taken_out is None else self._inbox + (taken_out,))
        if any(len(lane) for lane in self._inbox) or self.history.has_work(now_us):
            return True
        if taken_out:
            return True
        if self._deadlines:
            if self._deadlines.minKey()[0] < now_us:
                return True
        return self._first_due(now_us) is not None

    def next_due(self, now=None):
        """Seconds until the earliest pending job falls due (or its begin_by
        deadline passes), 0 if one is due, None if none waits; read only."""
        now_us = clock.to_micros(now or clock.now())
        earliest = None
        if self._deadlines:
            earliest = self._deadlines.minKey()[0]
        for tree in self._pending_lanes():
            for first in _level_firsts(tree):
                if earliest is None or first[1] < earliest:
                    earliest = first[1]
        if earliest is None:
            return None
        return max(0.0, (earliest - now_us) / 1e6)

    def _pending_lanes(self):
        """The pending trees: one in queues made before lanes, else
        `PENDING_LANES` (see `zasync.queue.queue`)."""
        return (self._pending,) + self._more_pending

    _more_pending = ()

    def _pending_lane(self, job_id):
        lanes = self._pending_lanes()
        return lanes[_lane_number(job_id, len(lanes))]

    def _first_due(self, now_us):
        firsts = [first for first in (next(_due(tree, now_us), None)
                                      for tree in self._pending_lanes())
                  if first is not None]
        return min(firsts)[0] if firsts else None

    def _serving(self, dispatcher_id):
        """The records of the dispatchers that serve this queue and neither
        stopped nor were found dead, in id order (the same in every
        process), if there are two or more and `dispatcher_id` is one of
        them; else None."""
        if self.__parent__ is None:
            return None
        records = [record for id, record in self.__parent__.dispatchers.items()
                   if record.stopped_at is None and record.dead_at is None
                   and self.name in record.info.get("queues", (self.name,))]
        if len(records) < 2 or not any(r.id == dispatcher_id for r in records):
            return None
        return records

    def _share(self, dispatcher_id, serving):
        """Which pending lanes a dispatcher claims from while they hold jobs
        of the best due level: (its rank, how many) among the dispatchers
        that serve this queue (`serving`, see `_serving`), so that
        dispatchers claiming at once take from different trees; None with
        one lane or one such dispatcher (then due order is strict)."""
        if serving is None or len(self._pending_lanes()) == 1:
            return None
        return _rank(serving, dispatcher_id)

    def _inbox_to_file(self, dispatcher_id, serving, room):
        """The inbox lanes a claim files: all of them, unless other
        dispatchers serve this queue too.  Then a lane is first its
        owner's (lane number modulo the dispatchers, by rank), so that the
        dispatchers a put wakes do not all file its job, and all but one
        raise ConflictError (both removed it from the lane).  Another's
        lane is filed by a claim that has room when its owner may not
        claim the jobs it files (it has no room, or its agents filter
        jobs): others, which do not wake when jobs are filed, would see
        them only at their next poll.  And once this dispatcher saw the
        lane hold the same jobs, unchanged, for `INBOX_GRACE` seconds (its
        owner hangs, or died and is not yet found dead).  (A backlog put
        while no worker ran is filed in parts too, each by its owner: filed
        whole by any claim, as before, two workers over ZEO drained 5,000
        jobs no faster, 718-782 jobs/s against 746-837 in three runs.)"""
        if serving is None:
            return [lane for lane in self._inbox if lane]
        rank, dispatchers = _rank(serving, dispatcher_id)
        cannot = {}
        chosen = []
        for number, lane in enumerate(self._inbox):
            if not lane:
                continue
            owner = number % dispatchers
            if owner == rank or lane._p_oid is None:
                chosen.append(lane)
                continue
            if room > 0:
                if owner not in cannot:
                    cannot[owner] = _may_not_claim(serving[owner])
                if cannot[owner]:
                    chosen.append(lane)
                    continue
            if _left_unfiled(dispatcher_id, lane):
                chosen.append(lane)
        return chosen

    _taken_out = None

    def _file_taken_out(self, keep_callbacks=False):
        """Take the jobs that producers took out (see `Queue._take_out`)
        out of the lane or pending tree that still holds them; return those
        owing callbacks (cancelled with callbacks), for the claimer to run
        (unless `keep_callbacks`: they stay for a claim that has room)."""
        taken_out = self._taken_out
        if not taken_out:
            return []
        entries = taken_out.noted()
        prefetch(self._p_jar, [job for _, _, job in entries])
        owing, done = [], []
        for job_id, (key, deadline), job in entries:
            here = job._queue is self
            if here and job._status == CALLBACKS and keep_callbacks:
                continue
            waits = here and job._status == PENDING
            tree = self._pending_lane(job_id)
            if tree.get(key) is job and not (waits and key == pending_key(job)):
                del tree[key]
                self._pending_count.change(-1)
            if deadline is not None and self._deadlines.get(deadline) is job and not (
                    waits and job.begin_by is not None and deadline == (self._deadline(job), job_id)):
                del self._deadlines[deadline]
            if not waits:
                for lane in self._inbox:
                    if job_id in lane:
                        lane.discard(job_id)
                if not here and self._index.get(job_id) is job:
                    del self._index[job_id]     # removed from this queue
            if here and job._status == CALLBACKS:
                owing.append(job)
            done.append(job_id)
        taken_out.remove_all(done)
        return owing

    def _drain(self, keep_callbacks=False, lanes=None):
        """Move the inbox (or the given lanes of it) into the ordered
        structures (workers only); return the jobs it held that are no
        longer pending.  With `keep_callbacks`, jobs owing callbacks stay in
        the inbox, for a claim that has room to run them."""
        moved = []
        if lanes is None:
            lanes = [lane for lane in self._inbox if lane]
        # Over ZEO each job read is a round trip: ask for them all at once.
        # (Rejected: noting each job's pending key in its inbox entry, so
        # that this loads none.  The first claim of a backlog was faster,
        # the drain not: its jobs are loaded to be run anyway; and each put
        # cost 4% more instructions, its lane rewritten notes and all.)
        prefetch(self._p_jar, [job for lane in lanes for job in lane])
        for lane in lanes:
            ids = []
            for job in lane:
                if keep_callbacks and job.status == CALLBACKS:
                    continue
                ids.append(job.id)
                if job.id not in self._index:
                    self._index[job.id] = job
                if job.status == PENDING:
                    # counted once, should two lanes hold it (a cancelled
                    # job retried before a claim took it out of its lane)
                    if self._pending_lane(job.id).insert(pending_key(job), job):
                        self._pending_count.change(1)
                    if job.begin_by is not None:
                        self._deadlines[(self._deadline(job), job.id)] = job
                elif job not in moved:
                    moved.append(job)   # completed outside a worker
            if ids:
                lane.remove_all(ids)
        return moved

    def claim(self, dispatcher_id, count=1, accept=None, now=None):
        """See `IQueue`.

        Also does the queue's housekeeping, as claims are the transactions
        that workers retry: files completed jobs, and fails pending jobs whose
        `begin_by` deadline passed (those with failure callbacks are returned
        too, in `CALLBACKS` status, so the claimer runs them).
        """
        now = now or clock.now()
        now_us = clock.to_micros(now)
        claimed = []
        record = None
        if self.__parent__ is not None:
            record = self.__parent__.dispatchers.get(dispatcher_id)
        serving = self._serving(dispatcher_id)
        # A claim of none (every thread busy) must not take a job owing
        # callbacks: no thread would run them until a heartbeat found the
        # job held and idle, a minute later.
        for job in self._file_taken_out(keep_callbacks=count == 0):
            job.dispatcher_id = dispatcher_id       # it runs the callbacks
            claimed.append(job)
        for job in self._drain(keep_callbacks=count == 0,
                               lanes=self._inbox_to_file(dispatcher_id, serving, count)):
            if job.status == CALLBACKS:
                job.dispatcher_id = dispatcher_id   # it runs the callbacks
                claimed.append(job)
            else:
                self.history.add(job)
        while self._deadlines and len(claimed) < count:
            key = self._deadlines.minKey()
            if key[0] >= now_us:
                break
            job = self._deadlines.pop(key)
            if job._queue is not self or job._status != PENDING:
                continue        # taken out since it was filed
            self._take_out_now(job)
            if job._complete(dispatcher_id=dispatcher_id, failure=Failure.from_exception(JobTimeoutError(
                    f"job {job.id} was not started by its deadline "
                    f"{clock.from_micros(key[0]).isoformat()} (begin_by "
                    f"{job.begin_by})"))):
                claimed.append(job)
            else:
                self.history.add(job)
            events.notify_after_commit(
                self._p_jar.transaction_manager.get(), events.completed_event(job))
        if self.history.keeps(dispatcher_id, now_us):
            self.history.archive(self._index)
            self.history.prune(now_us, self._index)
        if self.quotas:
            accept = self._quota_check(accept)
        picked = self._pick(now_us, accept, count - len(claimed),
                            self._share(dispatcher_id, serving) if count else None)
        # Over ZEO, ask for the jobs at once rather than one round trip
        # each.  (Their live states are not needed: a claim writes them
        # only for a retried job.)
        prefetch(self._p_jar, [job for _, job in picked])
        for key, job in picked:
            # A job stored before its call had a record of its own holds
            # its callable: writing it (as assigning does) would fail the
            # whole claim's commit, again at every claim, if this process
            # cannot import the callable.  Leave it pending for a worker
            # that can.  (Newer jobs are written without loading their
            # call, or keep their callable by name, and a missing callable
            # fails their attempt instead.)
            missing = (unimportable(job) if job._status == PENDING and job._call is None
                       and job._callable_ref is None else None)
            if missing is not None:
                _say_unimportable(dispatcher_id, job, missing)
                if self.quotas:
                    self._release_quotas(job)
                continue
            del self._pending_lane(key[2])[key]
            self._pending_count.change(-1)
            if job.begin_by is not None:
                self._deadlines.pop((self._deadline(job), job.id), None)
            if job._status != PENDING or job._queue is not self or key != pending_key(job):
                # Taken out (cancelled, removed) since it was filed here, by
                # a transaction that did not write this tree; the cancel
                # filed it where it belongs.  Drop the stale entry.
                if self.quotas:
                    self._release_quotas(job)
                continue
            job._assign(dispatcher_id, now)
            claimed.append(job)
        if record is not None:
            for job in claimed:
                record.jobs.add(job)
        return claimed

    def _pick(self, now_us, accept, count, share=None):
        """Up to `count` due (key, job) pairs that `accept` takes, of the
        best priority first.  Within one level, due order holds in each
        lane; with `share` (rank, dispatchers), the lanes whose number
        modulo dispatchers is the rank come first, as long as they hold
        jobs of the best level left."""
        picked = []
        if count <= 0:
            return picked
        heads = []      # [(key, job), mine?, the lane's due items]
        for number, tree in enumerate(self._pending_lanes()):
            items = _due(tree, now_us)
            first = next(items, None)
            if first is not None:
                mine = share is not None and number % share[1] == share[0]
                heads.append([first, mine, items])
        while heads and len(picked) < count:
            head = min(heads, key=_head_key)
            if share is not None and not head[1]:
                level = head[0][0][0]
                mine = [h for h in heads if h[1] and h[0][0][0] == level]
                if mine:
                    head = min(mine, key=_head_key)
            key, job = head[0]
            if accept is None or accept(job):
                picked.append((key, job))
            following = next(head[2], None)
            if following is None:
                heads.remove(head)
            else:
                head[0] = following
        return picked

    def _requeue(self, job, begin_after):
        """Put a job back as pending from a worker (a delayed retry, or an
        assigned job its dispatcher gave back)."""
        self._release_quotas(job)
        job.begin_after = begin_after
        job.dispatcher_id = None
        job._set_status(PENDING)
        self._pending_lane(job.id)[pending_key(job)] = job
        self._pending_count.change(1)
        deadline = None if job.begin_by is None else self._deadline(job)
        # A job that started before met its begin_by: one put back in its
        # place after an interruption is not failed for a deadline passed.
        if deadline is not None and not (job.attempt_count and deadline <= clock.to_micros(
                clock.now())):
            self._deadlines[(deadline, job.id)] = job
        txn = self._p_jar.transaction_manager.get()
        txn.addAfterCommitHook(wake.after_commit)
