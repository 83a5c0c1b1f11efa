"""The dispatcher: one per process, claiming jobs for its agents as they
have room and running them in their threads."""

import logging
import os
import socket
import threading
import time
import uuid

import transaction
from zope.interface import implementer

from zasync.job import clock, events

from zasync.worker import recovery, shutdown, wakeup
from zasync.worker.agent import Agent
from zasync.queue import wake
from zasync.queue.database import (
    close_connection, forget_oids_on_reconnect, open_connection)
from zasync.interfaces import (
    ACTIVE, ASSIGNED, ConfigurationError, DispatcherError, DispatcherIdInUseError,
    IAgent, IDispatcher)
from zasync.worker.record import DispatcherRecord
from zasync.worker.runner import JobRunner

logger = logging.getLogger(__name__)

#: Seconds between two logs (with traceback) of one recurring claim failure.
CLAIM_LOG_INTERVAL = 60.0

def wake_local_dispatchers():
    """Tell the dispatchers of this process to look for work now (the
    queue does so after a commit that put a job, see `zasync.queue.wake`)."""
    wake.wake_all()


def _positive(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ConfigurationError(f"{name}={value!r}: expected a number of seconds > 0")
    return float(value)


#: Longest a dispatcher whose threads are all busy lets results and freed
#: room gather before it commits and claims (seconds; see `_gather`).
GATHER_SECONDS = 0.05


@implementer(IDispatcher)
class Dispatcher:
    """See `IDispatcher`.

    ``Dispatcher(db, threads=4)`` runs one agent of four threads on the
    default queue.  ``agents=[Agent(2), Agent(1, filter=...)]`` gives several
    agents instead; ``queues=("", "mail")`` serves several queues.

    A put committed in this process, or in another one over ZEO (whose
    server announces the changed inbox), wakes the dispatcher at once
    (`zasync.worker.wakeup`); on storages that announce nothing (RelStorage) other
    processes' commits are seen at the next poll (`poll_interval` seconds),
    which reads but writes nothing.  A heartbeat is written every
    `ping_interval` seconds only.
    """

    def __init__(self, db, threads=None, agents=None, queues=("",), id=None,
                 poll_interval=0.5, ping_interval=60.0, death_interval=None):
        if agents is not None and threads is not None:
            raise ConfigurationError("give threads= or agents=, not both")
        if agents is None:
            agents = [Agent(size=1 if threads is None else threads)]
        agents = list(agents)
        if not agents or not all(IAgent.providedBy(a) for a in agents):
            raise ConfigurationError(
                f"agents={agents!r}: expected IAgent objects, such as zasync.Agent")
        names = [a.name for a in agents]
        if len(set(names)) != len(names):
            raise ConfigurationError(f"agent names {names!r} must be unique")
        if isinstance(queues, str):
            queues = (queues,)
        queues = tuple(queues)
        if not queues or not all(isinstance(q, str) for q in queues):
            raise ConfigurationError(f"queues={queues!r}: expected queue names (str)")
        if id is None:
            id = uuid.uuid4().hex
        if not isinstance(id, str) or not id:
            raise ConfigurationError(f"id={id!r}: expected a non-empty str")
        # a ZEO server's restart must not hand this process's kept object ids
        # to other clients (see forget_oids_on_reconnect)
        self.db = forget_oids_on_reconnect(db)
        self.id = id
        self.agents = agents
        self.queue_names = queues
        self.poll_interval = _positive(poll_interval, "poll_interval")
        self.ping_interval = _positive(ping_interval, "ping_interval")
        if death_interval is None:
            death_interval = 3 * self.ping_interval
        self.death_interval = _positive(death_interval, "death_interval")
        if self.death_interval <= self.ping_interval:
            raise ConfigurationError(
                f"death_interval={death_interval!r} must be longer than "
                f"ping_interval={ping_interval!r}: a live dispatcher would be "
                f"declared dead between two heartbeats")
        self._wakeup = threading.Event()
        self._stopping = threading.Event()
        self._thread = None
        self._runner = JobRunner(self)
        self._progress_lock = threading.Lock()
        self._progress_tm = None
        self._progress_conn = None
        self._last_ping = 0.0
        self._session = uuid.uuid4().hex
        self._watch = None
        self._results_lock = threading.Lock()
        self._results = []
        self._started = []
        self._accepting = False
        self._close_hook = None
        self.claim_conflicts = 0
        self.claim_failures = 0         # claims failed, or jobs handed back
        self._job_problem = None        # see note_job_problem
        self._claim_error = None        # (message, monotonic time) recorded
        self._logged_claim_errors = {}  # failure -> monotonic time logged

    def __repr__(self):
        return f"<zasync.Dispatcher {self.id} {'running' if self.running else 'stopped'}>"

    @property
    def running(self):
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc_info):
        self.stop()

    # -- start and stop ----------------------------------------------------

    def start(self):
        """See `IDispatcher`."""
        if self._thread is not None:
            raise DispatcherError(f"dispatcher {self.id} is already started")
        self._tm = transaction.TransactionManager()
        self._conn = open_connection(self.db, self._tm)
        try:
            _bookkeeping_commit(self._tm, self._register)
        except Exception:
            close_connection(self._conn)
            raise
        _sessions_here.add(self._session)
        self._progress_tm = transaction.TransactionManager()
        self._progress_conn = open_connection(self.db, self._progress_tm)
        self._stopping.clear()
        self._accepting = True
        self._watch = wakeup.watch(self.db, self.wake)
        if self._watch is not None:
            self._watch.oids = frozenset(self._lane_oids())
        for agent in self.agents:
            agent.on_free = self.wake
            agent.start(self._runner, f"zasync-{self.id[:8]}")
        self._thread = threading.Thread(
            target=self._loop, name=f"zasync-dispatcher-{self.id[:8]}", daemon=True)
        self._thread.start()
        wake.register(self)
        self._close_hook = shutdown.before_close(self.db, self._stop_before_close)
        logger.info("dispatcher %s started: queues %s, agents %s", self.id,
                    ", ".join(map(repr, self.queue_names)),
                    ", ".join(f"{a.name}({a.size})" for a in self.agents))
        events.notify(events.DispatcherStarted(self))

    def _lane_oids(self):
        from zasync.queue.database import get_queues
        self._tm.begin()
        container = get_queues(self._conn)
        oids = [lane._p_oid for name in self.queue_names
                for lane in container[name]._inbox]
        # a cancel or a remove writes this: the claim that takes the job out
        oids.extend(container[name]._taken_out._p_oid for name in self.queue_names
                    if container[name]._taken_out is not None)
        self._tm.abort()
        return oids

    def _register(self):
        from zasync.queue.database import get_queues
        container = get_queues(self._conn)
        for name in self.queue_names:
            container[name]   # an unknown name raises UnknownQueueError
        record = container.dispatchers.get(self.id)
        now = clock.now()
        if record is None:
            record = container.dispatchers[self.id] = DispatcherRecord(self.id)
        else:
            self._check_not_running_elsewhere(record, now)
        record.started_at = record.last_ping = now
        record.stopped_at = None
        record.dead_at = None
        record.session = self._session
        record.info = {
            "host": socket.gethostname(), "pid": os.getpid(),
            "queues": list(self.queue_names),
            # (whether an agent filters jobs, as one of another kind may:
            # see `Claiming._inbox_to_file`)
            "agents": [{"name": a.name, "size": a.size,
                        "filtered": getattr(a, "filter", True) is not None}
                       for a in self.agents],
            "ping_interval": self.ping_interval,
            "death_interval": self.death_interval,
        }
        self._last_ping = time.monotonic()
        # Jobs an earlier run under this id left: recovered now, without
        # waiting out the death interval.
        if len(record.jobs):
            done = recovery.recover_record(
                record, f"dispatcher {self.id} restarted", self._tm.get(), now=now)
            logger.warning("dispatcher %s: recovered %d job(s) of its earlier "
                           "run: %s", self.id, len(done), _summary(done))

    def _check_not_running_elsewhere(self, record, now):
        """Refuse to run under an id a live process runs under."""
        if record.stopped_at is not None:
            return
        age = (now - record.last_ping).total_seconds()
        death = record.info.get("death_interval", self.death_interval)
        if age > death:
            return
        host, pid = record.info.get("host"), record.info.get("pid")
        if host == socket.gethostname() and pid is not None:
            if pid == os.getpid() and record.session in _sessions_here:
                raise DispatcherError(
                    f"dispatcher {self.id} is already running in this process")
            if pid != os.getpid() and _pid_alive(pid):
                raise DispatcherIdInUseError(
                    f"dispatcher id {self.id} is in use by live process {pid} "
                    f"on this host (heartbeat {age:.0f} s ago); two processes "
                    f"cannot run under one id")
            return   # its process is gone: take over at once
        raise DispatcherIdInUseError(
            f"dispatcher id {self.id} is in use on host {host!r} (pid {pid}, "
            f"heartbeat {age:.0f} s ago); it counts as dead after "
            f"{death:.0f} s without a heartbeat")

    def _stop_before_close(self):
        """Stop because the database closes (see `zasync.worker.shutdown`)."""
        logger.info("dispatcher %s: its database closes; stopping first", self.id)
        self.stop(timeout=shutdown.STOP_TIMEOUT, hand_back=True)

    def stop(self, timeout=None, hand_back=False):
        """See `IDispatcher`.

        With `hand_back`, jobs still running after `timeout` are handed
        back (to run again, as their retry policy says) with the record of
        the stop, instead of ending in their threads while a heartbeat
        goes on: for a stop before the database closes, which could not
        store their outcome anyway.
        """
        if self._thread is None:
            return True
        shutdown.cancel(self._close_hook)
        self._close_hook = None
        self._stopping.set()
        self._wakeup.set()
        self._thread.join()
        self._thread = None
        wakeup.unwatch(self.db, self._watch)
        self._watch = None
        wake.unregister(self)
        waiting = [job_id for agent in self.agents for job_id in agent.drop_waiting()]
        self._runner.forget_classes()
        deadline = None if timeout is None else time.monotonic() + timeout
        finished = True
        for agent in self.agents:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            finished = agent.wait_idle(left) and finished
            agent.stop()
        still_running = {job_id for agent in self.agents for job_id in agent.running}
        if not finished:
            logger.warning("dispatcher %s stopped with jobs still running: %s",
                           self.id, ", ".join(sorted(still_running)))
        if waiting:
            logger.info("dispatcher %s: %d job(s) not started go back to the "
                        "queue", self.id, len(waiting))
        with self._results_lock:
            self._accepting = False
        try:
            self._commit_results()
        except Exception:
            logger.exception("dispatcher %s: could not store the last results", self.id)

        if still_running and hand_back:
            logger.warning("dispatcher %s: %d running job(s) handed back: the "
                           "database closes", self.id, len(still_running))
            self._finish_stop()
        elif still_running:
            # The jobs go on in their threads.  Keep the heartbeat going
            # until they end, then record the stop: if this process ends
            # first, the heartbeat stops and another dispatcher recovers
            # them after the death interval.
            threading.Thread(
                target=self._linger, name=f"zasync-linger-{self.id[:8]}",
                daemon=True).start()
        else:
            self._finish_stop()
        with self._progress_lock:
            self._progress_tm.abort()
            close_connection(self._progress_conn)
            self._progress_conn = None   # jobs still running write their own
        _sessions_here.discard(self._session)
        logger.info("dispatcher %s stopped", self.id)
        events.notify(events.DispatcherStopped(self))
        return finished

    def _finish_stop(self):
        """Record the stop; jobs not started (taken ahead of a thread) go
        back to their queue."""
        def mark_stopped():
            from zasync.queue.database import get_queues
            container = get_queues(self._conn)
            record = container.dispatchers.get(self.id)
            if record is None or record.session != self._session:
                return
            record.stopped_at = clock.now()
            for name in self.queue_names:
                container[name].history.release(self.id)
            done = recovery.recover_record(
                record, f"dispatcher {self.id} stopped", self._tm.get())
            if done:
                logger.info("dispatcher %s: on stop, handed on %s", self.id,
                            _summary(done))
        try:
            _bookkeeping_commit(self._tm, mark_stopped)
        except Exception:
            logger.exception("dispatcher %s: could not record its stop", self.id)
        close_connection(self._conn)

    def _linger(self):
        """After a stop that left jobs running: ping until they end."""
        while not all(agent.wait_idle(self.ping_interval) for agent in self.agents):
            try:
                self._last_ping = 0.0
                self._maybe_ping()
            except Exception:
                logger.exception("dispatcher %s: heartbeat after stop failed", self.id)
        self._finish_stop()
        logger.info("dispatcher %s: the jobs left running at stop have ended", self.id)

    def wake(self):
        """See `IDispatcher`."""
        self._wakeup.set()

    # -- the claim loop ----------------------------------------------------

    def _loop(self):
        while not self._stopping.is_set():
            self._wakeup.clear()
            # Claiming and the heartbeat fail apart: a dispatcher whose
            # claims fail still lives (and recovers dead siblings' jobs),
            # and must not be declared dead and see its running jobs run
            # a second time.
            try:
                again, next_due = self._cycle()
                problem = self._job_problem
                if problem is not None:
                    # claims work, but this process cannot load the jobs
                    # they hand it (see `JobRunner._hand_back`)
                    self._record_claim_error(problem)
                elif self._claim_error is not None:
                    self._record_claim_error(None)
                    self._logged_claim_errors.clear()
            except Exception as error:
                self.claim_failures += 1
                self._log_claim_failure(error)
                self._tm.abort()
                first = self._claim_error is None
                self._record_claim_error(error)
                again, next_due = False, None
                # A claim whose commit failed without a conflict (the ZEO
                # server went away while it committed) may have committed
                # all the same: its jobs are then held by no thread.  The
                # heartbeat below hands them on, not one ping_interval
                # later (once: a claim that keeps failing must not make a
                # heartbeat write at every poll).
                if first:
                    self._last_ping = 0.0
                self._stopping.wait(min(1.0, self.poll_interval))
            try:
                self._maybe_ping()
            except Exception as error:
                self._tm.abort()
                self._log_claim_failure(error, "heartbeat failed")
            if not again:
                wait = self.poll_interval
                # A job due later than now: wake up for it.  One due now that
                # was not claimed waits for room (a freed slot wakes us) or
                # for another worker; looking again at once would spin.
                if next_due is not None and next_due > 0:
                    wait = min(wait, next_due)
                self._wakeup.wait(wait)
                self._gather()
        self._tm.abort()

    def _gather(self):
        """Under a backlog, let results and freed room gather before the
        next claim, for at most `GATHER_SECONDS`: a claim rewrites the
        buckets it takes jobs from and a commit costs an fsync, whether it
        stores one result and claims one job or many.  (Woken by every
        result handed, the cycles of a 2-thread drain stored and claimed
        one or two jobs each, a third of them.)  No wait while an agent has
        a thread with nothing to run, or holds ahead of its threads no more
        than a quarter of its prefetch.  (Waiting only until half of what it
        may hold was free, a drain of short jobs stored and claimed 65 jobs
        a cycle, against 98 now: 4% fewer bytes written per job, and 3% to
        17% less CPU in three comparisons of alternating runs.)"""
        deadline = time.monotonic() + GATHER_SECONDS
        while not self._stopping.is_set():
            self._wakeup.clear()
            for agent in self.agents:
                ahead = agent.ahead
                # (room, once its threads are busy, is the prefetch less
                # the jobs held ahead)
                if agent.free or (ahead and 4 * agent.room >= 3 * ahead):
                    return
            left = deadline - time.monotonic()
            if left <= 0 or not self._wakeup.wait(left):
                return

    def _log_claim_failure(self, error, what="claim failed"):
        """Log a failed claim (or heartbeat) with its traceback once a
        `CLAIM_LOG_INTERVAL` per distinct failure, a line at debug level
        otherwise: a claim retried every poll must not flood the log."""
        key = (what, type(error).__name__, str(error)[:200])
        now = time.monotonic()
        last = self._logged_claim_errors.get(key)
        if last is not None and now - last < CLAIM_LOG_INTERVAL:
            logger.debug("dispatcher %s: %s again: %s: %s", self.id, what,
                         type(error).__name__, error)
            return
        if len(self._logged_claim_errors) > 100:
            self._logged_claim_errors.clear()
        self._logged_claim_errors[key] = now
        logger.error("dispatcher %s: %s (said once a %g s while it fails so)",
                     self.id, what, CLAIM_LOG_INTERVAL, exc_info=error)

    def note_job_problem(self, error):
        """Say (from an agent's thread) that a claimed job could not be
        loaded for a reason of this worker's own (a database it did not
        open), or, with None, that a job loaded: the next cycle records it
        in the dispatcher's record as a claim error, or clears it."""
        if error is None:
            if self._job_problem is not None:
                self._job_problem = None
                self._wakeup.set()
            return
        self.claim_failures += 1
        self._log_claim_failure(error, "a claimed job cannot be loaded here; handed back")
        self._job_problem = error
        self._wakeup.set()

    def hand_result(self, oid, job_id, value, began, started=None, wake=True):
        """Take the result of a job that wrote nothing else, to commit it
        with the next claim (called from the agents' threads).  Return False
        once the dispatcher stopped: the job's thread commits it itself.
        A batch handing several results wakes the dispatcher with its last
        only (`wake`), so that one commit stores them all."""
        with self._results_lock:
            if not self._accepting:
                return False
            self._results.append((oid, job_id, value, began, started))
        if wake:
            self._wakeup.set()
        return True

    def note_started(self, oid, job_id, when, wake=True, ran=None):
        """Record, with the next claim (now if `wake`, else within a poll
        interval), that a job taken ahead of a free thread has started
        (called from the agents' threads).  `ran`, if given, says by its
        `finished` attribute when the job has ended in its thread: from
        then on no start is recorded, its outcome's commit records it."""
        with self._results_lock:
            self._started.append((oid, job_id, when, ran))
        if wake:
            self._wakeup.set()

    def _take_results(self):
        with self._results_lock:
            results, self._results = self._results, []
            started, self._started = self._started, []
        return results, started

    def _give_back(self, results, started):
        with self._results_lock:
            self._results[:0] = results
            self._started[:0] = started

    def _mark_started(self, started, results):
        finished = {oid for oid, *_ in results}
        for oid, job_id, when, ran in started:
            if oid in finished or (ran is not None and ran.finished):
                # Its outcome records the start.  (A batch's jobs that had
                # ended when another thread's results woke this cycle were
                # given a live state and rewritten, to show as running a
                # job that was not: one job in nine of a drain of 1 ms jobs.)
                continue
            job = self._conn.get(oid)
            if job._status == ASSIGNED and job.dispatcher_id == self.id:
                job._mark_started_ahead(when)
                if job._wait_mode is None:    # a job that waited started before
                    events.notify_after_commit(self._tm.get(), events.JobStarted(job),
                                               once=(job_id, when))

    def _store_results(self, results):
        """Write handed results into the current transaction; return the
        jobs and results for logging after commit."""
        from zasync.worker.runner import complete_handed
        stored = []
        txn = self._tm.get()
        for oid, job_id, value, began, started in results:
            job = complete_handed(self._conn, self.id, oid, value, started,
                                  self._runner.file_completed)
            if job is None:
                logger.warning("dispatcher %s: job %s is no longer ours; its "
                               "result %r is dropped", self.id, job_id, value)
                continue
            events.notify_after_commit(txn, events.JobSucceeded(job))
            stored.append((job_id, job.callable_name, began))
        return stored

    def _log_results(self, stored):
        if logger.isEnabledFor(logging.INFO):
            now = time.monotonic()
            for job_id, name, began in stored:
                logger.info("dispatcher %s: job %s (%s) succeeded in %.3fs",
                            self.id, job_id, name, now - began)

    def _commit_results(self):
        """Commit handed results on their own (when not claiming)."""
        results, started = self._take_results()
        if not results and not started:
            return
        stored = []

        def store():
            self._mark_started(started, results)
            stored[:] = self._store_results(results)
        _bookkeeping_commit(self._tm, store)
        self._log_results(stored)

    def _cycle(self):
        """Commit finished results and claim for every agent with room, in
        one transaction.  Return (look again now?, seconds to the next due
        job or None)."""
        from ZODB.POSException import ConflictError

        from zasync.queue.database import get_queues
        results, started = self._take_results()
        self._tm.begin()
        try:
            self._mark_started(started, results)
            stored = self._store_results(results) if results else []
            container = get_queues(self._conn)
            now = clock.now()
            handed = []
            next_due = None
            for name in self.queue_names:
                queue = container[name]
                if queue.has_work(now):
                    handed.extend(self._claim_from(queue, now, handed))
                due = queue.next_due(now)
                if due is not None and (next_due is None or due < next_due):
                    next_due = due
            txn = self._tm.get()
            for agent, job in handed:
                if job._status == ACTIVE and job._wait_mode is None:
                    events.notify_after_commit(txn, events.JobStarted(job))
            self._tm.commit()
        except ConflictError:
            self._tm.abort()
            self._give_back(results, started)
            self.claim_conflicts += 1
            logger.debug("dispatcher %s: claim conflicted; trying again", self.id)
            return True, None
        except Exception:
            self._tm.abort()
            self._give_back(results, started)
            raise
        self._log_results(stored)
        for agent, job in handed:
            if isinstance(agent, Agent):   # its threads read the job once
                self._runner.note_class(job._p_oid, type(job))
            agent.submit(job._p_oid, job.id, ahead=job._status == ASSIGNED)
        return bool(handed) and any(agent.free for agent in self.agents), next_due

    def _claim_from(self, queue, now, earlier=()):
        """Claim from one queue for each agent: as many jobs as it has free
        threads (started at once), then, under a backlog, up to its
        prefetch more (left assigned until a thread takes them); below a
        backlog, for an agent whose jobs are short, fewer (see
        `_ahead_below_backlog`)."""
        handed = []
        claimed_any = False
        for agent in self.agents:
            # what this cycle already gave the agent, from other queues too
            taken = sum(1 for a, _ in earlier if a is agent)
            free, room = agent.free - taken, agent.room - taken
            ahead = agent.ahead
            held_ahead = max(0, ahead - room)    # waiting here for a thread
            if free > 0:
                jobs = queue.claim(self.id, free, agent.accepts, now)
                claimed_any = True
                for job in jobs:
                    if job._status == ASSIGNED:
                        job._start(self.id, now)
                handed.extend((agent, job) for job in jobs)
                room -= len(jobs)
            if room > 0 and ahead:
                pending = queue.pending_count()
                if pending <= 2 * (agent.size + ahead):     # no backlog
                    room = min(room, _ahead_below_backlog(agent, pending, held_ahead))
                if room > 0:
                    jobs = queue.claim(self.id, room, agent.accepts, now)
                    claimed_any = True
                    handed.extend((agent, job) for job in jobs)
        if not claimed_any:
            # No room: a claim of none still moves the inbox into the queue
            # and files completed jobs, so the inbox stays small while every
            # thread is busy.
            queue.claim(self.id, 0, None, now)
        return handed

    def _record_claim_error(self, error):
        """Say in the dispatcher's record why its claims fail (or, with
        None, that they work again), so that `zasync status` and the web
        view show it instead of a healthy worker.  Written when the reason
        changes, and otherwise at most once a ping interval (it counts as
        the heartbeat: the dispatcher lives, it cannot work)."""
        if _unreachable(error):
            return      # the storage is away: the record cannot be written either
        message = None if error is None else _describe_claim_error(error)[:500]
        now = time.monotonic()
        last = self._claim_error
        if (last is not None and last[0] == message
                and now - last[1] < self.ping_interval):
            return

        def write():
            from zasync.queue.database import get_queues
            record = get_queues(self._conn).dispatchers.get(self.id)
            if record is None or record.session != self._session:
                return
            record.claim_error = message
            record.claim_error_at = None if message is None else clock.now()
            if message is not None:
                record.last_ping = clock.now()
        try:
            # One attempt: a conflict on the record is retried at the next
            # failed claim, and the claim loop is not held up for long.
            _bookkeeping_commit(self._tm, write, attempts=1)
        except Exception as failure:
            from ZODB.POSException import ConflictError
            if isinstance(failure, ConflictError):
                return      # tried again at the next claim
            # The database itself fails, most likely (the claim's own
            # traceback is logged): try again a ping interval later.
            logger.warning("dispatcher %s: could not record why its claims "
                           "fail: %s: %s", self.id, type(failure).__name__, failure)
            if message is not None:
                self._claim_error = (message, now)
            return
        self._claim_error = None if message is None else (message, now)
        if message is not None:
            self._last_ping = now

    def _maybe_ping(self):
        """Every `ping_interval`: write the heartbeat, hand on jobs this
        dispatcher holds but no thread runs, and recover the jobs of
        dispatchers whose heartbeat is older than `death_interval`."""
        if time.monotonic() - self._last_ping < self.ping_interval:
            return
        from zasync.queue.database import get_queues
        report = {}

        def ping():
            report.clear()
            container = get_queues(self._conn)
            now = clock.now()
            record = container.dispatchers.get(self.id)
            if record is None or record.session != self._session:
                report["lost"] = True
                return
            record.last_ping = now
            if record.stopped_at is not None:
                # Counted as dead during a long pause (its jobs were handed
                # on).  Alive again, it must count as alive: a record left
                # stopped is skipped by every search for the dead, so what
                # it claims from now on would never be recovered.
                report["revived"] = record.dead_at or record.stopped_at
                record.stopped_at = record.dead_at = None
            txn = self._tm.get()
            orphans = self._orphans(record)
            if orphans:
                report["orphans"] = recovery.recover_record(
                    record, f"dispatcher {self.id} held it but no thread ran it",
                    txn, only=orphans, now=now)
            for dead in recovery.dead_records(
                    container, self.death_interval, now, exclude=(self.id,)):
                dead.stopped_at = dead.dead_at = now
                report[dead.id] = recovery.recover_record(
                    dead, f"dispatcher {dead.id} died (no heartbeat for "
                          f"{(now - dead.last_ping).total_seconds():.0f} s)", txn, now=now)
        _bookkeeping_commit(self._tm, ping)
        self._last_ping = time.monotonic()
        if report.pop("lost", False):
            logger.error("dispatcher %s: its record was taken over by another "
                         "process; it stops claiming", self.id)
            self._stopping.set()
            return
        revived = report.pop("revived", None)
        if revived is not None:
            logger.warning("dispatcher %s: was counted as dead at %s (its jobs "
                           "were handed on); it runs again", self.id,
                           revived.isoformat())
        orphans = report.pop("orphans", None)
        if orphans:
            logger.warning("dispatcher %s: handed on %s", self.id, _summary(orphans))
        for dead_id, done in report.items():
            logger.warning("dispatcher %s: dispatcher %s is dead; recovered %s",
                           self.id, dead_id, _summary(done))
            events.notify(events.DispatcherDied(dead_id))

    def _orphans(self, record):
        """Ids of jobs the record lists that no thread here holds."""
        held = {job_id for agent in self.agents for job_id in agent.running}
        with self._results_lock:
            held.update(job_id for _, job_id, *rest in self._results)
        return {job_id for job_id in record.jobs.ids() if job_id not in held}

    # -- progress, from the jobs' threads ------------------------------------

    def progress_writer(self, live_oid, deadline=None):
        """A function (fraction, message) -> cancel requested, that commits
        a running job's progress in a short transaction of its own (a
        fraction of None only reads the cancel request)."""
        def write(fraction, message):
            if deadline is not None and time.monotonic() > deadline:
                from zasync.job.local import current_job
                from zasync.worker.runner import timed_out
                raise timed_out(current_job())
            with self._progress_lock:
                tm, conn = self._progress_tm, self._progress_conn
                if conn is None:
                    # stop() returned while this job ran and closed the
                    # shared connection: use one of the job's own
                    tm = transaction.TransactionManager()
                    conn = open_connection(self.db, tm)
                    try:
                        return write_progress(tm, conn, live_oid, fraction, message)
                    finally:
                        tm.abort()
                        close_connection(conn)
                return write_progress(tm, conn, live_oid, fraction, message)
        return write


