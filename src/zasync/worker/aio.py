"""An agent that runs ``async def`` jobs on an asyncio event loop, many at
once in one thread: for jobs that mostly wait (HTTP calls, sleeps, other
services), where a thread per job would be a thread mostly asleep.

It is written against the interfaces alone (`IAgent` to serve a
dispatcher, `IJobRunner` to run jobs), as a third kind of worker beside
the thread and process agents.  For each job it asks the runner to
`begin` it (in a small thread pool: a short read of the database), calls
the job's callable on the loop and awaits what it returns, within the
job's time limit, then has the runner `record` the outcome (in the pool
again).  A job the runner does not hand out (callbacks due, resuming after
a wait, cancelled) runs through the runner in the pool as usual.

What an ``async def`` job gives up: it runs in no transaction (it should
not change persistent objects; it may return a value or put jobs through
a connection of its own), and `progress`/`check_cancelled` are for jobs
run by a thread.  A plain function given to this agent is called on the
loop's thread, so it had better be quick.
"""

import asyncio
import concurrent.futures
import functools
import inspect
import logging
import threading
import time

from zope.interface import implementer

from zasync.interfaces import ConfigurationError, IAgent, JobTimeoutError

logger = logging.getLogger(__name__)


@implementer(IAgent)
class AsyncioAgent:
    """See `IAgent`.  `size` jobs run at once on one event loop; `threads`
    threads do the database work of beginning and recording them."""

    batch = 1
    ahead = 0
    short = False

    def __init__(self, size=100, filter=None, name="asyncio", threads=4):
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ConfigurationError(f"agent size={size!r}: expected an int of 1 or more")
        if filter is not None and not callable(filter):
            raise ConfigurationError(f"agent filter={filter!r}: expected a callable job -> bool")
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"agent name={name!r}: expected a non-empty str")
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ConfigurationError(f"agent threads={threads!r}: expected an int of 1 or more")
        self.size = size
        self.filter = filter
        self.name = name
        self.threads = threads
        self.on_free = None
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._running = set()
        self._stopping = False
        self._loop = None
        self._pool = None
        self._run = None

    def __repr__(self):
        return f"<zasync AsyncioAgent {self.name!r} size={self.size}>"

    @property
    def free(self):
        with self._lock:
            return max(0, self.size - len(self._running))

    room = free

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

    def start(self, run, thread_name):
        """See `IAgent`."""
        self._run = run
        self._stopping = False
        self._pool = concurrent.futures.ThreadPoolExecutor(
            self.threads, thread_name_prefix=f"{thread_name}-{self.name}-db")
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._serve, args=(self._loop,), daemon=True,
                         name=f"{thread_name}-{self.name}-loop").start()

    @staticmethod
    def _serve(loop):
        try:
            loop.run_forever()
        finally:
            loop.close()

    def submit(self, oid, job_id, ahead=False):
        """See `IAgent`.  Every job submitted starts at once."""
        with self._lock:
            if len(self._running) >= self.size:
                raise RuntimeError(f"agent {self.name} has no free slot for {job_id}")
            self._running.add(job_id)
        asyncio.run_coroutine_threadsafe(self._job(oid, job_id), self._loop)

    async def _in_pool(self, function, *args, **kwargs):
        return await self._loop.run_in_executor(
            self._pool, functools.partial(function, *args, **kwargs))

    async def _job(self, oid, job_id):
        try:
            while True:
                began = time.monotonic()
                handed = await self._in_pool(self._run.begin, oid, job_id)
                if handed is None:
                    await self._in_pool(self._run, [(oid, job_id)])
                    return
                started, call, args, kwargs, timeout = handed
                value = error = None
                try:
                    value = call(*args, **kwargs)
                    if inspect.isawaitable(value):
                        value = await asyncio.wait_for(value, timeout)
                except asyncio.TimeoutError:
                    error = JobTimeoutError(
                        f"job {job_id} ran longer than its time limit of {timeout:g} s")
                except Exception as raised:
                    error = raised
                outcome = await self._in_pool(
                    self._run.record, oid, job_id, began, started, value=value, error=error)
                if outcome == "callbacks":
                    await self._in_pool(self._run, [(oid, job_id)])
                if outcome != "again":
                    return
        except Exception:
            logger.exception("agent %s: job %s: the worker failed to record what "
                             "happened", self.name, job_id)
        finally:
            with self._lock:
                self._running.discard(job_id)
                self._idle.notify_all()
                done = self._stopping and not self._running
            if done:
                self._close()
            on_free = self.on_free
            if on_free is not None:
                on_free()

    def drop_waiting(self):
        """See `IAgent`.  No job waits here: each starts when submitted."""
        return []

    def wait_idle(self, timeout=None):
        """See `IAgent`."""
        with self._lock:
            return self._idle.wait_for(lambda: not self._running, timeout)

    def stop(self):
        """See `IAgent`: the loop and the pool end once the running jobs
        have finished."""
        with self._lock:
            self._stopping = True
            done = not self._running
        if done and self._loop is not None:
            self._loop.call_soon_threadsafe(self._close)

    def _close(self):
        # on the loop's thread
        loop, pool = self._loop, self._pool
        if loop is None:
            return
        self._loop = self._pool = None
        loop.stop()
        pool.shutdown(wait=False)
