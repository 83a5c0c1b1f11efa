"""Checks that a job's callable and arguments can be stored in the database
and found again by a worker, so that a mistake is reported by `Job()` with
the culprit's name instead of by a pickling error at commit."""

import importlib
import inspect
import io
import pickle
import sys
import types

import persistent
from ZODB.broken import Broken

from zasync.interfaces import UnstorableError


def _lookup(module_name, qualname):
    # (most often imported already: sys.modules spares import_module's work)
    module = sys.modules.get(module_name) or importlib.import_module(module_name)
    found = module
    for part in qualname.split("."):
        found = getattr(found, part)
    return found


def _findable_by_name(obj):
    """Whether pickle can store `obj` by its module and qualified name."""
    module_name = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if not module_name or not qualname or "<" in qualname:
        return False
    try:
        return _lookup(module_name, qualname) is obj
    except Exception:
        return False


def reference(obj):
    """'module:qualname' of a module-level function or class or a builtin,
    which pickle would store by that name; None for any other callable
    (methods, persistent objects, callable instances, lambdas, nested
    functions) and for one not found again under its name."""
    if isinstance(obj, persistent.Persistent) or not isinstance(
            obj, (types.FunctionType, types.BuiltinFunctionType, type)):
        return None
    self = getattr(obj, "__self__", None)
    if self is not None and not inspect.ismodule(self):
        return None     # a method of a builtin object
    if not _findable_by_name(obj):
        return None
    return f"{obj.__module__}:{obj.__qualname__}"


def describe(obj):
    """A short, dotted description of a callable, for messages and display."""
    self = getattr(obj, "__self__", None)
    func = getattr(obj, "__func__", None)
    if self is not None and func is not None:
        owner = self if isinstance(self, type) else type(self)  # a classmethod's class
        return f"{owner.__module__}.{owner.__qualname__}.{func.__name__}"
    qualname = getattr(obj, "__qualname__", None)
    if qualname:
        module = getattr(obj, "__module__", None)
        return f"{module}.{qualname}" if module and module != "builtins" else qualname
    return f"{type(obj).__module__}.{type(obj).__qualname__} instance"


def unimportable(job):
    """Why this process cannot import the job's callable, or None if it can.

    ZODB loads a global it cannot import as a `ZODB.broken.Broken`
    placeholder class (and an object of such a class as a broken instance),
    so that the job itself loads; writing the job would then fail, as the
    placeholder cannot be pickled by name again.
    """
    try:
        found = job.callable
    except Exception as error:      # e.g. a method of an object it cannot load
        return f"{type(error).__name__}: {error}"
    if not (isinstance(found, Broken)
            or (isinstance(found, type) and issubclass(found, Broken))):
        return None
    module = getattr(found, "__module__", "?")
    try:
        importlib.import_module(module)
    except Exception as error:
        return f"{type(error).__name__}: {error}"
    return f"module {module} has no {getattr(found, '__name__', '?')}"


def check_callable(obj):
    """Raise `UnstorableError` unless a worker can find `obj` again.

    Accepted: module-level functions and classes, builtins, methods of
    persistent objects, and persistent objects that are callable.  Lambdas,
    nested functions, methods of plain objects and other callables that pickle
    either cannot store or would store as a copy are refused.
    """
    if not callable(obj):
        raise UnstorableError(f"{obj!r} is not callable")
    if isinstance(obj, persistent.Persistent):
        return
    if isinstance(obj, (types.MethodType, types.BuiltinMethodType)) and not (
            inspect.ismodule(getattr(obj, "__self__", None))):
        owner = obj.__self__
        if isinstance(owner, persistent.Persistent):
            return
        if isinstance(owner, type) and _findable_by_name(owner):
            return  # a classmethod: stored by its class's name
        raise UnstorableError(
            f"cannot store the callable {describe(obj)} ({obj!r}): it is a "
            f"method of a non-persistent {type(owner).__qualname__} object; "
            f"use a method of a persistent object or a module-level function")
    if isinstance(obj, (types.FunctionType, types.BuiltinFunctionType, type)):
        if getattr(obj, "__name__", "") == "<lambda>":
            raise UnstorableError(
                f"cannot store the callable {obj!r}: a lambda cannot be found "
                f"again by a worker; use a module-level function")
        if "<locals>" in (getattr(obj, "__qualname__", "") or ""):
            raise UnstorableError(
                f"cannot store the callable {describe(obj)}: it is defined inside "
                f"a function, so a worker cannot import it; define it at "
                f"module level")
        if _findable_by_name(obj):
            return
        raise UnstorableError(
            f"cannot store the callable {describe(obj)}: it cannot be imported "
            f"again as {getattr(obj, '__module__', '?')}."
            f"{getattr(obj, '__qualname__', '?')}")
    raise UnstorableError(
        f"cannot store the callable {obj!r} ({type(obj).__qualname__}): expected "
        f"a module-level function or class, a builtin, a method of a persistent "
        f"object or a persistent callable object")


class _TrialPickler(pickle.Pickler):
    """Pickles a value as ZODB would, stopping at persistent objects."""

    def persistent_id(self, obj):
        if isinstance(obj, persistent.Persistent) and not isinstance(obj, type):
            return "persistent"
        return None


def check_value(value, what):
    """Raise `UnstorableError` unless `value` can be pickled into a job.

    Persistent objects are stored by reference and are not looked into.
    """
    if isinstance(value, (persistent.Persistent, type(None), bool, int, float, str, bytes)):
        return
    try:
        _TrialPickler(io.BytesIO(), protocol=3).dump(value)
    except Exception as error:
        raise UnstorableError(
            f"cannot store {what} {value!r:.200}: {type(error).__name__}: {error}"
        ) from None


class _PersistentFinder(pickle.Pickler):
    """Pickles a value only to learn whether it holds persistent objects."""

    found = False

    def persistent_id(self, obj):
        if isinstance(obj, persistent.Persistent) and not isinstance(obj, type):
            self.found = True
            return "persistent"
        return None


_PLAIN = (type(None), bool, int, float, str, bytes)


def holds_persistent(value):
    """Whether storing `value` stores references to persistent objects."""
    if isinstance(value, _PLAIN):
        return False
    if isinstance(value, persistent.Persistent):
        return True
    finder = _PersistentFinder(io.BytesIO(), protocol=3)
    try:
        finder.dump(value)
    except Exception:
        return True
    return finder.found
