"""What a job calls and what it returned: records of their own, unless small.

A job's record is written at every change of its status (put, claim,
start, each attempt, completion, dismissal).  Were its callable and
arguments kept in it, each of those writes would store them again -- three
copies of a 50 MB argument for one job -- and a process that cannot import
the callable could not write the job at all: ZODB loads a missing class as
a placeholder that cannot be pickled again by name, so claiming, cancelling
or removing the job would fail.  So the callable and its arguments live in
a `Call`, written once when the job is made and only read after, and a
result that is more than a small scalar in a `Result`, written once when
the job completes.  The job keeps references to them, which writing the job
stores without loading them.

(An earlier design stored the callable's pickle as bytes in the job, to be
unpickled by the worker; it was rejected: persistent arguments must stay
references that ZODB resolves, and the pickle would still be rewritten.)

A small call, though, costs nothing to rewrite, and a record of its own
was a third of what a put wrote and of its CPU time (issue 19).  A
callable found by its name (a module-level function or class, a builtin)
with arguments of plain values under `CALL_INLINE_LIMIT` bytes (`small`)
stays in the job's record: the callable as its name, a string, resolved
when the job runs (`resolve`), so that a process without its code still
writes the job, and the arguments as they are, which cannot be a class
this process lacks.  Jobs stored before keep their `Call`, or (older
still) their callable itself in their state.
"""

import importlib
import os
import reprlib

import persistent
from ZODB.broken import Broken, find_global

from zasync.interfaces import MissingCodeError

#: Results of these types, and str and bytes up to `INLINE_LIMIT`, stay in
#: the job's record: a record of their own would cost more than they do.
_INLINE_TYPES = (type(None), bool, int, float)
INLINE_LIMIT = 256


class Call(persistent.Persistent):
    """A job's callable and its arguments, written once when it is made."""

    def __init__(self, callable, args, kwargs):
        self.callable = callable
        self.args = tuple(args)
        self.kwargs = dict(kwargs)


#: Bytes (about) of plain values a call kept in the job's record may hold.
CALL_INLINE_LIMIT = 256
_SCALARS = (type(None), bool, int, float)


