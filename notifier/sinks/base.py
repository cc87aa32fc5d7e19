"""What the engine asks of a destination: the Sink protocol and the Outcome it returns."""

from __future__ import annotations

import time
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
    UNAVAILABLE = "unavailable"  # this daemon cannot reach such destinations (a missing extra)


FORMATS = ("standard-webhooks", "cloudevents")


@dataclass(frozen=True, slots=True)
class Destination:
    """Where one delivery goes, as its subscription says."""

    target: str  # a URL whose scheme names the sink
    secrets: tuple[str, ...] = ()  # signing secrets: current first, then one being rotated out
    headers: tuple[tuple[str, str], ...] = ()  # extra HTTP headers (secret values)
    format: str = "standard-webhooks"  # or "cloudevents" (HTTP: structured mode)
    key: str | None = None  # the delivery's ordering key, when its subscription is ordered
    subscription_id: int = 0  # whose delivery it is (FIFO destinations group by it)


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
    return failure(Result.CRASHED, type(exc).__name__, datetime.now(UTC), 0.0)


def failure(
    result: Result, detail: str, started_at: datetime, duration: float, code: str | None = None
) -> Outcome:
    """A failed attempt whose error reads ``code: detail`` (code defaults to the result)."""
    code = code or result.value
    error = f"{code}: {detail}" if detail else code
    return Outcome(result, code, error, started_at, duration, "")


class Sink(Protocol):
    """One kind of destination. ``deliver`` never raises for a failed attempt: it
    classifies it. The engine owns retries, leases and recording; the sink owns the
    protocol, its errors and its destination-specific rules."""

    async def deliver(self, destination: Destination, envelope: Envelope) -> Outcome:
        """Attempt to hand ``envelope`` to ``destination`` once."""
        ...

    async def close(self) -> None:
        """Release connections; called once, at shutdown."""
        ...


class Attempt:
    """The clock of one attempt, and the outcomes it can end with."""

    __slots__ = ("_start", "started_at")

    def __init__(self) -> None:
        self.started_at = datetime.now(UTC)
        self._start = time.perf_counter()

    @property
    def duration(self) -> float:
        return time.perf_counter() - self._start

    def succeeded(self, code: str, detail: str = "") -> Outcome:
        return Outcome(Result.SUCCEEDED, code, None, self.started_at, self.duration, detail)

    def failed(self, result: Result, detail: str = "", code: str | None = None) -> Outcome:
        return failure(result, detail, self.started_at, self.duration, code)
