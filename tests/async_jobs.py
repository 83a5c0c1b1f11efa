"""``async def`` jobs for tests/test_aio_agent.py and bench/asyncio_agent.py
(importable by name, as every job's callable must be)."""

import asyncio


async def nap(seconds, value):
    """Wait `seconds` on the event loop, then return `value`."""
    await asyncio.sleep(seconds)
    return value


async def fail_after(seconds, message):
    await asyncio.sleep(seconds)
    raise ValueError(message)


def plain(value):
    """A plain function: the agent calls it on the loop and stores what it
    returned."""
    return value * 2


def doze(seconds, value):
    """The same wait for a thread: `time.sleep` holds the thread."""
    import time
    time.sleep(seconds)
    return value
