"""The Kafka sink: one record per attempt, acknowledged by every in-sync replica.

One ``AIOKafkaProducer`` per set of bootstrap servers, shared by every subscription that
names it; concurrent attempts share its batches (``LINGER_MS``). The record's key is the
event id, its value the webhook body, its headers the CloudEvents Kafka binding's.

What aiokafka does while a broker is down, and why the settings below: a producer that
already knows the cluster keeps each record queued, retrying the connection, until the
record is older than ``request_timeout_ms``, then fails it with the last error (a
connection error). So ``request_timeout_ms`` is set inside the attempt's timeout, so that
the sink learns why. The producer is then discarded: a new one does not start while the
broker is down (its bootstrap fails at once), so, with the backoff of ``Clients``, the
attempts that follow fail fast. After the broker returns a producer recovers by itself;
a discarded one is replaced on the next attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import re

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    BrokerResponseError,
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    NodeNotReadyError,
    RequestTimedOutError,
    UnknownTopicOrPartitionError,
)

from notifier.envelope import Envelope
from notifier.sinks.base import Attempt, Destination, Outcome, Result
from notifier.sinks.clients import Clients, Unreachable
from notifier.sinks.message import CONTENT_TYPE, cloudevents_attributes, render
from notifier.sinks.registry import SinkOptions
from notifier.sinks.targets import Server, parse_kafka

Servers = tuple[Server, ...]

# A few ms to fill a batch, as Kafka's own clients now default to: each attempt waits
# that long (a record alone was acknowledged by Tansu in 0.7 ms at 0 ms, 6.3 ms at 5 ms),
# but batches of a few records, not one each, keep a broker's request rate (and a
# consumer's fetches) down: at 0 ms, consumers of Tansu fell behind a 200 events/s stream.
LINGER_MS = 5
# Of the attempt's timeout, what aiokafka may spend on a request, or waiting for a topic's
# metadata, before it says why it failed: the rest is left for that answer to arrive.
REQUEST_SHARE = 0.8
_CONNECTION_ERRORS = (KafkaConnectionError, NodeNotReadyError, ConnectionError, OSError)
_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


def make(options: SinkOptions) -> KafkaSink:
    return KafkaSink(options)


def headers(envelope: Envelope, source: str) -> list[tuple[str, bytes]]:
    """The CloudEvents Kafka binding's headers (binary mode), and the content type."""
    attributes = cloudevents_attributes(envelope, source)
    named = [(f"ce_{name}", value.encode()) for name, value in attributes.items()]
    return [*named, ("content-type", CONTENT_TYPE.encode())]


def error_code(exc: KafkaError) -> str:
    """``kafka_`` and the broker's error name (``kafka_message_too_large``)."""
    if isinstance(exc, BrokerResponseError):
        name = str(exc.message).lower()
    else:
        name = _CAMEL.sub("_", type(exc).__name__).lower().removesuffix("_error")
    return f"kafka_{name}"


class KafkaSink:
    """Delivers to ``kafka://`` targets, one producer per set of bootstrap servers."""

    def __init__(self, options: SinkOptions) -> None:
        self._timeout = options.timeout_seconds
        self._source = options.source
        self._clients: Clients[Servers, AIOKafkaProducer] = Clients(
            self._connect,
            _stop,
            attempt_timeout=options.timeout_seconds,
            describe=lambda servers: ",".join(str(s) for s in servers),
        )

    async def _connect(self, servers: Servers) -> AIOKafkaProducer:
        producer = AIOKafkaProducer(
            bootstrap_servers=[str(server) for server in servers],
            client_id="notifier",
            acks="all",
            # Tansu answers the idempotent producer's InitProducerId with UnknownError;
            # duplicates are told apart by the key (the event id) instead.
            enable_idempotence=False,
            linger_ms=LINGER_MS,
            request_timeout_ms=max(1, int(self._timeout * REQUEST_SHARE * 1000)),
        )
        try:
            await producer.start()
        except BaseException:
            await producer.stop()
            raise
        return producer

    async def close(self) -> None:
        await self._clients.close()

    async def deliver(self, destination: Destination, envelope: Envelope) -> Outcome:
        """Send the record once and wait for its acknowledgement; classify a failure."""
        attempt = Attempt()
        failed = attempt.failed
        target = parse_kafka(destination.target)
        topic = render(target.topic, envelope.type)
        producer: AIOKafkaProducer | None = None
        try:
            async with asyncio.timeout(self._timeout):
                producer = await self._clients.get(target.servers)
                try:
                    sent = await producer.send(
                        topic,
                        value=envelope.body,
                        # The ordering key keeps a key's events in one partition, in order.
                        key=(destination.key or str(envelope.id)).encode(),
                        headers=headers(envelope, self._source),
                    )
                    metadata = await sent
                except UnknownTopicOrPartitionError:
                    # A producer whose broker went away forgets the topics it knew,
                    # and then reports each as unknown: ask the servers which it is.
                    if not await _reachable(target.servers):
                        raise KafkaConnectionError("no bootstrap server answers") from None
                    raise
        except Unreachable as exc:
            return failed(Result.CONNECTION_ERROR, str(exc))
        except (TimeoutError, KafkaTimeoutError, RequestTimedOutError):
            return failed(Result.TIMEOUT)
        except UnknownTopicOrPartitionError:
            return failed(Result.REJECTED, f"no topic {topic}", "kafka_unknown_topic")
        except _CONNECTION_ERRORS as exc:
            outcome = failed(Result.CONNECTION_ERROR, type(exc).__name__)
            if producer is not None:
                await self._clients.discard(target.servers, producer)
            return outcome
        except KafkaError as exc:
            code = error_code(exc)
            return failed(Result.REJECTED, type(exc).__name__, code)
        return attempt.succeeded(
            "kafka_ack", f"partition {metadata.partition} offset {metadata.offset}"
        )


async def _reachable(servers: Servers) -> bool:
    """Whether any of ``servers`` accepts a TCP connection."""
    for server in servers:
        try:
            _reader, writer = await asyncio.open_connection(server.host, server.port)
        except OSError:
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True
    return False


async def _stop(producer: AIOKafkaProducer) -> None:
    await producer.stop()
