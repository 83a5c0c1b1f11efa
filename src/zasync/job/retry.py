"""Retry policies: what happens to a job whose attempt raised.

Policies are small plain objects stored in the job's state, so a policy
class must be importable wherever workers run.  A positive delay is served
by rescheduling the job (a later `begin_after`), never by sleeping in a
worker thread.
"""

import datetime

from zope.interface import implementer

from zasync.interfaces import ConfigurationError, IRetryPolicy, MissingCodeError

try:  # ZEO is a dependency, but the policy must not need a ZEO client
    from ZEO.Exceptions import ClientDisconnected
except ImportError:  # pragma: no cover
    ClientDisconnected = ()

import transaction.interfaces

ZERO = datetime.timedelta(0)


def _check_attempts(attempts, name="attempts"):
    if not isinstance(attempts, int) or isinstance(attempts, bool) or attempts < 1:
        raise ConfigurationError(
            f"{name}={attempts!r}: expected an int of 1 or more")
    return attempts


def _seconds(value, name):
    if isinstance(value, datetime.timedelta):
        value = value.total_seconds()
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
        raise ConfigurationError(
            f"{name}={value!r}: expected seconds (a number of zero or more) "
            f"or a timedelta")
    return float(value)


@implementer(IRetryPolicy)
class RetryTransient:
    """The default policy: retry what is likely to pass, fail the rest.

    ConflictError and other `transaction.interfaces.TransientError`s are
    retried at once; a ZEO disconnection is retried after a growing delay
    (`disconnect_delay`, doubled each attempt, at most `max_delay`), and so
    is a job whose code the worker lacks (`MissingCodeError`, from
    `missing_code_delay`: 10, 20, 40, 60 s by default), which a later deploy,
    or another worker, may bring.  After `attempts` attempts in all, or at
    once for any other exception, the job fails.  A job whose worker died is
    retried `interrupted_attempts` times.
    """

    missing_code_delay = 10.0     # (for policies stored before it existed)

    def __init__(self, attempts=5, disconnect_delay=1.0, max_delay=60.0,
                 interrupted_attempts=3, missing_code_delay=10.0):
        self.attempts = _check_attempts(attempts)
        self.disconnect_delay = _seconds(disconnect_delay, "disconnect_delay")
        self.missing_code_delay = _seconds(missing_code_delay, "missing_code_delay")
        self.max_delay = _seconds(max_delay, "max_delay")
        self.interrupted_attempts = _check_attempts(
            interrupted_attempts, "interrupted_attempts")

    def _backoff(self, base, attempt):
        return datetime.timedelta(
            seconds=min(base * 2 ** (attempt - 1), self.max_delay))

    def retry_after(self, job, error, attempt):
        """See `IRetryPolicy`."""
        if attempt >= self.attempts:
            return None
        if ClientDisconnected and isinstance(error, ClientDisconnected):
            return self._backoff(self.disconnect_delay, attempt)
        if isinstance(error, MissingCodeError):
            return self._backoff(self.missing_code_delay, attempt)
        if isinstance(error, transaction.interfaces.TransientError):
            return ZERO
        return None

    def interrupted(self, job, attempt):
        """See `IRetryPolicy`."""
        return ZERO if attempt < self.interrupted_attempts else None

    def __repr__(self):
        return f"{type(self).__name__}(attempts={self.attempts})"


@implementer(IRetryPolicy)
class Backoff(RetryTransient):
    """Retry the chosen exception types with exponential delay.

    Attempt n (the first is 1) that raised one of `exceptions` is followed
    by attempt n + 1 after `initial * factor ** (n - 1)` seconds, at most
    `max_delay`, until `attempts` attempts in all.  Transient errors and
    missing code are retried as by `RetryTransient`.
    """

    def __init__(self, exceptions=(Exception,), attempts=5, initial=1.0,
                 factor=2.0, max_delay=3600.0, **kwargs):
        if isinstance(exceptions, type):
            exceptions = (exceptions,)
        exceptions = tuple(exceptions)
        if not exceptions or not all(
                isinstance(e, type) and issubclass(e, BaseException)
                for e in exceptions):
            raise ConfigurationError(
                f"exceptions={exceptions!r}: expected exception classes")
        super().__init__(attempts=attempts, max_delay=max_delay, **kwargs)
        self.exceptions = exceptions
        self.initial = _seconds(initial, "initial")
        factor = _seconds(factor, "factor")
        if factor < 1:
            raise ConfigurationError(f"factor={factor!r}: expected 1 or more")
        self.factor = factor

    def retry_after(self, job, error, attempt):
        """See `IRetryPolicy`."""
        if attempt >= self.attempts:
            return None
        if isinstance(error, self.exceptions) and not isinstance(
                error, (transaction.interfaces.TransientError, MissingCodeError)):
            return datetime.timedelta(seconds=min(
                self.initial * self.factor ** (attempt - 1), self.max_delay))
        return super().retry_after(job, error, attempt)


@implementer(IRetryPolicy)
class NeverRetry:
    """Fail at the first error, even a transient one or an interruption."""

    def retry_after(self, job, error, attempt):
        """See `IRetryPolicy`."""
        return None

    def interrupted(self, job, attempt):
        """See `IRetryPolicy`."""
        return None

    def __repr__(self):
        return "NeverRetry()"
