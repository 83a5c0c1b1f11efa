"""What is kept of an exception that ended a job or one of its attempts."""

import traceback as traceback_module

from zope.interface import implementer

from zasync.job import clock
from zasync.interfaces import IFailure


def _dotted(cls):
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


@implementer(IFailure)
class Failure:
    """See `IFailure`.

    A plain object, pickled inside the job's state: it keeps the class names
    of the exception's MRO (so `check` works without importing anything) and
    text, never the exception, its frames or their locals, which may hold
    objects that cannot be stored.
    """

    def __init__(self, type, message, traceback, mro=(), time=None):
        self.type = type
        self.message = message
        self.traceback = traceback
        self.mro = tuple(mro) or (type,)
        self.time = time or clock.now()

    @classmethod
    def from_exception(cls, error):
        """A failure describing `error`, with its whole traceback."""
        text = "".join(traceback_module.format_exception(
            type(error), error, error.__traceback__))
        mro = [_dotted(c) for c in type(error).__mro__
               if issubclass(c, BaseException)]
        return cls(_dotted(type(error)), str(error), text, mro)

    @property
    def type_name(self):
        return self.type.rsplit(".", 1)[-1]

    def check(self, *exception_types):
        """See `IFailure`."""
        for wanted in exception_types:
            name = wanted if isinstance(wanted, str) else _dotted(wanted)
            if name.startswith("builtins."):  # as IFailure's example spells it
                name = name[len("builtins."):]
            if name in self.mro:
                return wanted
        return None

    def __str__(self):
        return f"{self.type_name}: {self.message}" if self.message else self.type_name

    def __repr__(self):
        return f"<Failure {self}>"

    def __eq__(self, other):
        if not isinstance(other, Failure):
            return NotImplemented
        return (self.type, self.message, self.traceback) == (
            other.type, other.message, other.traceback)

    __hash__ = None
