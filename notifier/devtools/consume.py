"""``notifier consume URL``: print what arrives on a broker, one JSON line a message.

For trying a broker subscription out, and for the tests: the same URL a subscription
names is read back (``notifier.devtools.consumers``, one module per broker).
"""

from __future__ import annotations

import asyncio
import importlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from notifier.sinks.registry import WEBHOOK, kind_of, require


@dataclass(frozen=True, slots=True)
class Message:
    """One message as it arrived: its body, and its metadata (headers or properties:
    the CloudEvents attributes, content type, the broker's message id)."""

    body: bytes
    metadata: dict[str, str]

    def as_json(self) -> dict[str, Any]:
        try:
            body: Any = json.loads(self.body)
        except ValueError:
            body = self.body.decode("utf-8", "replace")
        return {"metadata": self.metadata, "body": body}


class Consumer(Protocol):
    def __call__(
        self, url: str, emit: Callable[[Message], None], ready: asyncio.Event, stop: asyncio.Event
    ) -> Awaitable[None]:
        """Read ``url`` until ``stop`` is set: ``emit`` each message; ``ready`` once
        subscribed (what is published from then on arrives)."""
        ...


def consumer(url: str) -> Consumer:
    """The consumer for ``url``'s broker; ``ValueError`` or ``MissingExtra`` if none."""
    kind = kind_of(url)
    if kind is WEBHOOK:
        raise ValueError("consume reads brokers; for webhooks run `notifier receiver`")
    require(kind)
    module = importlib.import_module(f"notifier.devtools.consumers.{kind.name}")
    found: Consumer = module.consume
    return found
