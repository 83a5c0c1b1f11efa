"""A job's status changes, kept in its record as one string.

A job is pickled at each change of its status: by the put, the claim and
the completion.  Kept as a tuple of (status, microseconds, dispatcher id)
tuples, its history was five sub-objects a change, each one a call of
ZODB's `persistent_id` and a step of the pickler: a third of a completed
job's pickle, and the job's two pickles (claim and completion) were the
dispatcher's largest cost in a drain of short jobs.  As one string it is
one sub-object however long.

Each change is a line: its status, its microseconds since the epoch and,
if a dispatcher made it, that dispatcher's id, or ``=`` when it is the
id of the line before (most changes after a claim are made by the claimer).
A history whose ids cannot be written so (an id holding a newline, or one
that is ``=``) stays a tuple, as histories stored before this module are;
every reader takes both.
"""

_SAME = "="


def _writable(by):
    return by is None or ("\n" not in by and by != _SAME)


def entries(history):
    """(status, micros, dispatcher id or None) for each change."""
    if history.__class__ is not str:
        return tuple(history)
    found = []
    by = None
    for line in history.split("\n"):
        parts = line.split(" ", 2)
        if len(parts) == 2:
            by = None
        elif parts[2] != _SAME:
            by = parts[2]
        found.append((parts[0], int(parts[1]), by))
    return tuple(found)


def _line(status, micros, by, before):
    if by is None:
        return f"{status} {micros}"
    return f"{status} {micros} {_SAME if by == before else by}"


def _last_by(history):
    """The dispatcher id of the last line of a string history."""
    for line in reversed(history.split("\n")):
        parts = line.split(" ", 2)
        if len(parts) == 2:
            return None
        if parts[2] != _SAME:
            return parts[2]
    return None


def append(history, status, micros, by):
    """`history` (a string, a tuple, or empty) with one more change."""
    if not _writable(by):
        return entries(history) + ((status, micros, by),)
    if history.__class__ is str:
        if not history:
            return _line(status, micros, by, None)
        before = _last_by(history) if by is not None else None
        return f"{history}\n{_line(status, micros, by, before)}"
    # a tuple: written anew as a string if every id can be
    if not all(_writable(each[2]) for each in history):
        return tuple(history) + ((status, micros, by),)
    lines, before = [], None
    for each_status, each_micros, each_by in tuple(history) + ((status, micros, by),):
        lines.append(_line(each_status, each_micros, each_by, before))
        before = each_by
    return "\n".join(lines)


def first_micros(history):
    """The microseconds of the first change (None for no change)."""
    if not history:
        return None
    if history.__class__ is not str:
        return history[0][1]
    end = history.find("\n")
    first = history if end < 0 else history[:end]
    return int(first.split(" ", 2)[1])


def last_micros(history):
    """The microseconds of the last change."""
    if history.__class__ is not str:
        return history[-1][1]
    last = history[history.rfind("\n") + 1:]
    return int(last.split(" ", 2)[1])
