"""zasync.integration.zopeapp without a server: what a ZopeContext accepts, and that
nothing is captured outside a Zope request.  Its work inside a real
instance is tested over HTTP in test_zope_app.py."""

import os

import pytest
from zope.interface.verify import verifyObject

import zasync
from zasync.job import context
from zasync.integration import zopeapp
from zasync.interfaces import ConfigurationError, IJobContext

import zope_jobs


@pytest.fixture(autouse=True)
def environment():
    """Importing Zope's AccessControl sets INSTANCE_HOME and CLIENT_HOME
    in the environment (App.FindHomes); other tests' dispatchers would
    look for their id files there, so the environment is put back."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def test_a_zope_context_provides_its_interface():
    found = zopeapp.ZopeContext("main", site_path=("", "site"), user_id="admin",
                                user_folder_path=("", "acl_users"))
    assert verifyObject(IJobContext, found)
    assert repr(found) == "<zasync.integration.zopeapp.ZopeContext user 'admin' site '/site'>"


@pytest.mark.parametrize("kwargs, message", [
    (dict(database_name=""), "database_name='': expected the name of the database"),
    (dict(database_name="main", user_id="admin"),
     "user_id='admin', user_folder_path=None: give both"),
    (dict(database_name="main", site_path="/site"),
     "site_path='/site': expected a physical path, a tuple of str"),
    (dict(database_name="main", paths=[("", 1)]),
     r"paths=\('', 1\): expected a physical path"),
])
def test_a_zope_context_refuses_what_it_cannot_rebuild(kwargs, message):
    with pytest.raises(ConfigurationError, match=message):
        zopeapp.ZopeContext(**kwargs)


def test_outside_a_request_nothing_is_captured(db):
    assert zopeapp.capture() is None
    with db.transaction() as conn:
        job = zopeapp.put(zasync.get_queue(conn), zope_jobs.add, 1, 2)
        assert context.contexts_of(job) == ()


def test_put_refuses_a_job_with_positional_arguments(db):
    with db.transaction() as conn:
        with pytest.raises(ConfigurationError, match="give arguments to Job"):
            zopeapp.put(zasync.get_queue(conn), zasync.Job(zope_jobs.add, 1), 2)


def test_an_application_without_zope_imports_none_of_it(tmp_path):
    # a fresh interpreter: puts, runs a job, and looks at what it imported
    import subprocess
    import sys
    script = f"""
import sys, zasync, zasync.testing
db = zasync.open_db({str(tmp_path / "Data.fs")!r})
zasync.install(db)
with zasync.testing.running_dispatcher(db, threads=1):
    with db.transaction() as conn:
        job = zasync.get_queue(conn).put(len, "abc")
    assert zasync.wait_for(job, timeout=30).result == 3
db.close()
print(sorted(name for name in sys.modules
             if name.split(".")[0] in ("Zope2", "OFS", "Acquisition", "AccessControl",
                                       "Testing", "Products")
             or name == "zasync.integration.zopeapp"))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
