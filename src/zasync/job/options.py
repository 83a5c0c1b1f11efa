"""The options of a put (`IQueue.put`): their checks, and the split of what
`put` got between the queue's options and the callable's arguments.

They belong to the job, below the queue: a schedule (`zasync.queue.schedule`)
and `zasync.job.context.put` check and split the same options, and neither
may need the queue module for it.
"""

import inspect

from zasync.interfaces import ConfigurationError, IJob, IRetryPolicy
from zasync.job import storable


def check_priority(priority):
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise ConfigurationError(f"priority={priority!r}: expected an int")
    return priority


def check_retry_policy(retry_policy):
    if retry_policy is not None:
        if not IRetryPolicy.providedBy(retry_policy):
            raise ConfigurationError(
                f"retry_policy={retry_policy!r}: expected an IRetryPolicy "
                f"such as zasync.RetryTransient() or zasync.Backoff(...)")
        from zasync.job.storable import check_value
        check_value(retry_policy, "retry policy")
    return retry_policy


#: The keyword arguments `Queue.put` keeps for itself; it passes any other
#: to the callable.  Rejected: options only through a separate call (or
#: under prefixed names), which would break every caller that passes them
#: to `put` today; instead a name that could be meant either way is
#: refused (see `split_put_arguments`).
PUT_OPTIONS = ("begin_after", "begin_by", "retry_policy", "priority", "quotas",
               "timeout", "key")


def split_put_arguments(job, args, kwargs):
    """Split what `put(job, *args, **kwargs)` got into the queue's options
    and the keyword arguments of the callable; return both dicts.

    Refuses arguments for a job (they belong in its `Job(...)`), and an
    option's name that the callable also takes as a parameter: whichever
    was meant, the other would be silently wrong.
    """
    options = {name: kwargs.pop(name) for name in PUT_OPTIONS if name in kwargs}
    if IJob.providedBy(job):
        if args or kwargs:
            given = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()]
            kind = ("positional" if not kwargs else "keyword" if not args
                    else "positional and keyword")
            raise ConfigurationError(
                f"put() got a job and {kind} arguments for its callable "
                f"({', '.join(given)}): give arguments to Job() instead, as in "
                f"queue.put(zasync.Job(f, {given[0]}))")
        return options, kwargs
    taken = sorted(set(options) & parameter_names(job)) if options else ()
    if taken:
        name = storable.describe(job)
        both = ", ".join(f"{n}=" for n in taken)
        raise ConfigurationError(
            f"put({name}, ..., {both}...) is ambiguous: {name} takes "
            + " and ".join(repr(n) for n in taken)
            + f" as an argument, and {both} is also an option of put.  Say which: "
            f"queue.put(zasync.Job({name}, ..., {taken[0]}=...)) passes it to the "
            f"callable, queue.put(zasync.Job({name}, ...), {taken[0]}=...) sets the "
            f"queue's option")
    return options, kwargs


def parameter_names(function):
    """The names `function` takes as keyword arguments (not through
    **kwargs); none if its signature cannot be read."""
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return set()
    return {p.name for p in parameters
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
