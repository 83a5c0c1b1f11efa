"""Failures: the text that is kept of an exception, and `check`."""

import datetime
import pickle

import pytest
from ZODB.POSException import ConflictError
from zope.interface.verify import verifyObject

import zasync
from zasync.job.failure import Failure
from zasync.interfaces import IFailure

import unit_jobs


def _raised(error):
    try:
        raise error
    except BaseException as caught:
        return Failure.from_exception(caught)


def test_provides_ifailure():
    assert verifyObject(IFailure, _raised(ValueError("x")))


def test_builtin_exception():
    failure = _raised(ValueError("bad value"))
    assert failure.type == "ValueError"        # builtins are not prefixed
    assert failure.type_name == "ValueError"
    assert failure.message == "bad value"
    assert str(failure) == "ValueError: bad value"
    assert "bad value" in repr(failure)


def test_exception_outside_builtins_has_a_dotted_type():
    failure = _raised(unit_jobs.DeepTrouble("deep"))
    assert failure.type == "unit_jobs.DeepTrouble"
    assert failure.type_name == "DeepTrouble"
    assert str(failure) == "DeepTrouble: deep"


def test_zasync_exception_type():
    failure = _raised(zasync.Cancelled("stop"))
    assert failure.type == "zasync.interfaces.Cancelled"
    assert failure.type_name == "Cancelled"


def test_nested_class_uses_its_qualified_name():
    class Inner(Exception):
        pass
    failure = _raised(Inner("x"))
    assert failure.type.endswith("test_nested_class_uses_its_qualified_name.<locals>.Inner")
    assert failure.type_name == "Inner"


def test_empty_message_shows_the_type_only():
    failure = _raised(KeyboardInterrupt())
    assert failure.message == ""
    assert str(failure) == "KeyboardInterrupt"


def test_whole_traceback_is_text():
    try:
        unit_jobs.fail_deep("from deep down")
    except ValueError as error:
        failure = Failure.from_exception(error)
    lines = failure.traceback.splitlines()
    assert lines[0] == "Traceback (most recent call last):"
    assert lines[-1] == "unit_jobs.DeepTrouble: from deep down"
    assert "in test_whole_traceback_is_text" in failure.traceback
    assert "in fail_deep" in failure.traceback
    assert "in _fail_inner" in failure.traceback


def test_chained_exceptions_are_in_the_traceback():
    try:
        try:
            raise KeyError("first")
        except KeyError as first:
            raise RuntimeError("second") from first
    except RuntimeError as error:
        failure = Failure.from_exception(error)
    assert "KeyError: 'first'" in failure.traceback
    assert "direct cause" in failure.traceback
    assert failure.message == "second"


def test_exception_never_raised_has_a_short_traceback():
    failure = Failure.from_exception(ValueError("made, not raised"))
    assert failure.traceback == "ValueError: made, not raised\n"


def test_time_is_aware_utc():
    before = datetime.datetime.now(datetime.timezone.utc)
    failure = _raised(ValueError("x"))
    after = datetime.datetime.now(datetime.timezone.utc)
    assert failure.time.utcoffset() == datetime.timedelta(0)
    assert before <= failure.time <= after


def test_check_by_class():
    failure = _raised(unit_jobs.DeepTrouble("x"))
    assert failure.check(unit_jobs.DeepTrouble) is unit_jobs.DeepTrouble
    assert failure.check(ValueError) is ValueError       # a base class
    assert failure.check(Exception) is Exception
    assert failure.check(KeyError) is None
    assert failure.check(KeyError, TypeError) is None
    assert failure.check() is None


def test_check_returns_the_first_match():
    failure = _raised(unit_jobs.DeepTrouble("x"))
    assert failure.check(KeyError, ValueError, Exception) is ValueError
    assert failure.check(Exception, ValueError) is Exception


def test_check_by_dotted_name():
    failure = _raised(unit_jobs.DeepTrouble("x"))
    assert failure.check("unit_jobs.DeepTrouble") == "unit_jobs.DeepTrouble"
    assert failure.check("ValueError") == "ValueError"
    assert failure.check("builtins.ValueError") == "builtins.ValueError"
    assert failure.check("KeyError", "builtins.KeyError") is None
    assert failure.check("DeepTrouble") is None   # a bare name is a builtin's


def test_check_of_a_transient_error():
    failure = _raised(ConflictError("conflict"))
    import transaction.interfaces
    assert failure.check(transaction.interfaces.TransientError)
    assert failure.check(zasync.ZasyncError) is None


def test_check_needs_no_import_after_unpickling():
    failure = pickle.loads(pickle.dumps(_raised(unit_jobs.DeepTrouble("x"))))
    assert failure.check("unit_jobs.DeepTrouble")
    assert failure.mro[0] == "unit_jobs.DeepTrouble"
    assert "object" not in failure.mro        # only exception classes


def test_pickles_and_compares_equal():
    failure = _raised(ValueError("x"))
    copy = pickle.loads(pickle.dumps(failure))
    assert copy == failure
    assert copy.type == failure.type and copy.traceback == failure.traceback
    assert copy.time == failure.time
    assert copy != _raised(ValueError("y"))
    assert failure != "ValueError: x"


def test_is_not_hashable():
    # equal failures compare by value; a hash by identity would lie
    with pytest.raises(TypeError):
        hash(_raised(ValueError("x")))


def test_built_from_parts():
    failure = Failure("mymod.Oops", "oops", "Traceback ...\nmymod.Oops: oops\n")
    assert failure.mro == ("mymod.Oops",)
    assert failure.check("mymod.Oops") == "mymod.Oops"
    assert failure.type_name == "Oops"
    assert failure.time.tzinfo is not None
