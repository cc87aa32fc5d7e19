"""What every broker test shares: skipping (or failing) when a broker is missing, rows
written by SQL, and messages read back through ``notifier consume``'s consumers."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from typing import NoReturn

import pytest

from notifier.devtools.consume import Message, consumer
from notifier.devtools.receiver import Receiver

# Set by .ci/run where the services answer: a broker test that cannot reach its broker
# then fails instead of skipping.
REQUIRED = os.environ.get("NOTIFIER_REQUIRE_BROKERS", "") not in ("", "0", "false")


def unavailable(what: str, how: str) -> NoReturn:
    """Skip (fail under NOTIFIER_REQUIRE_BROKERS): ``what`` is missing; ``how`` to provide it."""
    message = f"{what} is not available: {how}"
    if REQUIRED:
        pytest.fail(message)
    pytest.skip(message)


class Collected:
    """Messages read from a broker URL by a running consumer."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    def by_event_id(self) -> dict[str, list[Message]]:
        grouped: dict[str, list[Message]] = {}
        for message in self.messages:
            grouped.setdefault(str(message.as_json()["body"]["id"]), []).append(message)
        return grouped


@contextlib.asynccontextmanager
async def consuming(url: str, ready_within: float = 15.0) -> AsyncIterator[Collected]:
    """Consume ``url`` in the background from the moment this returns until the block ends."""
    collected = Collected()
    ready, stop = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(consumer(url)(url, collected.messages.append, ready, stop))
    try:
        waiter = asyncio.create_task(ready.wait())
        try:
            async with asyncio.timeout(ready_within):
                await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if task.done():
            task.result()  # raises what stopped it
        yield collected
    finally:
        stop.set()
        try:
            async with asyncio.timeout(10):
                await task
        except TimeoutError:
            task.cancel()


def webhook_bodies(receiver: Receiver, path: str = "/hook") -> dict[str, bytes]:
    """The bodies a webhook subscription on ``path`` received, by event id: what each
    broker message's body must equal."""
    return {r.headers["webhook-id"]: r.body for r in receiver.by_path()[path]}