def _ahead_below_backlog(agent, pending, held):
    """How many of `pending` jobs (due or not, after those claimed for its
    free threads) to take ahead of `agent`'s threads, which hold `held`
    jobs ahead already, when they make no backlog (no more than twice what
    it may hold).

    Not one for an agent of long jobs: those held would wait here while
    another worker sits idle.  For one of short jobs (`short`, see
    `IAgent`), as many as leave it holding ahead no more than stay pending
    beyond two per thread: the rest, and the two, stay for other workers.
    Taking none left the end of every drain of short jobs, twice an
    agent's prefetch (260 jobs for two threads), claimed one job per free
    thread per cycle, each cycle a commit: two thirds of the cycles of a
    3,000-job drain, an eighth of its CPU (`bench/cost.py`).  (Agents
    written before `short` was asked for count as long.)
    """
    if not getattr(agent, "short", False):
        return 0
    return max(0, (pending - 2 * agent.size - held) // 2)


def write_progress(tm, conn, live_oid, fraction, message):
    """Commit a job's progress (a fraction of None only reads the cancel
    request); return whether cancellation was requested.  `live_oid` is
    that of the job's `LiveState`, or of the job itself while it has none
    (its first report makes it)."""
    from zasync.job.job import Job
    if fraction is None:
        tm.begin()
        live = conn.get(live_oid)
        cancelled = (live._live if isinstance(live, Job) else live).cancel_requested
        tm.abort()
        return cancelled
    for attempt in tm.attempts(5):
        with attempt:
            live = conn.get(live_oid)
            if isinstance(live, Job):
                live = live._live
            live.progress = fraction
            live.progress_message = message
            cancelled = live.cancel_requested
    return cancelled


_sessions_here = set()


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _summary(done):
    counts = {}
    for what in done.values():
        counts[what] = counts.get(what, 0) + 1
    return ", ".join(f"{n} {what}" for what, n in sorted(counts.items(), key=str)) or "nothing"


def _unreachable(error):
    """Whether `error` says the storage server cannot be reached."""
    try:
        from ZEO.Exceptions import ClientDisconnected
    except ImportError:  # pragma: no cover - ZEO is a dependency
        return False
    return isinstance(error, ClientDisconnected)


def _describe_claim_error(error):
    """The error and its causes in a line, with a hint when a job refers to
    a database of the multi-database this process did not open."""
    from zasync.queue.multidb import missing_database, missing_database_hint
    parts, seen = [], error
    while seen is not None and len(parts) < 4:
        parts.append(f"{type(seen).__name__}: {seen}" if str(seen) else type(seen).__name__)
        seen = seen.__cause__ or (None if seen.__suppress_context__ else seen.__context__)
    text = ", from ".join(parts)
    missing = missing_database(error)
    if missing is not None:
        text += f" ({missing_database_hint(missing)})"
    return text


def _bookkeeping_commit(tm, change, attempts=10):
    for attempt in tm.attempts(attempts):
        with attempt:
            change()
