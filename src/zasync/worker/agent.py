"""Agents: a dispatcher's pools of worker threads, each claiming only what
it has room for and what its filter accepts."""

import logging
import collections
import threading
import time

from zope.interface import implementer

from zasync.interfaces import ConfigurationError, IAgent

logger = logging.getLogger(__name__)

_STOP = object()

#: The default prefetch is at most this many jobs per thread.
PREFETCH_PER_THREAD = 64
#: Jobs that take less than this (seconds, a moving average) are short: an
#: agent takes jobs ahead beyond one per thread only for short jobs.  For
#: longer ones, jobs held ahead would wait here while another worker sits
#: idle.
SHORT_JOB = 0.02
#: While jobs are short, the default prefetch holds about this much of
#: their work (seconds, by the moving average) per thread: many of the
#: shortest jobs to a commit, few of those near `SHORT_JOB`, so that a job
#: held ahead, or an urgent one claimed behind those, waits about this long.
AHEAD_SECONDS = 0.05
#: The default batch: short jobs held ahead that a thread runs together, in
#: one transaction (see `zasync.worker.batch`).
BATCH = 32
#: A batch is meant to hold about `AHEAD_SECONDS` of work.  One that has
#: run this long (seconds) takes no more of its jobs: it commits what ran
#: and hands the rest back, so that a long job cannot hold short ones
#: behind it; and while one of its jobs runs past this, an idle thread of
#: the agent takes the jobs it has not started.
BATCH_SECONDS = 2 * AHEAD_SECONDS
#: Weight of the newest run time in the moving average.
_AVERAGE_WEIGHT = 0.2


class Batch:
    """The jobs a thread took at once, to run one after another in one
    transaction (see `zasync.worker.batch`).  `take()` gives the next one; the jobs
    not started stay the agent's, so that another thread takes them if
    this one runs long.  Iterating and `len` count them all."""

    def __init__(self, agent, tasks):
        self._agent = agent
        self._waiting = collections.deque(tasks)
        self.ran = []           # the tasks taken by this batch's thread
        self._began = self._since = time.monotonic()

    def __len__(self):
        return len(self.ran) + len(self._waiting)

    def __iter__(self):
        return iter(self.ran + list(self._waiting))

    def take(self):
        """The next task, or None once the batch is over: none left, or it
        ran `BATCH_SECONDS` (the rest go back to the agent's threads)."""
        agent = self._agent
        now = time.monotonic()
        with agent._lock:
            if now - self._began > BATCH_SECONDS and self.ran:
                self._hand_back()
            if not self._waiting:
                agent._batches.discard(self)
                return None
            task = self._waiting.popleft()
            self.ran.append(task)
            self._since = now
            return task

    def _hand_back(self):
        """Put the jobs not started back in front of the agent's tasks, for
        any thread.  Under the lock."""
        agent = self._agent
        if self._waiting:
            agent._tasks.extendleft((oid, job_id, True) for oid, job_id
                                    in reversed(self._waiting))
            self._waiting.clear()
            agent._has_tasks.notify()
        agent._batches.discard(self)

    def _close(self):
        """At the end of its thread's run: hand back what it did not take
        (its run ended early); return the tasks it took.  A runner that
        never called `take` ran them all its own way."""
        with self._agent._lock:
            if not self.ran:
                self.ran.extend(self._waiting)
                self._waiting.clear()
            self._hand_back()
        return self.ran

    def _overdue(self, now):
        """Seconds before its running job has run past `BATCH_SECONDS`
        (<= 0: it has); None if no job waits behind it.  Under the lock."""
        if not self._waiting or self._since is None:
            return None
        return self._since + BATCH_SECONDS - now

    def _give_up(self):
        """The jobs not started, for another thread.  Under the lock."""
        tasks = list(self._waiting)
        self._waiting.clear()
        self._agent._batches.discard(self)
        return tasks


