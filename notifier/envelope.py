"""The event as every destination receives it, and the contract's one timestamp format."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

from notifier.tracecontext import TraceContext


def timestamp(moment: datetime) -> str:
    """The contract's form of a moment: UTC, microseconds, ``Z``
    (``2026-11-21T20:00:00.123456Z``). Every timestamp the product prints has it."""
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def optional_timestamp(moment: datetime | None) -> str | None:
    return None if moment is None else timestamp(moment)


@dataclass(frozen=True, slots=True)
class Envelope:
    """One event, its body built once: what a sink sends, whatever the destination."""

    id: UUID
    type: str
    created_at: datetime
    body: bytes
    # The trace the change was made in, passed on as headers or message metadata.
    trace: TraceContext | None = None

    @classmethod
    def of(
        cls,
        event_id: UUID,
        event_type: str,
        created_at: datetime,
        data: str,
        previous: str | None,
        trace: TraceContext | None = None,
    ) -> Envelope:
        """The event contract's JSON; ``data`` and ``previous`` are JSON text, as stored."""
        body = (
            f'{{"id":"{event_id}","type":{json.dumps(event_type)},'
            f'"timestamp":"{timestamp(created_at)}",'
            f'"data":{data},"previous":{previous or "null"}}}'
        ).encode()
        return cls(event_id, event_type, created_at, body, trace)
