"""The worker component: what claims jobs from the queues and runs them.

The `dispatcher` polls the queues and hands jobs to its agents (`agent`:
threads; `process`: child processes, each a `child`), which run them with
the `runner` (several short ones to a transaction with `batch`).
`recovery` takes back the jobs of dead workers, `wakeup` lets a put wake
the dispatchers of its process, `record` is a dispatcher's entry in the
database and `shutdown` stops them all on exit.  It imports the queue and
job components and `zasync.interfaces`.
"""