@implementer(IAgent)
class Agent:
    """See `IAgent`.

    `size` threads run the agent's jobs; `filter(job) -> bool` (optional)
    says which jobs it takes.  The dispatcher asks `free` before each claim,
    so a busy agent leaves new jobs to other workers.

    Only when the queue holds a backlog (more pending jobs than twice what
    this agent could hold) does it take up to `prefetch` jobs more than it
    has free threads, so that one commit claims many jobs; they wait in
    this process, `assigned`, until a thread is free.  Below that, while
    its recent jobs are short (`short`), it holds ahead no more jobs than
    stay pending beyond two per thread, so that the end of a drain still
    shares commits.  `prefetch=0` never takes
    more than the free threads.  By default (`prefetch=None`) it adapts:
    while the agent's recent jobs are short (less than `SHORT_JOB` seconds
    on average), as many per thread as take about `AHEAD_SECONDS` (at
    least one, at most `PREFETCH_PER_THREAD`), else one per thread, so
    that long jobs spread over idle workers while short ones share commits.

    While its recent jobs are short, a thread takes up to `batch` of the
    jobs held ahead at once and runs them in one transaction (each after a
    savepoint, so that one raising rolls back only its own changes; see
    `zasync.worker.batch`); a batch that runs long hands the jobs it has not
    started to the other threads (see `Batch`).  If that commit conflicts, every job of the batch runs
    again, alone: `batch=1` (every job in a transaction of its own) suits
    jobs whose effects outside the database must not be repeated.
    """

    def __init__(self, size=1, filter=None, name="main", prefetch=None, batch=BATCH):
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ConfigurationError(f"agent size={size!r}: expected an int of 1 or more")
        if filter is not None and not callable(filter):
            raise ConfigurationError(f"agent filter={filter!r}: expected a callable job -> bool")
        self._adaptive = prefetch is None
        if prefetch is None:
            prefetch = PREFETCH_PER_THREAD * size
        if isinstance(prefetch, bool) or not isinstance(prefetch, int) or prefetch < 0:
            raise ConfigurationError(
                f"agent prefetch={prefetch!r}: expected an int of 0 or more")
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ConfigurationError(f"agent batch={batch!r}: expected an int of 1 or more")
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"agent name={name!r}: expected a non-empty str")
        self.size = size
        self.prefetch = prefetch
        self.batch = batch
        self.filter = filter
        self.name = name
        self._lock = threading.Lock()
        self._running = set()
        # (oid, job id, taken ahead?) pairs for the threads, and _STOP
        self._tasks = collections.deque()
        self._has_tasks = threading.Condition(self._lock)
        self._batches = set()   # the batches under way, with jobs not started
        self._recent = None     # moving average of run times, seconds
        self._threads = []
        self._run = None
        self._idle = threading.Condition(self._lock)
        #: called (no arguments) each time a thread frees its slot; the
        #: dispatcher sets it to its `wake`, so that a job put while every
        #: thread was busy is claimed at once, not after a whole poll
        self.on_free = None

    def __repr__(self):
        return f"<zasync.Agent {self.name!r} size={self.size}>"

    @property
    def free(self):
        with self._lock:
            return max(0, self.size - len(self._running))

    @property
    def ahead(self):
        """How many jobs it takes beyond its free threads under a backlog:
        its `prefetch`, unless that adapts (the default) and its recent jobs
        were not short: then one per thread."""
        recent = self._recent
        if not self._adaptive:
            return self.prefetch
        if recent is None or recent >= SHORT_JOB:
            return min(self.prefetch, self.size)
        wanted = round(self.size * AHEAD_SECONDS / max(recent, 1e-6))
        return max(self.size, min(self.prefetch, wanted))

    @property
    def short(self):
        """Whether its recent jobs were short (`SHORT_JOB`, by the moving
        average of their run times)."""
        recent = self._recent
        return recent is not None and recent < SHORT_JOB

    @property
    def room(self):
        """How many more jobs it may hold, counting what it takes ahead."""
        ahead = self.ahead
        with self._lock:
            return max(0, self.size + ahead - len(self._running))

    @property
    def running(self):
        with self._lock:
            return set(self._running)

    def accepts(self, job):
        """See `IAgent`."""
        if self.filter is None:
            return True
        try:
            return bool(self.filter(job))
        except Exception:
            logger.exception("agent %s: filter failed on job %s; not taking it",
                             self.name, getattr(job, "id", "?"))
            return False

    # -- driven by the dispatcher --------------------------------------------

    def start(self, run, thread_name):
        """Start the threads; `run([(oid, job_id), ...])` runs claimed jobs."""
        self._run = run
        for index in range(self.size):
            thread = threading.Thread(
                target=self._work, name=f"{thread_name}-{self.name}-{index}",
                daemon=True)
            thread.start()
            self._threads.append(thread)

    def submit(self, oid, job_id, ahead=False):
        """Hand a claimed job to a free thread; `ahead` says it was taken
        ahead of one (and may wait for a thread)."""
        with self._lock:
            if len(self._running) >= self.size + self.prefetch:
                raise RuntimeError(f"agent {self.name} has no free slot for {job_id}")
            self._running.add(job_id)
            self._tasks.append((oid, job_id, ahead))
            self._has_tasks.notify()

    def _take(self):
        """The next jobs for a thread: one, and while jobs are short, up to
        `batch` in all with the jobs taken ahead that follow it (jobs
        claimed for free threads are meant to run side by side: they are
        not run one after another), as a `Batch`; None to stop.  A thread
        with nothing to do takes the jobs that a batch holds behind a job
        running past `BATCH_SECONDS`."""
        with self._lock:
            while not self._tasks:
                wait = None
                now = time.monotonic()
                for batch in self._batches:
                    left = batch._overdue(now)
                    if left is not None and left <= 0:
                        return self._as_batch(batch._give_up())
                    if left is not None and (wait is None or left < wait):
                        wait = left
                self._has_tasks.wait(wait)
            task = self._tasks.popleft()
            if task is _STOP:
                return None
            tasks = [task[:2]]
            recent = self._recent
            if recent is None or recent >= SHORT_JOB:
                return tasks
            while (len(tasks) < self.batch and self._tasks
                   and self._tasks[0] is not _STOP and self._tasks[0][2]):
                tasks.append(self._tasks.popleft()[:2])
            return self._as_batch(tasks)

    def _as_batch(self, tasks):
        """`tasks` as a thread runs them (under the lock): one alone, or a
        `Batch` that idle threads are told of."""
        if len(tasks) == 1:
            return tasks
        batch = Batch(self, tasks)
        self._batches.add(batch)
        self._has_tasks.notify_all()    # idle threads watch it from now
        return batch

    def _work(self):
        while True:
            tasks = self._take()
            if tasks is None:
                return
            began = time.monotonic()
            try:
                self._run(tasks)
            except BaseException:
                logger.exception("agent %s: job(s) %s ended its thread's run badly",
                                 self.name, ", ".join(job_id for _, job_id in tasks))
            finally:
                if isinstance(tasks, Batch):
                    tasks = tasks._close()
                took = (time.monotonic() - began) / max(1, len(tasks))
                recent = self._recent
                self._recent = took if recent is None else (
                    recent + _AVERAGE_WEIGHT * (took - recent))
                with self._lock:
                    for _, job_id in tasks:
                        self._running.discard(job_id)
                    self._idle.notify_all()
                on_free = self.on_free
                if on_free is not None:
                    on_free()

    def drop_waiting(self):
        """Forget the jobs handed to this agent that no thread has taken
        yet; return their ids (the dispatcher gives them back)."""
        with self._lock:
            dropped = [task[1] for task in self._tasks if task is not _STOP]
            stops = sum(1 for task in self._tasks if task is _STOP)
            self._tasks.clear()
            self._tasks.extend([_STOP] * stops)
            for job_id in dropped:
                self._running.discard(job_id)
            self._idle.notify_all()
        return dropped

    def wait_idle(self, timeout=None):
        """Wait until no job runs; return whether that happened in time."""
        with self._lock:
            return self._idle.wait_for(lambda: not self._running, timeout)

    def stop(self):
        """Let the threads end once they have finished their jobs."""
        with self._lock:
            self._tasks.extend([_STOP] * len(self._threads))
            self._has_tasks.notify_all()
        self._threads = []
