"""The module paths of zasync before its components became packages.

Jobs stored in a database name their classes and callables by module
(``zasync.failure.Failure``, ``zasync.examples.add``), and users import
them by the same paths, so each old path stays a name of the module that
moved: ``import zasync.failure`` gives the very module
``zasync.job.failure``, one object under two names, so that a pickle made
before the move loads and one made after it names the new path.

Rejected: a file left at each old path re-exporting the new one.  Some
forty of them beside the packages would hide the layout the packages show, and a
re-export copies names, not the module: patching ``zasync.runner.X`` in a
test would no longer reach the code that uses it.
"""

import importlib
import importlib.abc
import importlib.util
import sys

#: old module path -> where it lives now
MOVED = {
    "zasync." + old: "zasync.%s.%s" % (package, old)
    for package, olds in {
        "job": ["failure", "retry", "local", "workflow", "key", "storable",
                "context", "clock", "events", "jobset"],
        "queue": ["claim", "history", "quota", "schedule", "trees",
                  "database", "multidb", "instance"],
        "worker": ["dispatcher", "agent", "process", "child", "runner",
                   "batch", "recovery", "wakeup", "record", "shutdown"],
        "integration": ["component", "subscriber", "zopeapp", "pyramid"],
        "cli": ["commands", "schedule_commands", "demo", "examples",
                "report", "embedded"],
    }.items()
    for old in olds
}


class MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old module path of `MOVED` and loads it as the module at
    its new path."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def __init__(self):
        self._specs = {}

    def create_module(self, spec):
        module = importlib.import_module(MOVED[spec.name])
        self._specs[module.__name__] = module.__spec__
        return module

    def exec_module(self, module):
        # The import system gave the module the spec of its old name; it
        # keeps its own, which names the file it was read from.
        module.__spec__ = self._specs.pop(module.__name__)


def install():
    """Put the finder on `sys.meta_path` (once)."""
    if not any(isinstance(f, MovedModuleFinder) for f in sys.meta_path):
        sys.meta_path.append(MovedModuleFinder())
