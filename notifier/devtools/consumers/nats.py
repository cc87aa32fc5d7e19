"""Read a ``nats://`` destination back: an ordered (ephemeral) JetStream consumer on the
subject the URL publishes to, from new messages on."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import nats
from nats.aio.msg import Msg
from nats.js.api import DeliverPolicy

from notifier.devtools.consume import Message
from notifier.sinks.targets import parse_nats

# Seconds between the server's idle heartbeats: two missed, and the ordered consumer is
# made again from the last message it saw (after a server restart, say).
HEARTBEAT_SECONDS = 1.0
# With endless reconnects, nats-py also retries a first connect without end.
CONNECT_SECONDS = 10.0


def filter_subject(template: str) -> str:
    """The subject that captures every name ``template`` renders to: from the first
    token holding a placeholder on, ``>`` (``{type}`` may render to several tokens)."""
    tokens = template.split(".")
    for index, token in enumerate(tokens):
        if "{" in token:
            return ".".join([*tokens[:index], ">"])
    return template


async def _quiet(_error: Exception) -> None:
    """While the server is away, each reconnect fails: not worth a traceback each."""


async def consume(
    url: str, emit: Callable[[Message], None], ready: asyncio.Event, stop: asyncio.Event
) -> None:
    """Emit each message published to ``url``'s subject from now until ``stop`` is set."""
    target = parse_nats(url)
    # Unlike the sink, a consumer rides out a server restart with nats-py's reconnects.
    try:
        async with asyncio.timeout(CONNECT_SECONDS):
            client = await nats.connect(
                [f"nats://{server}" for server in target.servers],
                user=target.user,
                password=target.password,
                token=target.token,
                name="notifier-consume",
                max_reconnect_attempts=-1,
                reconnect_time_wait=1,
                error_cb=_quiet,
            )
    except TimeoutError:
        raise ConnectionError(f"no server answered within {CONNECT_SECONDS:g} s") from None
    try:

        async def on_message(msg: Msg) -> None:
            emit(Message(msg.data, dict(msg.headers or {})))

        await client.jetstream().subscribe(
            filter_subject(target.subject),
            cb=on_message,
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.NEW,
            idle_heartbeat=HEARTBEAT_SECONDS,
        )
        ready.set()
        await stop.wait()
    finally:
        await client.close()
