"""What an operator does when something went wrong downstream: inspect, redeliver,
recover and replay. One module used by the API and the CLI.

Recovery and replay walk the events of a time range in batches through the uid index
(uids are time-ordered), each batch one short statement, so a range of millions of
events never becomes one long transaction holding locks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

import asyncpg

from notifier.db.pool import load_queries
from notifier.envelope import optional_timestamp
from notifier.statuses import DELIVERY_STATUSES, UNFINISHED

DEFAULT_BATCH_SIZE = 1000
ScheduleMode = Literal["recover", "replay", "replay_again"]


class OperationError(Exception):
    """An operation cannot be done; ``kind`` is ``not-found``, ``in-flight`` or
    ``invalid`` (the request itself makes no sense)."""

    def __init__(self, kind: Literal["not-found", "in-flight", "invalid"], message: str) -> None:
        super().__init__(message)
        self.kind = kind


def check_replay_range(since: datetime, until: datetime | None) -> None:
    """Raise ValueError unless the range [since, until) holds a moment: one that ends
    where or before it starts would replay nothing, silently, so it is a mistake."""
    if until is not None and until <= since:
        raise ValueError(
            f"until ({optional_timestamp(until)}) must be later than since ({optional_timestamp(since)})"
        )


# How asyncpg reads 'infinity': the next attempt of a delivery waiting behind an earlier
# event of its key (an ordered subscription) is not scheduled, and shown as null.
_WAITING = datetime.max


def _next_attempt(row: asyncpg.Record) -> str | None:
    if row["status"] not in UNFINISHED or row["next_attempt_at"] == _WAITING:
        return None
    return optional_timestamp(row["next_attempt_at"])


def _delivery(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": row["id"],
        "batch_id": row.get("batch_id"),
        "event_id": str(row["event_uid"]),
        "subscription_id": row["subscription_id"],
        "status": row["status"],
        "attempts": row["attempts"],
        "next_attempt_at": _next_attempt(row),
        "last_attempt_at": optional_timestamp(row["last_attempt_at"]),
        "last_outcome": row["last_outcome"],
        "last_status_code": row["last_status_code"],
        "last_error": row["last_error"],
        "completed_at": optional_timestamp(row["completed_at"]),
        "created_at": optional_timestamp(row["created_at"]),
    }


def _attempt(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "attempt": row["attempt"],
        "started_at": optional_timestamp(row["started_at"]),
        "duration_ms": round(row["duration_ms"], 3),
        "outcome": row["outcome"],
        "status_code": row["status_code"],
        "error": row["error"],
        "response_snippet": row["detail"],
    }


def _attempt_log(
    delivery: asyncpg.Record, by_delivery: dict[int, list[dict[str, Any]]]
) -> list[dict[str, Any]]:
    """A delivery's attempts; a batch's success is the one attempt it took."""
    if delivery["id"] is not None:
        return by_delivery.get(delivery["id"], [])
    if delivery["status"] != "succeeded":
        return []  # in flight: its outcome is not known yet
    return [
        {
            "attempt": delivery["attempts"],
            "started_at": optional_timestamp(delivery["last_attempt_at"]),
            "duration_ms": round(delivery["duration_ms"], 3),
            "outcome": delivery["last_outcome"],
            "status_code": delivery["last_status_code"],
            "error": None,
            "response_snippet": "",
        }
    ]


@dataclass
class Scheduled:
    """What a recovery or replay scheduled: new deliveries and reset ones."""

    subscription_id: int
    created: int = 0
    reset: int = 0
    events_scanned: int = 0
    batches: int = 0
    subscription_enabled: bool = True

    def as_dict(self) -> dict[str, Any]:
        return {
            "subscription_id": self.subscription_id,
            "created": self.created,
            "reset": self.reset,
            "scheduled": self.created + self.reset,
            "events_scanned": self.events_scanned,
            "subscription_enabled": self.subscription_enabled,
        }


class Operations:
    """Inspection and redelivery on a pool (or one connection)."""

    def __init__(
        self,
        db: asyncpg.Pool | asyncpg.Connection,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> None:
        self._db = db
        self._batch = batch_size
        self._q = load_queries("operations")

    async def event(self, uid: UUID) -> dict[str, Any] | None:
        """The event, and per subscription its delivery and every attempt."""
        event = await self._db.fetchrow(self._q["event"], uid)
        if event is None:
            return None
        deliveries = await self._db.fetch(self._q["event_deliveries"], event["id"])
        attempts = await self._db.fetch(
            self._q["attempts"], [d["id"] for d in deliveries if d["id"] is not None]
        )
        by_delivery: dict[int, list[dict[str, Any]]] = {}
        for row in attempts:
            by_delivery.setdefault(row["delivery_id"], []).append(_attempt(row))
        return {
            "id": str(event["uid"]),
            "type": event["type"],
            "table": f"{event['table_schema']}.{event['table_name']}",
            "op": event["op"],
            "timestamp": optional_timestamp(event["created_at"]),
            "data": json.loads(event["data"]),
            "previous": json.loads(event["previous"]) if event["previous"] else None,
            "traceparent": event["traceparent"],
            "tracestate": event["tracestate"],
            "fanned_out": not event["queued"],
            "deliveries": [
                {**_delivery(d), "attempt_log": _attempt_log(d, by_delivery)} for d in deliveries
            ],
        }

    async def deliveries(
        self,
        *,
        status: str | None = None,
        subscription_id: int | None = None,
        since: datetime | None = None,
        after: int = 0,
        limit: int = 50,
    ) -> list[dict[str, Any]]:
        """Deliveries in id order after ``after``, filtered by what is given."""
        rows = await self._db.fetch(
            self._q["deliveries"], after, status, subscription_id, since, limit
        )
        return [_delivery(row) for row in rows]

    async def stats(self, subscription_id: int) -> dict[str, Any] | None:
        """Delivery counts by status, and the subscription's health."""
        row = await self._db.fetchrow(self._q["stats"], subscription_id)
        if row is None:
            return None
        counts = dict.fromkeys(DELIVERY_STATUSES, 0) | json.loads(row["counts"])
        return {
            "subscription_id": row["id"],
            "enabled": row["enabled"],
            "disabled_reason": row["disabled_reason"],
            "disabled_at": optional_timestamp(row["disabled_at"]),
            "deliveries": counts,
            "waiting": row["waiting"],
            "keys_held_back": row["keys_held_back"],
            "last_success_at": optional_timestamp(row["last_success_at"]),
            "last_failure_at": optional_timestamp(row["last_failure_at"]),
            "last_error": row["last_error"],
            "failing_since": optional_timestamp(row["failing_since"]),
            "consecutive_failures": row["consecutive_failures"],
        }

    async def retry(self, delivery_id: int) -> dict[str, Any]:
        """Schedule one delivery again, now, with a fresh retry schedule."""
        row = await self._db.fetchrow(self._q["retry"], delivery_id)
        if row is None:
            raise OperationError("not-found", f"delivery {delivery_id} does not exist")
        if not row["retried"]:
            raise OperationError(
                "in-flight", f"delivery {delivery_id} is being attempted right now"
            )
        await self._db.execute(self._q["ring"])
        delivery = await self._db.fetchrow(self._q["delivery"], delivery_id)
        assert delivery is not None
        return _delivery(delivery)

    async def recover(self, subscription_id: int, since: datetime) -> Scheduled:
        """Schedule again every dead or failed delivery of events captured since
        ``since``, and deliver the events the subscription missed while disabled."""
        return await self._schedule(subscription_id, "recover", since, None)

    async def replay(
        self, subscription_id: int, start: datetime, end: datetime | None, *, again: bool
    ) -> Scheduled:
        """Deliver the events captured in [start, end) to the subscription, whether or
        not it existed then; with ``again``, also those it received before."""
        try:
            check_replay_range(start, end)
        except ValueError as exc:
            raise OperationError("invalid", str(exc)) from None
        return await self._schedule(
            subscription_id, "replay_again" if again else "replay", start, end
        )

    async def _schedule(
        self, subscription_id: int, mode: ScheduleMode, start: datetime, end: datetime | None
    ) -> Scheduled:
        enabled = await self._db.fetchval(self._q["subscription_exists"], subscription_id)
        if enabled is None:
            raise OperationError("not-found", f"subscription {subscription_id} does not exist")
        result = Scheduled(subscription_id, subscription_enabled=enabled)
        after: UUID | None = None
        while True:
            row = await self._db.fetchrow(
                self._q["schedule_batch"], subscription_id, after, start, end, mode, self._batch
            )
            assert row is not None
            result.batches += 1
            result.events_scanned += row["scanned"]
            result.created += row["created"]
            result.reset += row["reset"]
            if row["created"] or row["reset"]:
                await self._db.execute(self._q["ring"])
            if row["scanned"] < self._batch:
                return result
            after = row["last_uid"]
