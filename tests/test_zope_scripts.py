"""Zope's scripts: ``zconsole run`` loads the instance's ZCML and opens its
database, and the policy's subscriber starts no dispatcher there unless
``ZASYNC_DISPATCHER=on`` says so.  A real Zope instance (``mkwsgiinstance``)
and the real ``zconsole``; run where Zope is installed (``pip install
Zope``), skipped elsewhere."""

import os
import subprocess
import sys

import pytest

pytest.importorskip("Zope2")

TIMEOUT = 120
BIN = os.path.dirname(sys.executable)

SCRIPT = """
import transaction
import zasync
from zasync.integration import subscriber
from zasync.interfaces import IQueue
job = IQueue(app._p_jar).put(zasync.Job(len, "abc"))
transaction.commit()
print("dispatchers", len(subscriber.dispatchers()))
print("job", job.id)
"""


@pytest.fixture(scope="module")
def instance(tmp_path_factory):
    folder = tmp_path_factory.mktemp("zope") / "instance"
    subprocess.run([os.path.join(BIN, "mkwsgiinstance"), "-d", str(folder),
                    "-u", "admin:admin"], check=True, capture_output=True,
                   timeout=TIMEOUT)
    site = folder / "etc" / "site.zcml"
    site.write_text(site.read_text().replace(
        '<include package="Zope2.App" />',
        '<include package="Zope2.App" />\n'
        '  <include package="zasync" file="basic_dispatcher_policy.zcml" />'))
    (folder / "script.py").write_text(SCRIPT)
    return folder


def zconsole(instance, dispatcher=None):
    """Run the script; ZASYNC_DISPATCHER is `dispatcher`, or unset."""
    env = {k: v for k, v in os.environ.items() if k != "ZASYNC_DISPATCHER"}
    if dispatcher is not None:
        env["ZASYNC_DISPATCHER"] = dispatcher
    done = subprocess.run(
        [os.path.join(BIN, "zconsole"), "run", "etc/zope.conf", "script.py"],
        cwd=str(instance), capture_output=True, text=True, timeout=TIMEOUT, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    return dict(line.split(" ", 1) for line in done.stdout.splitlines()
                if line.startswith(("dispatchers ", "job ")))


def test_a_zconsole_script_puts_jobs_and_starts_no_dispatcher(instance):
    out = zconsole(instance)
    assert out["dispatchers"] == "0"
    assert out["job"]
    assert not (instance / "var" / "zasync-dispatcher.id").exists()


def test_zasync_dispatcher_on_starts_one_in_a_script_with_the_instance_s_id(instance):
    out = zconsole(instance, "on")
    assert out["dispatchers"] == "1"
    # its id is kept in the instance's var folder ($CLIENT_HOME)
    assert (instance / "var" / "zasync-dispatcher.id").read_text().strip()
