"""The layout of docs/internals.rst stays true: components as packages
whose imports point one way, no import cycle, no module using another's
private names, and the module paths of before the packages still import.
"""

import ast
import importlib
import os
import pathlib
import pickle
import shutil
import subprocess
import sys

import pytest

import zasync
from zasync import compat

HERE = pathlib.Path(__file__).resolve().parent
TOP = HERE.parent
PACKAGE = pathlib.Path(zasync.__file__).parent


def test_lint_imports_keeps_the_contracts():
    """import-linter, with the contracts of setup.cfg: the layers (faces ->
    worker -> queue -> job -> interfaces) and no cycle among the packages
    or among the modules of one package, function-level imports included."""
    command = shutil.which("lint-imports", path=os.path.dirname(sys.executable))
    assert command, "lint-imports (import-linter, in the [test] extra) is not installed"
    done = subprocess.run(
        [command, str(TOP / "setup.cfg"), "--no-cache"],
        cwd=TOP, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_no_import_cycle_is_excused():
    """The acyclic contract names no import it lets through: a cycle
    cannot come back as an exception in setup.cfg instead of a fix."""
    import configparser
    config = configparser.ConfigParser()
    config.read(TOP / "setup.cfg", encoding="utf-8")
    contract = config["importlinter:contract:acyclic"]
    assert contract.get("ignore_imports", "").split() == []


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), path


def _is_module(name):
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def _private_uses(name, path):
    """(line, what) of every private name of another zasync module that the
    module `name` imports or reads."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    modules = {}   # local name -> the zasync module it is bound to
    uses = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (
                node.module or "").startswith("zasync"):
            for alias in node.names:
                full = "%s.%s" % (node.module, alias.name)
                if _is_module(full):
                    modules[alias.asname or alias.name] = full
                elif alias.name.startswith("_") and node.module != name:
                    uses.append((node.lineno, "%s.%s" % (node.module, alias.name)))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("zasync") and alias.asname:
                    modules[alias.asname] = alias.name
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in modules and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and modules[node.value.id] != name):
            uses.append((node.lineno, "%s.%s" % (modules[node.value.id], node.attr)))
    return uses


def test_no_module_uses_another_modules_private_names():
    """What two modules share is public (within its package), or they are
    one module."""
    found = []
    for name, path in _modules():
        for line, what in _private_uses(name, path):
            found.append("%s:%d uses %s" % (name, line, what))
    assert found == []


@pytest.mark.parametrize("old,new", sorted(compat.MOVED.items()))
def test_old_module_path_is_the_moved_module(old, new):
    """``import zasync.failure`` (a path of before the packages) gives the
    module ``zasync.job.failure`` itself, not a copy."""
    assert importlib.import_module(old) is importlib.import_module(new)
    assert importlib.import_module(new).__spec__.name == new


def test_pickle_naming_an_old_path_loads():
    """A database written before the move names its classes by the old
    module paths; they load as the classes of the new ones."""
    from zasync.job.failure import Failure
    old = pickle.dumps(Failure.from_exception(ValueError("x")), protocol=0).replace(
        b"zasync.job.failure", b"zasync.failure")
    assert b"zasync.failure" in old
    assert isinstance(pickle.loads(old), Failure)


@pytest.mark.parametrize("path", [
    "zasync.job.workflow._resume", "zasync.job.workflow._serial_step",
    "zasync.job.workflow._parallel_step", "zasync.workflow._resume"])
def test_callables_that_stored_jobs_name_load_from_that_path(path):
    """A waiting job's callback and a group's step are stored by the path
    of their function; pickles naming it keep loading after the waiting
    moved in part to ``zasync.job.waiting``."""
    from zasync.job import workflow
    module, name = path.rsplit(".", 1)
    stored = pickle.dumps(getattr(workflow, name), protocol=0).replace(
        b"zasync.job.workflow", module.encode())
    assert module.encode() + b"\n" + name.encode() in stored
    assert pickle.loads(stored) is getattr(workflow, name)


def test_old_package_paths_keep_their_public_names():
    """zasync.job, zasync.queue and zasync.cli were modules; as packages
    they still give the names users imported from them."""
    import zasync.cli
    import zasync.job
    import zasync.queue
    from zasync.cli.cli import main
    from zasync.job.job import Job
    from zasync.queue.queue import Queue, Queues
    assert zasync.job.Job is Job
    assert (zasync.queue.Queue, zasync.queue.Queues) == (Queue, Queues)
    assert zasync.cli.main is main
