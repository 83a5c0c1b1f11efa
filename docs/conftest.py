"""Support for running the narrative docs (docs/*.rst) as doctests.

The documents start and stop their own dispatchers.  When an example fails,
pytest stops that document at once, before it reaches its ``stop()`` calls;
this fixture stops whatever dispatcher the document left running, so that
its threads do not go on claiming from a database nobody will close.
"""

import logging

import pytest

from zasync.queue import wake
from zasync.worker.dispatcher import Dispatcher


def _running_dispatchers():
    # The dispatchers of this process register here to be woken after a
    # commit; it is the one place that knows all of them.
    return [each for each in wake.waiters() if isinstance(each, Dispatcher)]


@pytest.fixture(autouse=True)
def stop_leftover_dispatchers():
    before = set(map(id, _running_dispatchers()))
    yield
    for leftover in _running_dispatchers():
        if id(leftover) not in before:
            leftover.stop(timeout=10)


@pytest.fixture(autouse=True)
def remove_leftover_log_handlers():
    """A document that shows the log (the tutorial) adds a handler to the
    ``zasync`` logger and removes it again; if it stops early, remove it
    here, or the next document would print the log in its own output."""
    logger = logging.getLogger("zasync")
    before = list(logger.handlers)
    yield
    for handler in list(logger.handlers):
        if handler not in before:
            logger.removeHandler(handler)
