"""Many producer processes and two worker processes on one ZEO server.

8 producers put 2,000 jobs each, one transaction per put, while 2 workers
of 2 threads run them: no ConflictError reaches a producer, every job runs
exactly once and none is lost.  The conflicts that zasync's resolvers merged
(in the ZEO server) and those raised to the workers, which retried them,
are counted and printed (``pytest -s``).
"""

import collections
import json
import subprocess
import sys
import time

import pytest
import transaction

import zasync
from zasync.interfaces import COMPLETED
from zasync.testing import installed_db

import process_jobs
from process_jobs import Worker, process_env, read_lines, start_counting_server

PRODUCERS = 8
PER_PRODUCER = 2000
WORKERS = 2
THREADS = 2
#: The longest the whole run may take: about 2 to 3 minutes on 2 cores
#: alone, longer while ``pytest -n`` runs the rest of the suite beside it.
TIMEOUT = 900.0


@pytest.mark.slow(reason="16,000 jobs put by 8 producer processes, one commit each, "
                         "and run by 2 worker processes: the load is what it tests",
                  seconds=150)
def test_producers_never_see_a_conflict_and_every_job_runs_exactly_once(tmp_path):
    total = PRODUCERS * PER_PRODUCER
    (tmp_path / "zeo").mkdir()
    runs = tmp_path / "runs"
    runs.mkdir()
    server, uri, counts_path = start_counting_server(str(tmp_path / "zeo"))
    workers, producers = [], []
    db = None
    try:
        db = installed_db(uri)
        conflicts_before = db.storage.server_status()["conflicts"]
        workers = [Worker(str(tmp_path / f"worker-{index}.log"), uri,
                          "--threads", str(THREADS), "--id", f"worker-{index}")
                   for index in range(WORKERS)]
        began = time.monotonic()
        for index in range(PRODUCERS):
            with open(tmp_path / f"producer-{index}.log", "wb") as log:
                producers.append(subprocess.Popen(
                    [sys.executable, "-m", "process_jobs", "produce", uri,
                     str(PER_PRODUCER), str(runs), str(index),
                     str(tmp_path / f"producer-{index}.json")],
                    stdout=log, stderr=subprocess.STDOUT, env=process_env()))
        deadline = time.monotonic() + TIMEOUT
        for index, producer in enumerate(producers):
            status = producer.wait(max(1.0, deadline - time.monotonic()))
            assert status == 0, (tmp_path / f"producer-{index}.log").read_text()
        put_seconds = time.monotonic() - began

        summaries = [json.loads((tmp_path / f"producer-{index}.json").read_text())
                     for index in range(PRODUCERS)]
        errors = collections.Counter()
        for summary in summaries:
            errors.update(summary["errors"])
        assert errors == {}, f"errors raised at producers' commits: {dict(errors)}"
        ids = [job_id for summary in summaries for job_id in summary["ids"]]
        assert len(ids) == len(set(ids)) == total

        tm = transaction.TransactionManager()
        conn = db.open(transaction_manager=tm)
        try:
            def all_completed():
                tm.abort()
                tm.begin()
                return len(zasync.get_queue(conn).history) >= total
            process_jobs.wait_until(all_completed, max(1.0, deadline - time.monotonic()),
                                    interval=0.2)
            run_seconds = time.monotonic() - began
            # ConflictErrors the server raised to a client: none went to a
            # producer, so the workers retried them all
            retried = db.storage.server_status()["conflicts"] - conflicts_before
            statuses = [worker.stop() for worker in workers]
            assert statuses == [0] * WORKERS, [worker.log[-3000:] for worker in workers]

            tm.abort()
            tm.begin()
            queue = zasync.get_queue(conn)
            assert len(queue) == 0 and len(queue.history) == total
            expected = {f"{index}:{number}" for index in range(PRODUCERS)
                        for number in range(PER_PRODUCER)}
            seen = set()
            dispatchers = collections.Counter()
            for job_id in ids:
                job = queue.get(job_id)
                assert job is not None, f"job {job_id} is lost"
                assert job.status == COMPLETED and job.succeeded, (job, job.failure)
                assert job.result == job.args[0]
                assert job.attempt_count == 1, (job, job.attempts)
                seen.add(job.result)
                dispatchers[job.dispatcher_id] += 1
            assert seen == expected
        finally:
            tm.abort()
            conn.close()
    finally:
        for producer in producers:
            process_jobs.stop(producer)
        for worker in workers:
            worker.stop()
        if db is not None:
            db.close()
        process_jobs.stop(server)

    # each job appended its id to its worker thread's log, once
    runs_logged = collections.Counter(read_lines(str(runs), "runs"))
    twice = {job_id: n for job_id, n in runs_logged.items() if n != 1}
    assert twice == {}, f"jobs run more than once: {twice}"
    assert set(runs_logged) == set(ids)

    assert not any("Traceback" in worker.log for worker in workers)
    with open(counts_path) as counts:
        resolutions = collections.Counter(line.strip() for line in counts)
    print(f"\n{total} jobs from {PRODUCERS} producer processes, {WORKERS} worker "
          f"processes of {THREADS} threads: puts done in {put_seconds:.1f} s, "
          f"all run in {run_seconds:.1f} s ({total / run_seconds:.0f} jobs/s); "
          f"jobs per worker: {dict(sorted(dispatchers.items()))}")
    print(f"ConflictErrors at producers: {sum(errors.values())}; raised to the "
          f"workers and retried there: {retried}; conflicts resolved in the ZEO "
          f"server by zasync's resolvers: "
          + (", ".join(f"{what} {n}" for what, n in sorted(resolutions.items()))
             or "none") + " (BTrees' own bucket merges are not counted)")
