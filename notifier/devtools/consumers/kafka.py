"""Read a ``kafka://`` destination back: every partition of its topic, from the end."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, ConsumerRecord

from notifier.devtools.consume import Message
from notifier.sinks.targets import parse_kafka

POLL_MS = 200  # how long a poll waits for records before ``stop`` is checked again
# How long the broker may hold a fetch back waiting for more records: short, since what
# arrives is printed (and timed, by the benchmark) as it comes.
FETCH_MAX_WAIT_MS = 5


async def consume(
    url: str,
    emit: Callable[[Message], None],
    ready: asyncio.Event,
    stop: asyncio.Event,
    *,
    from_beginning: bool = False,
) -> None:
    """Emit what is published to ``url``'s topic from now on (or, ``from_beginning``,
    all it holds) until ``stop`` is set; ``ready`` once every partition is assigned and
    has a position."""
    target = parse_kafka(url)
    if "{" in target.topic:
        raise ValueError(
            "consume reads one topic: give it by name, not a template with {type} or {topic}"
        )
    consumer = AIOKafkaConsumer(
        target.topic,
        bootstrap_servers=[str(server) for server in target.servers],
        client_id="notifier-consume",
        group_id=None,  # no consumer group: every partition, no committed offsets
        enable_auto_commit=False,
        auto_offset_reset="earliest" if from_beginning else "latest",
        fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
    )
    await consumer.start()
    try:
        while not stop.is_set():
            if not ready.is_set() and consumer.assignment():
                for partition in consumer.assignment():
                    await consumer.position(partition)
                ready.set()
            batches = await consumer.getmany(timeout_ms=POLL_MS if ready.is_set() else 20)
            for records in batches.values():
                for record in records:
                    emit(_message(record))
    finally:
        await consumer.stop()


def _message(record: ConsumerRecord[bytes, bytes]) -> Message:
    metadata = {name: value.decode("utf-8", "replace") for name, value in record.headers}
    if record.key is not None:
        metadata["key"] = record.key.decode("utf-8", "replace")
    return Message(record.value or b"", metadata)
