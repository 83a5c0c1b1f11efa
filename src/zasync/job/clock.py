"""Time as zasync stores it: aware UTC datetimes, and integer microseconds
since the epoch where a sortable key is needed."""

import datetime
import time

from zasync.interfaces import ConfigurationError, NaiveDatetimeError

UTC = datetime.timezone.utc
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=UTC)


def now():
    """The current time, an aware UTC datetime."""
    return datetime.datetime.now(UTC)


def now_micros():
    """The current time as integer microseconds since the epoch: what
    ``to_micros(now())`` gives (both read the system clock, rounding down),
    at a seventh of its cost, for a put that stores only the number."""
    return time.time_ns() // 1000


def to_micros(when):
    """An aware datetime as integer microseconds since the epoch."""
    delta = when - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(micros):
    """Integer microseconds since the epoch as an aware UTC datetime."""
    return _EPOCH + datetime.timedelta(microseconds=micros)


def aware(when, name):
    """Check that `when` is an aware datetime and return it in UTC."""
    if not isinstance(when, datetime.datetime):
        raise ConfigurationError(
            f"{name}={when!r}: expected a timezone-aware datetime.datetime")
    if when.tzinfo is None or when.tzinfo.utcoffset(when) is None:
        raise NaiveDatetimeError(
            f"{name}={when!r} has no timezone: give an aware datetime, "
            f"e.g. datetime.datetime.now(datetime.timezone.utc)")
    return when.astimezone(UTC)


def duration(value, name, allow_none=True):
    """Check that `value` is a non-negative timedelta (or None)."""
    if value is None and allow_none:
        return None
    if not isinstance(value, datetime.timedelta):
        raise ConfigurationError(
            f"{name}={value!r}: expected a datetime.timedelta")
    if value < datetime.timedelta(0):
        raise ConfigurationError(
            f"{name}={value!r} is negative: expected a timedelta of zero or more")
    return value
