"""Jobs and objects for the multi-database tests: each job writes into a
main-database object of its own, so that counting its writes shows every
job ran exactly once."""

import persistent
import transaction

from zasync.integration import component


class Target(persistent.Persistent):
    """An object of the application's main database that a job changes."""

    runs = 0


def touch(target):
    """The job: count one run on `target`."""
    target.runs += 1
    return target.runs


def add_targets(main_db, count):
    """Store `count` targets in the main database (root["targets"][i])."""
    import BTrees.IOBTree
    tm = transaction.TransactionManager()
    conn = main_db.open(transaction_manager=tm)
    try:
        with tm:
            targets = conn.root()["targets"] = BTrees.IOBTree.IOBTree()
            for i in range(count):
                targets[i] = Target()
    finally:
        conn.close()


def request(main_db, i, before_close=None, queue=""):
    """What a request thread does: open its own connection to the main
    database, put a job for one of its existing objects into the queue the
    adapters find, commit, (call `before_close`,) close.  Return
    (job oid, None) or (None, the error)."""
    tm = transaction.TransactionManager()
    conn = main_db.open(transaction_manager=tm)
    try:
        tm.begin()
        job = component.find_queues(conn)[queue].put(touch, conn.root()["targets"][i])
        try:
            tm.commit()
        except Exception as error:
            tm.abort()
            return None, error
        return job._p_oid, None
    finally:
        if before_close is not None:
            before_close()
        conn.close()


def runs(main_db):
    """Each target's count of runs, by index."""
    tm = transaction.TransactionManager()
    conn = main_db.open(transaction_manager=tm)
    try:
        tm.begin()
        found = {i: target.runs for i, target in conn.root()["targets"].items()}
        tm.abort()
        return found
    finally:
        conn.close()
