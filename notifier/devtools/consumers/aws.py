"""Read an ``sqs://`` destination back: long-poll the queue, print each message's body and
attributes, and delete what was read (an SNS topic or an EventBridge bus is read through
a queue subscribed to it)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from aiobotocore.session import get_session

from notifier.devtools.consume import Message
from notifier.sinks.targets import parse_sqs

# Seconds a receive waits for messages (the service's longest is 20); ``stop`` ends it early.
WAIT_SECONDS = 10
# What a FIFO message carries besides its attributes, shown with them.
SYSTEM_ATTRIBUTES = ("MessageGroupId", "MessageDeduplicationId")


def metadata(message: dict[str, Any]) -> dict[str, str]:
    """A message's String attributes, and its FIFO group and de-duplication ids."""
    shown = {
        name: str(value.get("StringValue", ""))
        for name, value in message.get("MessageAttributes", {}).items()
    }
    system = message.get("Attributes", {})
    shown.update({name: str(system[name]) for name in SYSTEM_ATTRIBUTES if name in system})
    return shown


async def consume(
    url: str, emit: Callable[[Message], None], ready: asyncio.Event, stop: asyncio.Event
) -> None:
    """Emit each message in ``url``'s queue (those already there too) until ``stop`` is set."""
    if not url.lower().startswith("sqs://"):
        raise ValueError(
            "consume reads sqs:// queues: subscribe a queue to the topic or bus, and read it"
        )
    target = parse_sqs(url)
    async with get_session().create_client("sqs", region_name=target.region) as client:
        queue_url = (await client.get_queue_url(QueueName=target.name))["QueueUrl"]
        ready.set()
        stopping = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                receive = asyncio.create_task(
                    client.receive_message(
                        QueueUrl=queue_url,
                        MaxNumberOfMessages=10,
                        WaitTimeSeconds=WAIT_SECONDS,
                        MessageAttributeNames=["All"],
                        MessageSystemAttributeNames=list(SYSTEM_ATTRIBUTES),
                    )
                )
                await asyncio.wait({receive, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if not receive.done():
                    receive.cancel()  # what it would have read stays in the queue
                    with contextlib.suppress(asyncio.CancelledError):
                        await receive
                    break
                read = []
                for message in receive.result().get("Messages", []):
                    if stop.is_set():
                        break  # not emitted: left in the queue
                    emit(Message(str(message["Body"]).encode(), metadata(message)))
                    read.append(message["ReceiptHandle"])
                if read:
                    await client.delete_message_batch(
                        QueueUrl=queue_url,
                        Entries=[{"Id": str(i), "ReceiptHandle": h} for i, h in enumerate(read)],
                    )
        finally:
            stopping.cancel()
