"""Which sink serves which URL scheme, and the optional extra each one needs.

A subscription's URL scheme picks its sink. The broker sinks need client libraries
that are optional extras; a sink is imported on first use, so a daemon without an
extra delivers to every other kind, and fails attempts to that kind with a message
naming the extra to install.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

from notifier.envelope import Envelope
from notifier.observability.logging import get_logger
from notifier.sinks.base import Destination, Outcome, Result, Sink, failure

log = get_logger("notifier.sinks")


@dataclass(frozen=True, slots=True)
class Kind:
    """One kind of destination."""

    name: str  # the metrics' ``sink`` label: webhook, rabbitmq, kafka, nats, aws
    module: str  # the module of its sink, imported on first use
    library: str | None  # the client library it needs, when that is an optional extra
    extra: str | None  # the extra that installs it


WEBHOOK = Kind("webhook", "notifier.sinks.http", None, None)
RABBITMQ = Kind("rabbitmq", "notifier.sinks.amqp", "aio_pika", "rabbitmq")
KAFKA = Kind("kafka", "notifier.sinks.kafka", "aiokafka", "kafka")
NATS = Kind("nats", "notifier.sinks.nats", "nats", "nats")
AWS = Kind("aws", "notifier.sinks.aws", "aiobotocore", "aws")

SCHEMES: dict[str, Kind] = {
    "http": WEBHOOK,
    "https": WEBHOOK,
    "amqp": RABBITMQ,
    "amqps": RABBITMQ,
    "kafka": KAFKA,
    "nats": NATS,
    "sqs": AWS,
    "sns": AWS,
    "eventbridge": AWS,
}
KINDS = tuple(dict.fromkeys(SCHEMES.values()))


def kind_of(url: str) -> Kind:
    """The kind of destination ``url`` names; ValueError for a scheme no sink serves."""
    scheme = urlsplit(url).scheme.lower()
    try:
        return SCHEMES[scheme]
    except KeyError:
        raise ValueError(
            f"no destination is served by {scheme or 'a URL without'} scheme"
        ) from None


def label(url: str) -> str:
    """The ``sink`` label of ``url``'s kind in metrics and log lines."""
    try:
        return kind_of(url).name
    except ValueError:
        return "unknown"


class MissingExtra(Exception):
    """The client library a kind of destination needs is not installed."""

    def __init__(self, kind: Kind) -> None:
        schemes = " and ".join(f"{s}://" for s, k in SCHEMES.items() if k is kind)
        super().__init__(
            f"{schemes} destinations need the {kind.extra} extra: "
            f"pip install 'notifier[{kind.extra}]'"
        )
        self.kind = kind


def require(kind: Kind) -> None:
    """Raise ``MissingExtra`` unless ``kind``'s client library can be imported."""
    if kind.library is None:
        return
    try:
        importlib.import_module(kind.library)
    except ImportError:
        raise MissingExtra(kind) from None


@dataclass(frozen=True, slots=True)
class SinkOptions:
    """What every sink is made with (from the daemon's settings)."""

    timeout_seconds: float  # one attempt, connecting included
    max_connections: int  # HTTP: the connection pool's size
    allow_private: bool = False  # HTTP: deliver to private and loopback addresses
    source: str = "notifier"  # CloudEvents ``source`` of every event


def sink_factory(kind: Kind) -> Callable[[SinkOptions], Sink]:
    """Import ``kind``'s sink module; ``MissingExtra`` when its library is not installed."""
    require(kind)
    factory: Callable[[SinkOptions], Sink] = importlib.import_module(kind.module).make
    return factory


class Sinks:
    """Every kind of destination behind one ``Sink``: each delivery goes to the sink its
    target's scheme names, made on its first use and kept until ``close``."""

    def __init__(self, options: SinkOptions) -> None:
        self._options = options
        self._sinks: dict[str, Sink] = {}
        self._missing: set[str] = set()
        self._making = asyncio.Lock()

    async def deliver(self, destination: Destination, envelope: Envelope) -> Outcome:
        kind = kind_of(destination.target)
        sink = self._sinks.get(kind.name)
        if sink is None:
            try:
                sink = await self._make(kind)
            except MissingExtra as exc:
                if kind.name not in self._missing:  # once per kind, not once per event
                    self._missing.add(kind.name)
                    log.error("sink_unavailable", sink=kind.name, error=str(exc))
                return failure(
                    Result.UNAVAILABLE, str(exc), datetime.now(UTC), 0.0, "missing_extra"
                )
        return await sink.deliver(destination, envelope)

    async def prepare(self, kind: Kind) -> None:
        """Make ``kind``'s sink now (at start-up), not on the first delivery to it."""
        await self._make(kind)

    async def _make(self, kind: Kind) -> Sink:
        async with self._making:  # one sink per kind, however many deliveries wait for it
            if (sink := self._sinks.get(kind.name)) is None:
                # A client library's first import takes a while: not on the event loop,
                # where every other delivery would wait for it.
                factory = await asyncio.to_thread(sink_factory, kind)
                sink = self._sinks[kind.name] = factory(self._options)
            return sink

    async def close(self) -> None:
        for sink in self._sinks.values():
            await sink.close()
        self._sinks.clear()
