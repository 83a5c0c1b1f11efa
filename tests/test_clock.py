"""Time as zasync stores it: aware UTC datetimes, integer microseconds."""

import datetime

import pytest

import zasync
from zasync.job import clock

UTC = datetime.timezone.utc


def test_now_is_aware_utc():
    before = datetime.datetime.now(UTC)
    now = clock.now()
    after = datetime.datetime.now(UTC)
    assert now.tzinfo is not None and now.utcoffset() == datetime.timedelta(0)
    assert before <= now <= after


def test_micros_round_trip():
    when = datetime.datetime(2026, 3, 4, 5, 6, 7, 891011, tzinfo=UTC)
    micros = clock.to_micros(when)
    assert isinstance(micros, int)
    assert clock.from_micros(micros) == when
    assert clock.from_micros(micros).tzinfo is not None


def test_micros_of_the_epoch_and_before():
    assert clock.to_micros(datetime.datetime(1970, 1, 1, tzinfo=UTC)) == 0
    assert clock.to_micros(datetime.datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC)) == 1_000_000
    before = datetime.datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    assert clock.to_micros(before) == -1
    assert clock.from_micros(-1) == before


def test_micros_sort_as_the_times_do():
    base = datetime.datetime(2026, 1, 1, tzinfo=UTC)
    times = [base + datetime.timedelta(microseconds=n) for n in (0, 1, 999_999, 10**6)]
    times.append(base + datetime.timedelta(days=400))
    micros = [clock.to_micros(t) for t in times]
    assert micros == sorted(micros) and len(set(micros)) == len(micros)


def test_micros_ignore_the_timezone_of_the_same_instant():
    paris = datetime.timezone(datetime.timedelta(hours=2))
    here = datetime.datetime(2026, 6, 1, 14, 0, tzinfo=paris)
    assert clock.to_micros(here) == clock.to_micros(here.astimezone(UTC))


def test_aware_converts_to_utc():
    tokyo = datetime.timezone(datetime.timedelta(hours=9))
    given = datetime.datetime(2026, 6, 1, 9, 0, tzinfo=tokyo)
    converted = clock.aware(given, "begin_after")
    assert converted == given
    assert converted.utcoffset() == datetime.timedelta(0)
    assert converted.hour == 0


def test_naive_datetime_is_refused():
    naive = datetime.datetime(2026, 6, 1, 9, 0)
    with pytest.raises(zasync.NaiveDatetimeError) as info:
        clock.aware(naive, "begin_after")
    message = str(info.value)
    assert "begin_after=" in message and "2026" in message
    assert "timezone" in message
    assert isinstance(info.value, zasync.ConfigurationError)


def test_a_tzinfo_without_offset_counts_as_naive():
    class NoOffset(datetime.tzinfo):
        def utcoffset(self, dt):
            return None

    with pytest.raises(zasync.NaiveDatetimeError):
        clock.aware(datetime.datetime(2026, 1, 1, tzinfo=NoOffset()), "when")


@pytest.mark.parametrize("bad", [
    datetime.date(2026, 1, 1), "2026-01-01T00:00:00Z", 1_700_000_000, None])
def test_non_datetimes_are_refused(bad):
    with pytest.raises(zasync.ConfigurationError, match="begin_after=") as info:
        clock.aware(bad, "begin_after")
    assert not isinstance(info.value, zasync.NaiveDatetimeError)


def test_duration_accepts_zero_and_positive():
    assert clock.duration(datetime.timedelta(0), "begin_by") == datetime.timedelta(0)
    assert clock.duration(datetime.timedelta(minutes=5), "begin_by") == datetime.timedelta(minutes=5)


def test_duration_none():
    assert clock.duration(None, "begin_by") is None
    with pytest.raises(zasync.ConfigurationError, match="limit=None"):
        clock.duration(None, "limit", allow_none=False)


def test_negative_duration_is_refused():
    with pytest.raises(zasync.ConfigurationError, match="negative") as info:
        clock.duration(datetime.timedelta(seconds=-1), "begin_by")
    assert "begin_by=" in str(info.value)
    with pytest.raises(zasync.ConfigurationError):
        clock.duration(-datetime.timedelta(microseconds=1), "begin_by")


@pytest.mark.parametrize("bad", [5, 2.5, "5m", datetime.datetime.now(UTC)])
def test_non_timedeltas_are_refused(bad):
    with pytest.raises(zasync.ConfigurationError, match="begin_by="):
        clock.duration(bad, "begin_by")
