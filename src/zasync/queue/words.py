"""The words of a completed job that a search finds it by.

A job is found by the words of its callable's name, its arguments (the
short text of them its record keeps, `IJob.args_summary`), its result and
its failure (type, message and traceback).  Words are runs of
letters, digits and underscores, lower-cased: ``zasync.cli.examples.add``
gives ``zasync``, ``examples`` and ``add``; ``KeyError('order-17')`` gives
``keyerror``, ``order`` and ``17``.  Words of 8 or more hex digits with a
digit among them (ids, hashes, long numbers) are left out: see `indexed`.

They are taken from the job through its public attributes
(``callable_name``, ``args_summary``, ``result``, ``failure``) by whoever
files the job into its history, in the job's own transaction, and kept in
a `Words` record that the filing reads; bounded, so that a 100 kB value or
a deep traceback costs no more than a few hundred words.  Rejected: the
words of the whole arguments (up to 2,000 characters of each), which
loaded the job's call record to file it: the dispatcher that commits
handed results loaded a 50 MB argument again over ZEO, and the claims it
makes waited seconds for it.  Rejected: `zope.index`'s text index (a
lexicon, stop words, relevance scores, several trees written per
document), more than finding a job by a word needs, and not installed
with zasync.
"""

import re

import persistent

from zasync.job.call import BoundedRepr

#: Characters read of one value (a repr, a message, a traceback's end).
TEXT_LIMIT = 2000
#: Distinct words kept of one job.
WORD_LIMIT = 100
#: Characters kept of one word.
WORD_LENGTH = 40

_WORD = re.compile(r"\w+")
#: Words not indexed: 8 or more hex digits, at least one a digit -- job
#: ids, uuids, hashes, timestamps, long numbers.  Each is a key of its own
#: in the index (rarely shared by two jobs), and each rewrites a bucket of
#: the index of its own where it falls; a job is found by its id with the
#: web view's job-id box.
_HEX = frozenset("0123456789abcdef")


def indexed(word):
    """Whether the index keeps `word` (a word of `words`)."""
    return len(word) < 8 or word.isalpha() or not _HEX.issuperset(word)


class Words(persistent.Persistent):
    """A completed job's words and its callable's name, written once by
    its own transaction, read once by the filing that indexes them.

    Kept apart from the job so that filing loads a few hundred bytes,
    not the job, and apart from the history's set of newly completed jobs,
    which every completion rewrites whole: there a job's words were
    rewritten by each completion until the next filing."""

    def __init__(self, words, name):
        self.words = words
        self.name = name


_repr = BoundedRepr(TEXT_LIMIT, 30, 3)


def _text(value):
    if isinstance(value, str):
        return value[:TEXT_LIMIT]
    if value is None or value.__class__ in (int, bool, float):
        return str(value)      # what reprlib gives, without its dispatch
    try:
        return _repr.repr(value)[:TEXT_LIMIT]
    except Exception:
        return type(value).__name__


def words(text):
    """The distinct words of `text`, in order of first appearance."""
    found = {}
    for word in _WORD.findall(text.lower()):
        found.setdefault(word[:WORD_LENGTH], None)
    return list(found)


def job_words(job, callable_name=None, every=False, of_name=True):
    """The words a search finds the completed `job` by (a tuple, sorted),
    read through its public attributes (`callable_name` if the caller has
    it already); with those that are not `indexed` if `every`; without
    the words of the callable's name unless `of_name` (the history finds
    those through its index of names); never raises."""
    parts = []
    try:
        if of_name:
            parts.append(job.callable_name if callable_name is None else callable_name)
        summary = getattr(job, "args_summary", None)
        if summary is not None:
            # kept in the job's record: the arguments' record (which may
            # be huge, and is loaded over ZEO) stays unloaded
            parts.append(summary)
        else:   # a job stored before the summary was kept
            parts.extend(_text(arg) for arg in job.args)
            for name, value in job.kwargs.items():
                parts.append(str(name))
                parts.append(_text(value))
        failure = job.failure
        if failure is not None:
            parts.append(str(failure.type))
            parts.append(_text(failure.message))
            # the end of a traceback says where it failed; its start is
            # the same worker frames every time
            parts.append((failure.traceback or "")[-TEXT_LIMIT:])
        elif job.result is not None:
            parts.append(_text(job.result))
    except Exception:
        pass     # a job whose parts cannot be read is found by fewer words
    found = {}
    # one pass of the expression over all the parts: a pass per part
    # cost as much as the rest of a job's completion
    for word in _WORD.findall(" ".join(parts).lower()):
        word = word[:WORD_LENGTH]
        if word not in found and (every or indexed(word)):
            found[word] = None
            if len(found) >= WORD_LIMIT:
                break
    return tuple(sorted(found))
