"""An application process for the shutdown tests (test_shutdown.py).

It does what a Zope process does at start-up, without Zope: loads zasync's
ZCML with a policy, opens its database (one FileStorage, or the 'main' and
'async' FileStorages of a multi-database), notifies
``DatabaseOpenedWithRoot`` so that the policy's subscriber starts the
dispatcher, and puts one job.  Then it ends in one of several ways::

    python -m shutdown_app FOLDER LAYOUT STYLE PHASE

LAYOUT is ``single``, ``multi`` or ``zeo`` (one storage of the ZEO server
whose URI is in ``FOLDER/zeo-uri``).  STYLE says how the process ends:

``serve``
    waits for signals like a server; on SIGINT or SIGTERM it closes the
    database in a ``finally`` (as ``runwsgi`` does: the main database only);
``wait``
    waits for signals and closes nothing (the end of the process is all);
``close``
    closes the database itself once the job reached PHASE, then ends;
``end``
    ends (without closing) once the job reached PHASE.

PHASE is ``mid`` (the job started) or ``after`` (the job's work is done).
The job appends a line to ``FOLDER/runs`` when its work is done: the test
counts them.  The job's id is printed as ``put <id>``.
"""

import logging
import os
import signal
import sys
import time

import zope.event
from zope.configuration import xmlconfig
from zope.processlifetime import DatabaseOpenedWithRoot

import zasync
from zasync import testing
from zasync.interfaces import IQueue

from process_jobs import wait_for_file

#: Seconds the job works (a stop must wait for it).
WORK = 1.0


def work(folder, seconds):
    """The job: say it started, work, append one line to ``runs``."""
    with open(os.path.join(folder, "started"), "a") as f:
        f.write("started\n")
    time.sleep(seconds)      # the job's own work, not a synchronisation
    with open(os.path.join(folder, "runs"), "a") as f:
        f.write("ran\n")
    return "done"


def open_database(folder, layout):
    if layout == "single":
        return zasync.open_db(os.path.join(folder, "Data.fs"))
    if layout == "zeo":
        with open(os.path.join(folder, "zeo-uri")) as f:
            return zasync.open_db(f.read().strip())
    return testing.open_multidb(folder)


POLICY = {"single": "basic_dispatcher_policy.zcml",
          "zeo": "basic_dispatcher_policy.zcml",
          "multi": "multidb_dispatcher_policy.zcml"}


def main(folder, layout, style, phase):
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(levelname)s %(name)s %(message)s")
    xmlconfig.string(f"""
        <configure xmlns="http://namespaces.zope.org/zope">
          <include package="zasync" file="{POLICY[layout]}" />
        </configure>""")
    db = open_database(folder, layout)
    zope.event.notify(DatabaseOpenedWithRoot(db))
    with db.transaction() as conn:
        # by its module's name, not __main__'s, as an application's job is
        from shutdown_app import work as job_function
        job = IQueue(conn).put(zasync.Job(job_function, folder, WORK))
        job_id = job.id
    print("put", job_id, flush=True)
    if style in ("serve", "wait"):
        try:
            while True:
                signal.pause()
        except (KeyboardInterrupt, SystemExit) as stop:
            print("exiting on", type(stop).__name__, flush=True)
        finally:
            if style == "serve":
                db.close()
        return
    wait_for_file(os.path.join(folder, "started" if phase == "mid" else "runs"))
    if style == "close":
        db.close()
        print("closed", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
