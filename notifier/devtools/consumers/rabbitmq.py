"""Read an ``amqp(s)://`` destination back.

With ``?exchange=X`` a queue of its own (exclusive, deleted when this consumer goes)
is bound to X with the routing key, its placeholders widened to ``#``. With only
``?routing_key=QUEUE`` (the default exchange routes by queue name), that queue is read:
its messages are taken off it.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

import aio_pika
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue

from notifier.devtools.consume import Message
from notifier.sinks.message import PLACEHOLDERS
from notifier.sinks.targets import AmqpTarget, parse_amqp


def binding_key(template: str) -> str:
    """The routing key to bind with: every placeholder matches any words."""
    for placeholder in PLACEHOLDERS:
        template = template.replace(placeholder, "#")
    return template


def metadata(message: AbstractIncomingMessage) -> dict[str, str]:
    """The message's properties that say what it is, and every header, as text."""
    properties = {
        "message_id": message.message_id,
        "type": message.type,
        "content_type": message.content_type,
        "app_id": message.app_id,
        "delivery_mode": None if message.delivery_mode is None else str(int(message.delivery_mode)),
        "timestamp": None if message.timestamp is None else message.timestamp.isoformat(),
        "exchange": message.exchange,
        "routing_key": message.routing_key,
    }
    found = {name: value for name, value in properties.items() if value is not None}
    for name, value in (message.headers or {}).items():
        found[name] = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return found


async def _queue(channel: aio_pika.abc.AbstractChannel, target: AmqpTarget) -> AbstractQueue:
    if target.exchange:
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(target.exchange, routing_key=binding_key(target.routing_key))
        return queue
    if binding_key(target.routing_key) != target.routing_key:
        raise ValueError(
            "the default exchange routes by queue name: a routing_key with placeholders "
            "names many queues; consume one of them (?routing_key=QUEUE)"
        )
    return await channel.get_queue(target.routing_key, ensure=True)


async def consume(
    url: str,
    emit: Callable[[Message], None],
    ready: asyncio.Event,
    stop: asyncio.Event,
) -> None:
    """Emit what arrives for ``url`` until ``stop`` is set."""
    target = parse_amqp(url)
    connection = await aio_pika.connect(
        target.connection_url,
        client_properties={"connection_name": f"notifier consume pid {os.getpid()}"},
    )
    async with connection:
        channel = await connection.channel()
        queue = await _queue(channel, target)

        async def on_message(message: AbstractIncomingMessage) -> None:
            emit(Message(message.body, metadata(message)))

        tag = await queue.consume(on_message, no_ack=True)
        ready.set()
        await stop.wait()
        await queue.cancel(tag)
