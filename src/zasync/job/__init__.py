"""The job component: a job, what it runs and what it leaves.

`Job` and its outcome (`failure`), its retry policies (`retry`), the
running job's own view of itself (`local`), groups of jobs (`workflow`),
unique keys (`key`), what may be stored (`storable`), who the job runs as
(`context`), the events it sends (`events`), the clock every component
reads (`clock`) and the mergeable set of jobs (`jobset`).  It imports
nothing of zasync but `zasync.interfaces`.

``zasync.job`` was the module of `Job` before it was a package; its public
names stay importable from here.
"""

from zasync.job.job import (
    DEFAULT_RETRY_POLICY, Job, LiveState, check_call, new_job_id)
from zasync.job.local import check_fraction

__all__ = [
    "DEFAULT_RETRY_POLICY", "Job", "LiveState", "check_call",
    "check_fraction", "new_job_id",
]
