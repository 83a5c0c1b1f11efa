"""Every implementation keeps its contract; the exception tree has one root;
the package exports exactly what it says it exports."""

import ast
import importlib
import inspect
import pathlib
import pkgutil

import pytest
import transaction
import transaction.interfaces
from zope.interface.verify import verifyClass, verifyObject

import zasync
import zasync.interfaces as interfaces
from zasync.job import events
from zasync.job.failure import Failure
from zasync.queue.queue import Queue, Queues
from zasync.worker.record import DispatcherRecord

import unit_jobs


def test_job_provides_ijob():
    job = zasync.Job(unit_jobs.add, 1, 2)
    assert verifyObject(interfaces.IJob, job)


def test_completed_job_still_provides_ijob():
    job = zasync.Job(unit_jobs.fail_value, "no")
    job()
    assert verifyObject(interfaces.IJob, job)


def test_failure_provides_ifailure():
    failure = Failure.from_exception(ValueError("bad"))
    assert verifyObject(interfaces.IFailure, failure)


@pytest.mark.parametrize("policy", [
    zasync.RetryTransient(), zasync.Backoff(), zasync.NeverRetry()],
    ids=["RetryTransient", "Backoff", "NeverRetry"])
def test_retry_policies_provide_iretrypolicy(policy):
    assert verifyObject(interfaces.IRetryPolicy, policy)


def test_queue_provides_iqueue(db):
    with db.transaction() as conn:
        queue = zasync.get_queue(conn)
        assert isinstance(queue, Queue)
        assert verifyObject(interfaces.IQueue, queue)
    assert verifyObject(interfaces.IQueue, Queue("fresh"))


def test_queues_provides_iqueues(db):
    with db.transaction() as conn:
        queues = zasync.get_queues(conn)
        assert isinstance(queues, Queues)
        assert verifyObject(interfaces.IQueues, queues)


def test_dispatcher_record_provides_idispatcherrecord():
    assert verifyObject(interfaces.IDispatcherRecord, DispatcherRecord("d1"))


def test_agent_provides_iagent():
    assert verifyObject(interfaces.IAgent, zasync.Agent(2, name="two"))


def test_process_agent_provides_iagent_without_being_an_agent():
    """Thread and process workers each implement the contract; neither
    inherits the other's internals."""
    from zasync.worker.process import ProcessAgent
    agent = ProcessAgent(2, uri="zeo://127.0.0.1:1")
    assert verifyObject(interfaces.IAgent, agent)
    assert not isinstance(agent, zasync.Agent)
    assert not issubclass(zasync.Agent, ProcessAgent)


def test_dispatcher_provides_idispatcher(db):
    dispatcher = zasync.Dispatcher(db, threads=1)
    assert verifyObject(interfaces.IDispatcher, dispatcher)
    assert dispatcher.running is False


def _job():
    return zasync.Job(unit_jobs.add, 1, 2)


@pytest.mark.parametrize("cls, iface", [
    (events.JobPut, interfaces.IJobPut),
    (events.JobStarted, interfaces.IJobStarted),
    (events.JobSucceeded, interfaces.IJobSucceeded),
    (events.JobFailed, interfaces.IJobFailed),
    (events.JobCancelled, interfaces.IJobCancelled),
])
def test_job_events_provide_their_interface(cls, iface):
    job = _job()
    event = cls(job)
    assert verifyObject(iface, event)
    assert verifyObject(interfaces.IJobEvent, event)
    assert event.job is job


def test_completion_events_are_completion_events():
    job = _job()
    for cls in (events.JobSucceeded, events.JobFailed, events.JobCancelled):
        assert interfaces.IJobCompleted.providedBy(cls(job))
    assert interfaces.IJobFailed.providedBy(events.JobCancelled(job))
    assert not interfaces.IJobFailed.providedBy(events.JobSucceeded(job))
    assert not interfaces.IJobCompleted.providedBy(events.JobPut(job))


def test_job_retried_provides_ijobretried():
    job = _job()
    failure = Failure.from_exception(ValueError("once"))
    event = events.JobRetried(job, failure)
    assert verifyObject(interfaces.IJobRetried, event)
    assert event.failure is failure


@pytest.mark.parametrize("cls, iface", [
    (events.DispatcherStarted, interfaces.IDispatcherStarted),
    (events.DispatcherStopped, interfaces.IDispatcherStopped),
])
def test_dispatcher_events_provide_their_interface(db, cls, iface):
    dispatcher = zasync.Dispatcher(db)
    event = cls(dispatcher)
    assert verifyObject(iface, event)
    assert verifyObject(interfaces.IDispatcherEvent, event)
    assert event.dispatcher is dispatcher


