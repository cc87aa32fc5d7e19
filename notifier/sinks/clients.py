"""One long-lived client per broker, shared by every subscription that names it.

A client is made on the first attempt that needs it. When an attempt finds it broken,
the sink discards it, and a later attempt makes a new one, no sooner than a backoff
allows: while a broker is down, each attempt fails at once, as a connection error,
instead of each waiting out a connect timeout, and the broker is not hammered.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from notifier.db.errors import retry_delay
from notifier.observability.logging import get_logger
from notifier.observability.redaction import redact_urls_in

log = get_logger("notifier.sinks")

C = TypeVar("C")
K = TypeVar("K", bound=Hashable)


# Of an attempt's timeout, the most a connect may take: a connect that hangs then fails as
# a connect (with backoff for the attempts that follow) before the attempt itself times out.
CONNECT_SHARE = 0.8


class Unreachable(Exception):
    """No client to the broker now: the last connect failed, and the backoff still runs."""


@dataclass
class _Slot(Generic[C]):
    client: C | None = None
    failures: int = 0
    retry_at: float = 0.0  # time.monotonic() before which no connect is tried
    last_error: str = ""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class Clients(Generic[K, C]):
    """Clients by broker (``key``): made by ``connect``, let go by ``close``.

    ``attempt_timeout`` is the sinks' timeout of one attempt; ``describe`` names a broker
    in log lines without its credentials.
    """

    def __init__(
        self,
        connect: Callable[[K], Awaitable[C]],
        close: Callable[[C], Awaitable[None]],
        *,
        attempt_timeout: float,
        describe: Callable[[K], str],
    ) -> None:
        self._connect = connect
        self._close = close
        self._timeout = attempt_timeout * CONNECT_SHARE
        self._describe = describe
        self._slots: dict[K, _Slot[C]] = {}

    async def get(self, key: K) -> C:
        """The broker's client, connecting first if there is none; raises ``Unreachable``."""
        slot = self._slots.setdefault(key, _Slot())
        if slot.client is not None:
            return slot.client
        async with slot.lock:  # one connect at a time per broker; the others wait for it
            if slot.client is not None:
                return slot.client
            if time.monotonic() < slot.retry_at:
                raise Unreachable(slot.last_error)
            try:
                async with asyncio.timeout(self._timeout):
                    slot.client = await self._connect(key)
            except Exception as exc:
                slot.failures += 1
                slot.retry_at = time.monotonic() + retry_delay(slot.failures)
                message = redact_urls_in(str(exc).strip())[:200]
                slot.last_error = (
                    f"{type(exc).__name__}: {message}" if message else type(exc).__name__
                )
                if slot.failures == 1:
                    log.warning(
                        "broker_unreachable", broker=self._describe(key), error=slot.last_error
                    )
                raise Unreachable(slot.last_error) from exc
            if slot.failures:
                log.info("broker_reconnected", broker=self._describe(key), failures=slot.failures)
            slot.failures = 0
            return slot.client

    async def discard(self, key: K, client: C) -> None:
        """Let ``client`` go (an attempt found it broken); the next ``get`` reconnects."""
        slot = self._slots.get(key)
        if slot is None or slot.client is not client:
            return  # already replaced by another attempt
        slot.client = None
        await self._close_quietly(key, client)

    async def close(self) -> None:
        for key, slot in list(self._slots.items()):
            if slot.client is not None:
                client, slot.client = slot.client, None
                await self._close_quietly(key, client)

    async def _close_quietly(self, key: K, client: C) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                await self._close(client)
        except Exception as exc:  # a broken client may fail to close: it is dropped anyway
            log.info("broker_close_failed", broker=self._describe(key), error=type(exc).__name__)
