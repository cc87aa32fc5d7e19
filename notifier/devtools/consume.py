"""``notifier consume URL``: print what arrives on a broker, one JSON line a message.

For trying a broker subscription out, and for the tests: the same URL a subscription
names is read back (``notifier.devtools.consumers``, one module per broker).
"""

from __future__ import annotations

import asyncio
import importlib
import json
import signal
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from notifier.observability.redaction import redact_urls_in
from notifier.sinks.registry import WEBHOOK, MissingExtra, kind_of, require
from notifier.sinks.targets import masked


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
    ) -> Coroutine[Any, Any, None]:
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


class ConsumeError(Exception):
    """The broker could not be read: the message names it, without credentials."""


async def print_messages(url: str, *, count: int | None, seconds: float | None) -> int:
    """Print each message on ``url`` as a JSON line until ``count`` arrived, ``seconds``
    passed, or SIGINT/SIGTERM; returns how many were printed."""
    try:
        read = consumer(url)
    except (ValueError, MissingExtra) as exc:
        raise ConsumeError(str(exc)) from None
    printed = 0
    ready, stop = asyncio.Event(), asyncio.Event()

    def emit(message: Message) -> None:
        nonlocal printed
        if count is not None and printed >= count:
            return
        print(json.dumps(message.as_json()), flush=True)
        printed += 1
        if count is not None and printed >= count:
            stop.set()

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    if seconds is not None:
        loop.call_later(seconds, stop.set)
    try:
        await read(url, emit, ready, stop)
    except Exception as exc:
        detail = redact_urls_in(str(exc).strip())[:300]
        shown = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
        raise ConsumeError(f"cannot consume {masked(url)}: {shown}") from None
    return printed