def test_implementations_declare_their_interfaces():
    from zasync.worker.aio import AsyncioAgent
    from zasync.worker.process import ProcessAgent
    from zasync.worker.runner import JobRunner
    # verifyClass catches a method whose signature drifted from the contract
    # even where no instance is made above.
    pairs = [
        (zasync.Job, interfaces.IJob), (Failure, interfaces.IFailure),
        (zasync.RetryTransient, interfaces.IRetryPolicy),
        (zasync.Backoff, interfaces.IRetryPolicy),
        (zasync.NeverRetry, interfaces.IRetryPolicy),
        (Queue, interfaces.IQueue), (Queues, interfaces.IQueues),
        (zasync.Agent, interfaces.IAgent),
        (ProcessAgent, interfaces.IAgent), (AsyncioAgent, interfaces.IAgent),
        (JobRunner, interfaces.IJobRunner),
        (zasync.Dispatcher, interfaces.IDispatcher),
    ]
    for cls, iface in pairs:
        assert iface.implementedBy(cls), cls
        assert verifyClass(iface, cls)


# -- the exception tree ------------------------------------------------------

def _zasync_modules():
    """Every module of the package (but __main__, which runs the command
    line); a module needing an optional dependency that is missing is
    left out."""
    modules = []
    for info in pkgutil.walk_packages(zasync.__path__, "zasync."):
        if info.name.rsplit(".", 1)[-1] == "__main__":
            continue
        try:
            modules.append(importlib.import_module(info.name))
        except ImportError:
            continue
    return modules


def _exception_classes():
    found = []
    for module in _zasync_modules():
        for obj in vars(module).values():
            if (inspect.isclass(obj) and issubclass(obj, BaseException)
                    and obj.__module__ == module.__name__):
                found.append(obj)
    return found


def test_there_are_exceptions_to_check():
    names = {cls.__name__ for cls in _exception_classes()}
    assert {"ZasyncError", "ConfigurationError", "UnstorableError",
            "Cancelled", "TransientZasyncError"} <= names


@pytest.mark.parametrize("cls", _exception_classes(),
                         ids=lambda c: f"{c.__module__}.{c.__name__}")
def test_every_exception_subclasses_zasync_error(cls):
    assert issubclass(cls, zasync.ZasyncError)
    assert issubclass(cls, Exception)
    assert cls.__doc__ and cls.__doc__.strip()


def test_transient_error_is_retried_by_transaction_attempts():
    assert issubclass(interfaces.TransientZasyncError,
                      transaction.interfaces.TransientError)
    tm = transaction.TransactionManager()
    tries = []
    for attempt in tm.attempts(3):
        with attempt:
            tries.append(1)
            if len(tries) < 3:
                raise interfaces.TransientZasyncError("passing")
    assert len(tries) == 3


def test_zasync_error_is_not_transient():
    assert not issubclass(zasync.ZasyncError, transaction.interfaces.TransientError)
    assert not issubclass(zasync.Cancelled, transaction.interfaces.TransientError)


def test_exceptions_also_subclass_the_builtin_users_catch():
    assert issubclass(zasync.ConfigurationError, ValueError)
    assert issubclass(zasync.UnstorableError, zasync.ConfigurationError)
    assert issubclass(zasync.NaiveDatetimeError, zasync.ConfigurationError)
    assert issubclass(zasync.UnknownQueueError, KeyError)
    assert issubclass(zasync.WaitTimeoutError, TimeoutError)
    for cls in (zasync.AlreadyQueuedError, zasync.AlreadyCompletedError,
                zasync.NotPendingError):
        assert issubclass(cls, zasync.JobStateError)


def test_unknown_queue_error_reads_as_written():
    # KeyError would show repr() of the message, quotes and all.
    assert str(zasync.UnknownQueueError("no queue named 'x'")) == "no queue named 'x'"


# -- the package's exports ---------------------------------------------------

def _names_imported_by_init():
    """The public names ``zasync/__init__.py`` imports (a private one, such
    as the finder of the old module paths, is no export)."""
    source = pathlib.Path(zasync.__file__).read_text()
    names = set()
    for node in ast.parse(source).body:
        if isinstance(node, ast.ImportFrom):
            names.update(alias.asname or alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.asname or alias.name for alias in node.names)
    return {name for name in names if not name.startswith("_")}


def test_all_names_exactly_what_init_imports():
    assert len(zasync.__all__) == len(set(zasync.__all__)), "duplicates in __all__"
    assert set(zasync.__all__) == _names_imported_by_init()


def test_every_name_in_all_resolves():
    for name in zasync.__all__:
        assert getattr(zasync, name, None) is not None, name


def test_no_public_name_outside_all():
    public = {name for name, value in vars(zasync).items()
              if not name.startswith("_") and not inspect.ismodule(value)}
    assert public == set(zasync.__all__)


def test_star_import_gives_all():
    namespace = {}
    exec("from zasync import *", namespace)
    namespace.pop("__builtins__")
    assert set(namespace) == set(zasync.__all__)


def test_statuses_are_in_lifecycle_order():
    assert zasync.STATUSES == (zasync.NEW, zasync.PENDING, zasync.ASSIGNED,
                               zasync.ACTIVE, zasync.CALLBACKS, zasync.COMPLETED)
    assert len(set(zasync.STATUSES)) == 6
