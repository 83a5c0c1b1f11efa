"""The checks that a job's callable and values can be stored and found
again by a worker."""

import datetime
import functools
import math
import os.path
import threading

import pytest

import zasync
from zasync.job.storable import check_callable, check_value, describe

import unit_jobs


class _WithClassmethod:
    @classmethod
    def build(cls):
        return cls()

    @staticmethod
    def helper():
        return 1


# -- callables that are accepted ------------------------------------------------

@pytest.mark.parametrize("obj", [
    unit_jobs.add, len, math.sqrt, os.path.join, unit_jobs.Plain,
    datetime.datetime, _WithClassmethod.build, _WithClassmethod.helper,
    datetime.datetime.now, zasync.Job],
    ids=lambda obj: getattr(obj, "__qualname__", repr(obj)))
def test_findable_callables_are_accepted(obj):
    assert check_callable(obj) is None


def test_persistent_methods_and_callables_are_accepted():
    counter = unit_jobs.Counter()
    check_callable(counter.increment)
    check_callable(unit_jobs.Doubler())


# -- callables that are refused ---------------------------------------------------

def _refused(obj):
    with pytest.raises(zasync.UnstorableError) as info:
        check_callable(obj)
    return str(info.value)


def test_lambda_is_refused():
    assert "lambda" in _refused(lambda x: x)


def test_nested_function_is_refused():
    def local_helper():
        pass
    message = _refused(local_helper)
    assert "local_helper" in message and "module level" in message


def test_nested_class_is_refused():
    class LocalThing:
        pass
    assert "LocalThing" in _refused(LocalThing)


def test_method_of_a_plain_object_is_refused():
    message = _refused(unit_jobs.Plain().method)
    assert "unit_jobs.Plain.method" in message
    assert "non-persistent" in message


def test_method_of_a_builtin_object_is_refused():
    assert "append" in _refused([].append)
    assert "upper" in _refused("text".upper)


def test_partial_is_refused():
    message = _refused(functools.partial(unit_jobs.add, 1))
    assert "partial" in message and "add" in message


def test_callable_instance_of_a_plain_class_is_refused():
    class_ = type("Callable", (), {"__call__": lambda self: 1})
    assert "Callable" in _refused(class_())


def test_function_that_cannot_be_imported_again_is_refused():
    # A decorator that returns a new function under the old name: the
    # module attribute is the wrapper, not the wrapped function.
    def shadowed():
        pass
    shadowed.__qualname__ = "add"
    shadowed.__module__ = "unit_jobs"
    assert "cannot be imported again as unit_jobs.add" in _refused(shadowed)


def test_function_of_a_missing_module_is_refused():
    def orphan():
        pass
    orphan.__qualname__ = "orphan"
    orphan.__module__ = "no_such_module_anywhere"
    assert "no_such_module_anywhere.orphan" in _refused(orphan)


def test_not_callable_is_refused():
    assert "not callable" in _refused(42)
    assert "not callable" in _refused("unit_jobs.add")


# -- values ----------------------------------------------------------------------

@pytest.mark.parametrize("value", [
    None, 1, 2.5, "text", b"bytes", (1, "two"), [1, [2]], {"a": {1, 2}},
    # the time of collection is not part of the id: pytest-xdist's workers
    # each collect, and must find the same ids
    pytest.param(datetime.datetime.now(datetime.timezone.utc), id="aware-datetime-now"),
    datetime.timedelta(3), zasync.RetryTransient()], ids=repr)
def test_plain_values_are_accepted(value):
    assert check_value(value, "the value") is None


def test_persistent_values_are_references_and_not_looked_into():
    box = unit_jobs.Counter()
    box.lock = threading.Lock()   # would not pickle, but a box is stored by reference
    check_value(box, "the box")
    check_value({"nested": [box]}, "the mapping")


def test_unpicklable_values_are_refused_with_what_they_are():
    with pytest.raises(zasync.UnstorableError) as info:
        check_value({"lock": threading.Lock()}, "argument 'opts' of f:")
    message = str(info.value)
    assert message.startswith("cannot store argument 'opts' of f:")
    assert "lock" in message


def test_local_classes_as_values_are_refused():
    class Local:
        pass
    with pytest.raises(zasync.UnstorableError, match="Local"):
        check_value(Local(), "the value")


def test_a_long_value_is_cut_in_the_message():
    with pytest.raises(zasync.UnstorableError) as info:
        check_value([threading.Lock()] + list(range(10_000)), "the list")
    assert len(str(info.value)) < 500


# -- describe ----------------------------------------------------------------------

def test_describe():
    assert describe(unit_jobs.add) == "unit_jobs.add"
    assert describe(len) == "len"
    assert describe(unit_jobs.Counter().increment) == "unit_jobs.Counter.increment"
    assert describe(unit_jobs.Doubler()) == "unit_jobs.Doubler instance"
    assert describe(unit_jobs.Plain) == "unit_jobs.Plain"
    # a classmethod is described by its class, not by the class's type
    assert describe(_WithClassmethod.build) == "test_storable._WithClassmethod.build"
