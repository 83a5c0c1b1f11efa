"""A worker of a third kind plugs into the dispatcher by implementing
`IAgent` alone: the dispatcher gives it jobs, reads its load and stops it
through the interface, whatever class it is."""

import threading

import transaction
from zope.interface import implementer
from zope.interface.verify import verifyObject

import zasync
from zasync.interfaces import COMPLETED, IAgent, IJobRunner

import unit_jobs


@implementer(IAgent)
class InlineAgent:
    """Runs each job handed to it in one thread of its own, one at a time:
    the smallest worker, written only against the interfaces."""

    def __init__(self, name="inline"):
        self.name = name
        self.size = 1
        self.filter = None
        self.batch = 1
        self.on_free = None
        self.runner = None
        self._lock = threading.Lock()
        self._held = []
        self._wake = threading.Event()
        self._stopping = False
        self._idle = threading.Condition(self._lock)

    @property
    def free(self):
        with self._lock:
            return 0 if self._held else 1

    room = free
    ahead = 0

    @property
    def running(self):
        with self._lock:
            return {job_id for _, job_id in self._held}

    def accepts(self, job):
        return True

    def start(self, run, thread_name):
        self.runner = run
        threading.Thread(target=self._work, args=(run,), name=thread_name,
                         daemon=True).start()

    def submit(self, oid, job_id, ahead=False):
        with self._lock:
            self._held.append((oid, job_id))
        self._wake.set()

    def _work(self, run):
        while True:
            self._wake.wait()
            self._wake.clear()
            with self._lock:
                held, stopping = list(self._held), self._stopping
            for task in held:
                run([task])
                with self._lock:
                    self._held.remove(task)
                    self._idle.notify_all()
                if self.on_free is not None:
                    self.on_free()
            if stopping:
                return

    def drop_waiting(self):
        return []

    def wait_idle(self, timeout=None):
        with self._lock:
            return self._idle.wait_for(lambda: not self._held, timeout)

    def stop(self):
        with self._lock:
            self._stopping = True
        self._wake.set()


def test_a_third_kind_of_agent_runs_jobs_through_the_interface(db):
    agent = InlineAgent()
    assert verifyObject(IAgent, agent)
    dispatcher = zasync.Dispatcher(db, agents=[agent], poll_interval=0.05)
    dispatcher.start()
    try:
        assert verifyObject(IJobRunner, agent.runner)
        tm = transaction.TransactionManager()
        conn = db.open(tm)
        with tm:
            jobs = [zasync.get_queue(conn).put(unit_jobs.add, n, 1) for n in range(3)]
        done = [zasync.wait_for(job, timeout=30) for job in jobs]
        assert [job.status for job in done] == [COMPLETED] * 3
        assert [job.result for job in done] == [1, 2, 3]
        conn.close()
    finally:
        assert dispatcher.stop(timeout=30)
