"""Retry policies: which errors are retried, after which delay, how often."""

import datetime
import pickle

import pytest
import transaction.interfaces
from ZEO.Exceptions import ClientDisconnected
from ZODB.POSException import ConflictError, ReadConflictError
from zope.interface.verify import verifyObject

import zasync
from zasync.interfaces import IRetryPolicy, TransientZasyncError

ZERO = datetime.timedelta(0)


def seconds(value):
    return datetime.timedelta(seconds=value)


def decisions(policy, error, attempts=range(1, 11)):
    return [policy.retry_after(None, error, attempt) for attempt in attempts]


# -- RetryTransient -----------------------------------------------------------

def test_retry_transient_provides_the_interface():
    assert verifyObject(IRetryPolicy, zasync.RetryTransient())


def test_conflict_is_retried_at_once_up_to_five_attempts_in_all():
    policy = zasync.RetryTransient()
    assert decisions(policy, ConflictError()) == [ZERO] * 4 + [None] * 6


@pytest.mark.parametrize("error", [
    ReadConflictError(), TransientZasyncError("passing"),
    transaction.interfaces.TransientError()])
def test_other_transient_errors_are_retried_at_once(error):
    assert decisions(zasync.RetryTransient(), error, [1, 4, 5]) == [ZERO, ZERO, None]


@pytest.mark.parametrize("error", [
    ValueError("bad"), KeyError("k"), zasync.ZasyncError("no"),
    zasync.Cancelled("stop"), RuntimeError()])
def test_other_errors_are_not_retried(error):
    assert zasync.RetryTransient().retry_after(None, error, 1) is None


def test_disconnection_gets_a_growing_positive_delay():
    policy = zasync.RetryTransient()
    delays = decisions(policy, ClientDisconnected(), range(1, 5))
    assert all(delay > ZERO for delay in delays)
    assert delays == sorted(delays) and len(set(delays)) == 4
    assert delays == [seconds(1), seconds(2), seconds(4), seconds(8)]
    assert policy.retry_after(None, ClientDisconnected(), 5) is None


def test_disconnection_delay_is_capped():
    policy = zasync.RetryTransient(attempts=20, disconnect_delay=3, max_delay=10)
    delays = decisions(policy, ClientDisconnected(), range(1, 8))
    assert delays == [seconds(3), seconds(6)] + [seconds(10)] * 5


def test_attempts_is_configurable():
    policy = zasync.RetryTransient(attempts=2)
    assert decisions(policy, ConflictError(), [1, 2, 3]) == [ZERO, None, None]
    assert zasync.RetryTransient(attempts=1).retry_after(None, ConflictError(), 1) is None


def test_interrupted_jobs_are_retried_a_few_times():
    policy = zasync.RetryTransient()
    assert [policy.interrupted(None, n) for n in (1, 2, 3, 4)] == [ZERO, ZERO, None, None]
    policy = zasync.RetryTransient(interrupted_attempts=1)
    assert policy.interrupted(None, 1) is None


def test_timedelta_delays_are_accepted():
    policy = zasync.RetryTransient(disconnect_delay=seconds(0.5), max_delay=seconds(2))
    assert decisions(policy, ClientDisconnected(), [1, 2, 3, 4, 5]) == [
        seconds(0.5), seconds(1), seconds(2), seconds(2), None]


# -- Backoff ------------------------------------------------------------------

def test_backoff_provides_the_interface():
    assert verifyObject(IRetryPolicy, zasync.Backoff())


def test_backoff_delays_grow_exponentially_and_are_capped():
    policy = zasync.Backoff(ValueError, attempts=8, initial=2, factor=3, max_delay=100)
    delays = decisions(policy, ValueError("again"), range(1, 9))
    # initial * factor ** (n - 1): 2, 6, 18, 54, then 162 and more capped at 100
    assert delays == [seconds(2), seconds(6), seconds(18), seconds(54),
                      seconds(100), seconds(100), seconds(100), None]


def test_backoff_defaults():
    policy = zasync.Backoff()
    assert decisions(policy, RuntimeError(), range(1, 6)) == [
        seconds(1), seconds(2), seconds(4), seconds(8), None]


