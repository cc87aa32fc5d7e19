"""Waiting on an event with a time limit, without ever losing a cancellation.

``asyncio.wait_for(event.wait(), seconds)`` on Python 3.11 returns normally when the task
is cancelled just as the event is set: the cancellation is lost, and a loop around it
runs on after shutdown cancelled it, so the daemon never exits. ``asyncio.timeout``
delivers the cancellation in that case too.
"""

from __future__ import annotations

import asyncio


async def wait_set(event: asyncio.Event, seconds: float) -> bool:
    """Whether ``event`` was set within ``seconds``."""
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return False
    return True
