"""/metrics in the Prometheus text exposition format (version 0.0.4).

The queue keeps no counters that only grow (its history is pruned after
its retention), so completions are exposed as gauges: the jobs the
history keeps, and those that completed in the last hour by outcome.
"""

import math

from zasync.web.present import HEALTHS, RUNNING, WorkerView
from zasync.web.survey import held_jobs, per_minute

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

JOB_STATUSES = ("pending", "assigned", "active", "callbacks", "completed")


def escape_label(value):
    """A label value as the format wants it: backslash, double quote and
    line feed escaped."""
    return (str(value).replace("\\", "\\\\").replace("\n", "\\n")
            .replace('"', '\\"'))


def _number(value):
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "+Inf" if value > 0 else "-Inf"
        return repr(value)
    return str(int(value))


class _Writer:
    def __init__(self):
        self.lines = []

    def family(self, name, kind, help_text):
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")

    def sample(self, name, labels, value):
        if labels:
            inner = ",".join(f'{key}="{escape_label(val)}"' for key, val in labels.items())
            self.lines.append(f"{name}{{{inner}}} {_number(value)}")
        else:
            self.lines.append(f"{name} {_number(value)}")

    def text(self):
        return "\n".join(self.lines) + "\n"


def render(container, now):
    """The metrics of every queue and dispatcher record, as text."""
    out = _Writer()
    held = held_jobs(container)
    queues = container.values()

    out.family("zasync_jobs", "gauge",
               "Jobs by queue and status: pending in the queue, held by "
               "workers (assigned, active, callbacks), completed in the history.")
    for queue in queues:
        counts = dict.fromkeys(JOB_STATUSES, 0)
        counts["pending"] = len(queue)
        counts["completed"] = len(queue.history)
        for job, _ in held:
            if job.queue_name == queue.name and job.status in counts:
                counts[job.status] += 1
        for status in JOB_STATUSES:
            out.sample("zasync_jobs", {"queue": queue.name, "status": status},
                       counts[status])

    out.family("zasync_jobs_failed_undismissed", "gauge",
               "Failed jobs that no operator has dismissed yet.")
    for queue in queues:
        out.sample("zasync_jobs_failed_undismissed", {"queue": queue.name},
                   sum(queue.history.failure_counts()))

    out.family("zasync_jobs_completed_last_hour", "gauge",
               "Jobs that completed in the last hour, by outcome.")
    for queue in queues:
        succeeded, failed, _ = per_minute(queue, now)
        out.sample("zasync_jobs_completed_last_hour",
                   {"queue": queue.name, "outcome": "success"}, sum(succeeded))
        out.sample("zasync_jobs_completed_last_hour",
                   {"queue": queue.name, "outcome": "failure"}, sum(failed))

    out.family("zasync_jobs_running", "gauge", "Jobs running now, in all queues.")
    out.sample("zasync_jobs_running", {}, sum(1 for job, _ in held if job.status in RUNNING))

    workers = [WorkerView(record, now) for record in container.dispatchers.values()]
    out.family("zasync_workers", "gauge", "Dispatcher records by health.")
    for state in HEALTHS:
        out.sample("zasync_workers", {"health": state},
                   sum(1 for worker in workers if worker.health == state))
    out.family("zasync_worker_health", "gauge",
               "1 for the health of each dispatcher (failing, alive, late, dead or "
               "stopped), else 0.")
    for worker in workers:
        for state in HEALTHS:
            out.sample("zasync_worker_health",
                       {"worker": worker.id, "host": worker.host, "health": state},
                       1 if worker.health == state else 0)
    out.family("zasync_worker_last_ping_age_seconds", "gauge",
               "Seconds since each dispatcher's last heartbeat.")
    for worker in workers:
        out.sample("zasync_worker_last_ping_age_seconds", {"worker": worker.id},
                   round(worker.ping_age, 3))
    out.family("zasync_worker_jobs", "gauge", "Jobs each dispatcher holds.")
    for worker in workers:
        out.sample("zasync_worker_jobs", {"worker": worker.id}, worker.load)
    out.family("zasync_worker_slots", "gauge",
               "Jobs each dispatcher can run at once (its agents' sizes).")
    for worker in workers:
        out.sample("zasync_worker_slots", {"worker": worker.id}, worker.slots)
    return out.text()
