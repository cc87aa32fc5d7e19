"""What the engine asks of a destination: the Sink protocol and the Outcome it returns."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Protocol

from notifier.envelope import Envelope


class Result(StrEnum):
    """How an attempt ended. Everything but SUCCEEDED is a failed attempt."""

    SUCCEEDED = "succeeded"
    REJECTED = "rejected"  # the destination answered, and did not take the event
    TIMEOUT = "timeout"
    CONNECTION_ERROR = "connection_error"  # refused, reset, DNS, TLS
    REFUSED_TARGET = "refused_target"  # the SSRF guard: the target is not a public address
    CRASHED = "crashed"  # the attempt itself failed unexpectedly: retried like the others


@dataclass(frozen=True, slots=True)
class Outcome:
    result: Result
    code: str  # short and destination-specific: http_204, http_503, timeout, ...
    error: str | None  # a short failure code (``http_503``, ``timeout``, ...) and detail
    started_at: datetime
    duration: float  # seconds
    detail: str  # the start of what the destination answered, as text
    retry_after: float | None = None  # seconds the destination asked the retry to wait
    disable: str | None = None  # the destination is gone for good: disable, with this reason


def crashed(exc: BaseException) -> Outcome:
    """The outcome of an attempt that raised where it should have classified."""
    now = datetime.now(UTC)
    error = f"{Result.CRASHED}: {type(exc).__name__}"
    return Outcome(Result.CRASHED, Result.CRASHED.value, error, now, 0.0, "")


class Sink(Protocol):
    """One kind of destination. ``deliver`` never raises for a failed attempt: it
    classifies it. The engine owns retries, leases and recording; the sink owns the
    protocol, its errors and its destination-specific rules."""

    async def deliver(self, target: str, secrets: tuple[str, ...], envelope: Envelope) -> Outcome:
        """Attempt to hand ``envelope`` to ``target`` once."""
        ...

    async def close(self) -> None:
        """Release connections; called once, at shutdown."""
        ...