def test_backoff_retries_subclasses_of_the_chosen_types():
    policy = zasync.Backoff((KeyError, OSError), initial=1)
    assert policy.retry_after(None, ConnectionResetError(), 1) == seconds(1)
    assert policy.retry_after(None, KeyError("k"), 2) == seconds(2)


def test_backoff_does_not_retry_other_types():
    policy = zasync.Backoff(KeyError)
    assert policy.retry_after(None, ValueError("other"), 1) is None
    assert policy.retry_after(None, TypeError(), 1) is None


def test_backoff_still_retries_transient_errors_at_once():
    policy = zasync.Backoff(KeyError, attempts=3)
    assert decisions(policy, ConflictError(), [1, 2, 3]) == [ZERO, ZERO, None]
    # even when the chosen types would match it
    assert zasync.Backoff(Exception).retry_after(None, ConflictError(), 1) == ZERO
    assert zasync.Backoff(KeyError).retry_after(None, ClientDisconnected(), 1) > ZERO


def test_backoff_factor_one_is_a_fixed_delay():
    policy = zasync.Backoff(ValueError, initial=seconds(5), factor=1)
    assert decisions(policy, ValueError(), [1, 2, 3, 4]) == [seconds(5)] * 4


# -- NeverRetry ---------------------------------------------------------------

def test_never_retry():
    policy = zasync.NeverRetry()
    assert verifyObject(IRetryPolicy, policy)
    assert policy.retry_after(None, ConflictError(), 1) is None
    assert policy.retry_after(None, ClientDisconnected(), 1) is None
    assert policy.interrupted(None, 1) is None


# -- bad arguments --------------------------------------------------------------

@pytest.mark.parametrize("kwargs, named", [
    ({"attempts": 0}, "attempts=0"),
    ({"attempts": -1}, "attempts=-1"),
    ({"attempts": 2.5}, "attempts=2.5"),
    ({"attempts": "3"}, "attempts='3'"),
    ({"attempts": True}, "attempts=True"),
    ({"disconnect_delay": -1}, "disconnect_delay=-1"),
    ({"disconnect_delay": "soon"}, "disconnect_delay='soon'"),
    ({"max_delay": -0.5}, "max_delay=-0.5"),
    ({"max_delay": seconds(-1)}, "max_delay="),
    ({"interrupted_attempts": 0}, "interrupted_attempts=0"),
    ({"interrupted_attempts": None}, "interrupted_attempts=None"),
])
def test_retry_transient_bad_arguments(kwargs, named):
    with pytest.raises(zasync.ConfigurationError) as info:
        zasync.RetryTransient(**kwargs)
    assert named in str(info.value)


@pytest.mark.parametrize("kwargs, named", [
    ({"exceptions": int}, "int"),
    ({"exceptions": (ValueError, "KeyError")}, "'KeyError'"),
    ({"exceptions": ()}, "exceptions=()"),
    ({"exceptions": [ValueError, 3]}, "3"),
    ({"initial": -1}, "initial=-1"),
    ({"initial": "1s"}, "initial='1s'"),
    ({"factor": 0.5}, "factor=0.5"),
    ({"factor": -2}, "factor=-2"),
    ({"factor": None}, "factor=None"),
    ({"attempts": 0}, "attempts=0"),
    ({"max_delay": -1}, "max_delay=-1"),
])
def test_backoff_bad_arguments(kwargs, named):
    with pytest.raises(zasync.ConfigurationError) as info:
        zasync.Backoff(**kwargs)
    assert named in str(info.value)


def test_bad_arguments_are_value_errors():
    with pytest.raises(ValueError):
        zasync.Backoff(factor=0)


# -- storing ------------------------------------------------------------------

@pytest.mark.parametrize("policy", [
    zasync.RetryTransient(attempts=7), zasync.Backoff(KeyError, initial=3),
    zasync.NeverRetry()], ids=repr)
def test_policies_pickle_and_keep_their_decisions(policy):
    copy = pickle.loads(pickle.dumps(policy, protocol=3))
    for error in (ConflictError(), KeyError("k"), ClientDisconnected()):
        assert decisions(copy, error) == decisions(policy, error)
    assert repr(copy) == repr(policy)
