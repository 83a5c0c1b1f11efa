"""The queue component: where jobs wait, and the database that holds them.

`Queue` and `Queues` (`queue`), how a worker claims a job (`claim`), the
index of finished jobs (`history`), per-key quotas (`quota`), recurring
jobs (`schedule`), the trees they use (`trees`), and the database the
queues live in (`database`, `multidb`, `instance`).  It imports the job
component and `zasync.interfaces`, never the workers.

``zasync.queue`` was the module of `Queue` before it was a package; its
public names stay importable from here.
"""

from zasync.queue.queue import (
    LANES, PENDING_LANES, PUT_OPTIONS, Queue, Queues, check_priority,
    check_retry_policy, split_put_arguments)

__all__ = [
    "LANES", "PENDING_LANES", "PUT_OPTIONS", "Queue", "Queues",
    "check_priority", "check_retry_policy", "split_put_arguments",
]