def _room_left(value, room, depth):
    """`room` less what `value` takes in a pickle, or -1 unless it is a
    plain value (None, bool, int, float, str, bytes, and tuples, lists and
    dicts of them, two deep): exact types, as a subclass is pickled by a
    class name that another process may lack."""
    kind = value.__class__
    if kind is str or kind is bytes:
        return room - len(value) - 4
    if kind in _SCALARS:
        return room - (2 + value.bit_length() // 8 if kind is int else 9)
    if depth >= 2:
        return -1
    if kind is tuple or kind is list:
        room -= 2
        for item in value:
            room = _room_left(item, room, depth + 1)
            if room < 0:
                return -1
        return room
    if kind is dict:
        room -= 2
        for key, item in value.items():
            room = _room_left(item, _room_left(key, room, depth + 1), depth + 1)
            if room < 0:
                return -1
        return room
    return -1


def small(args, kwargs):
    """Whether these arguments are plain values small enough to keep in
    the job's record (see the module's docstring)."""
    room = CALL_INLINE_LIMIT
    for arg in args:
        room = _room_left(arg, room, 1)
        if room < 0:
            return False
    for name, arg in kwargs.items():
        room = _room_left(arg, room - len(name) - 4, 1)
        if room < 0:
            return False
    return True


def resolve(reference):
    """What a 'module:qualname' reference names, as loading a pickle that
    names it gives it: ZODB's placeholder class (`ZODB.broken.Broken`) if
    this process cannot import it."""
    module, _, qualname = reference.partition(":")
    head, *rest = qualname.split(".")
    found = find_global(module, head)
    try:
        for name in rest:       # (a nested class's own, or a staticmethod)
            found = getattr(found, name)
    except AttributeError:
        return find_global(module, qualname)    # a placeholder named in full
    return found


def reference_name(reference):
    """The callable's name as `zasync.job.storable.describe` gives it."""
    module, _, qualname = reference.partition(":")
    return qualname if module == "builtins" else f"{module}.{qualname}"


#: Characters kept of a job's arguments in its own record (`summarize`).
SUMMARY_LIMIT = 200


class BoundedRepr(reprlib.Repr):
    """reprlib bounded to `text` characters a string (or other value) and
    `items` items a container, `levels` deep; bytes are cut *before* their
    repr is made (reprlib would repr 50 MB of bytes whole, then cut the
    text).  Shared by the job's argument summary, the search words and the
    web view, each with its own bounds."""

    def __init__(self, text, items, levels):
        super().__init__()
        self.maxstring = self.maxother = text
        self.maxlist = self.maxtuple = self.maxset = self.maxdict = items
        self.maxlevel = levels

    def repr_bytes(self, value, level):
        if len(value) <= self.maxstring:
            return repr(value)
        return repr(value[:self.maxstring]) + "…"

    repr_bytearray = repr_bytes


_repr = BoundedRepr(SUMMARY_LIMIT, 10, 3)


def _bounded(value):
    try:
        return _repr.repr(value)
    except Exception:   # a repr that fails names the type instead
        return f"<{type(value).__name__}>"


def summarize(args, kwargs):
    """The arguments as a short text (at most `SUMMARY_LIMIT` characters),
    kept in the job's own record: what a list of jobs shows and what a
    search finds the job by, read without loading its `Call` (a 50 MB
    argument, loaded over ZEO to list or file the job, held up the worker's
    claims for seconds)."""
    parts = [_bounded(arg) for arg in args]
    parts.extend(f"{name}={_bounded(value)}" for name, value in kwargs.items())
    text = ", ".join(parts)
    if len(text) > SUMMARY_LIMIT:
        text = text[:SUMMARY_LIMIT - 1] + "…"
    return text


class Result(persistent.Persistent):
    """A job's result, written once when it completes."""

    def __init__(self, value):
        self.value = value


def wrap_result(value):
    """How a job stores `value`: as is when small, else in a `Result`."""
    if isinstance(value, _INLINE_TYPES + (persistent.Persistent,)) or (
            isinstance(value, (str, bytes)) and len(value) <= INLINE_LIMIT):
        return value
    return Result(value)


def unwrap_result(stored):
    return stored.value if isinstance(stored, Result) else stored


# -- code the worker lacks -------------------------------------------------

def _is_placeholder(obj):
    """Whether `obj` is what ZODB loads for a global it cannot import: a
    broken class (persistent or not) or an instance of one.  Checked on the
    class, so that a persistent ghost is not loaded to find out."""
    cls = obj if isinstance(obj, type) else type(obj)
    return issubclass(cls, Broken)


def _dotted(obj):
    cls = obj if isinstance(obj, type) else type(obj)
    return getattr(cls, "__module__", "?"), getattr(cls, "__name__", "?")


def why_missing(module, name):
    """Why `module.name` cannot be imported here, and where to look."""
    try:
        importlib.import_module(module)
    except Exception as error:
        reason = f"{type(error).__name__}: {error}"
    else:
        reason = f"module {module} has no attribute {name!r}"
    return (f"{reason} (the worker runs in {os.getcwd()}; run it where the "
            f"application's code can be imported: install it in the worker's "
            f"environment or add its folder to PYTHONPATH)")


def _where(worker):
    return f"on worker {worker}" if worker else f"in process {os.getpid()}"


def _placeholders(value, path, depth=0, seen=None):
    """(path, placeholder) for the broken objects in an argument and the
    plain containers it holds (persistent objects are not looked into:
    loading them is the job's business, and each holds its own class)."""
    if _is_placeholder(value):
        yield path, value
        return
    if depth >= 3 or isinstance(value, (str, bytes, bytearray, persistent.Persistent)):
        return
    seen = set() if seen is None else seen
    if id(value) in seen:
        return
    if isinstance(value, (list, tuple, set, frozenset)):
        seen.add(id(value))
        for index, item in enumerate(value):
            if index >= 1000:
                return
            yield from _placeholders(item, f"{path}[{index}]", depth + 1, seen)
    elif isinstance(value, dict):
        seen.add(id(value))
        for index, (key, item) in enumerate(value.items()):
            if index >= 1000:
                return
            yield from _placeholders(item, f"{path}[{key!r}]", depth + 1, seen)


def check_loadable(callable, args, kwargs, name, worker=None):
    """Raise `MissingCodeError` if the callable or an argument loaded as a
    placeholder for code this process lacks (see `ZODB.broken`); `name` is
    the job's callable name, `worker` the dispatcher id that runs it."""
    if _is_placeholder(getattr(callable, "__self__", callable)):
        module, cls = _dotted(getattr(callable, "__self__", callable))
        raise MissingCodeError(
            f"cannot import {module}.{cls} {_where(worker)}: {why_missing(module, cls)}")
    found = []
    for index, arg in enumerate(args):
        found.extend(_placeholders(arg, f"argument {index}"))
    for key, arg in kwargs.items():
        found.extend(_placeholders(arg, f"argument {key!r}"))
    if found:
        path, broken = found[0]
        module, cls = _dotted(broken)
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise MissingCodeError(
            f"cannot import {module}.{cls} {_where(worker)}: {path} of {name} is a "
            f"broken {module}.{cls} object{more}, not run: {why_missing(module, cls)}")


def missing_database(error):
    """The name of the database `error` (or one of its causes) says this
    process did not open: a reference into it could not be followed
    (``KeyError`` from ``Connection.get_connection``).  None otherwise."""
    seen, depth = error, 0
    while seen is not None and depth < 8:
        if isinstance(seen, KeyError) and seen.args:
            tb = seen.__traceback__
            while tb is not None and tb.tb_next is not None:
                tb = tb.tb_next
            if tb is not None and tb.tb_frame.f_code.co_name == "get_connection":
                return seen.args[0]
        seen = seen.__cause__ or (None if seen.__suppress_context__ else seen.__context__)
        depth += 1
    return None
