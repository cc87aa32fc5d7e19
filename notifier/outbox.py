"""The daemon's side of the outbox: fan-out, claiming, leases, settling, the doorbell."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal
from uuid import UUID

import asyncpg

from notifier.db import load_queries

Status = Literal["pending", "succeeded", "dead"]


@dataclass(frozen=True, slots=True)
class Claimed:
    """A delivery this daemon holds a lease on, with what it needs to send it."""

    delivery_id: int
    attempt: int  # attempts started, ever: the fencing token
    schedule_attempt: int  # the attempt's place in the retry schedule (1 = first)
    subscription_id: int
    event_uid: UUID
    event_type: str
    event_created_at: datetime
    data: str  # JSON text: the stored row, its timestamps in the contract's form
    previous: str | None
    url: str
    secrets: tuple[str, ...]  # current secret first, then one being rotated out
    max_in_flight: int | None


@dataclass(frozen=True, slots=True)
class Settlement:
    """What became of one attempt, as recorded in the database."""

    delivery_id: int
    attempt: int
    status: Status
    retry_in: float  # seconds; used when status is pending
    status_code: int | None
    error: str | None
    started_at: datetime
    duration_ms: float
    response_snippet: str


@dataclass(frozen=True, slots=True)
class ClaimResult:
    fanned_events: int
    claimed: list[Claimed]


@dataclass(frozen=True, slots=True)
class Recheck:
    queued: bool
    next_due_in: float | None
    writers_in_progress: bool


@dataclass(frozen=True, slots=True)
class Backlog:
    pending: int
    oldest_age_seconds: float


def _claimed(row: asyncpg.Record) -> Claimed:
    secrets = (
        (row["secret"],)
        if row["previous_secret"] is None
        else (row["secret"], row["previous_secret"])
    )
    return Claimed(
        delivery_id=row["delivery_id"],
        attempt=row["attempts"],
        schedule_attempt=row["attempts"] - row["schedule_offset"],
        subscription_id=row["subscription_id"],
        event_uid=row["event_uid"],
        event_type=row["event_type"],
        event_created_at=row["event_created_at"],
        data=row["data"],
        previous=row["previous"],
        url=row["url"],
        secrets=secrets,
        max_in_flight=row["max_in_flight"],
    )


class Outbox:
    """Every query the daemon runs against the outbox, on a pool."""

    def __init__(self, pool: asyncpg.Pool, lease_seconds: float) -> None:
        self._pool = pool
        self._lease = float(lease_seconds)
        self._q = load_queries("outbox")

    async def claim(
        self,
        *,
        events: int,
        due: int,
        room: Mapping[int, int],
        default_room: int,
        disarm: bool,
    ) -> ClaimResult:
        """Fan out up to ``events`` new events and claim what fits in ``room``."""
        rows = await self._pool.fetch(
            self._q["claim"],
            events,
            self._lease,
            list(room.keys()),
            list(room.values()),
            default_room,
            due,
            disarm,
        )
        claimed = [_claimed(row) for row in rows if row["delivery_id"] is not None]
        return ClaimResult(fanned_events=rows[0]["fanned_events"], claimed=claimed)

    async def settle(self, settlements: Sequence[Settlement]) -> None:
        """Record attempt outcomes and move their deliveries on, in one statement."""
        await self._pool.execute(
            self._q["settle"],
            [s.delivery_id for s in settlements],
            [s.attempt for s in settlements],
            [s.status for s in settlements],
            [s.retry_in for s in settlements],
            [s.status_code for s in settlements],
            [s.error for s in settlements],
            [s.started_at for s in settlements],
            [s.duration_ms for s in settlements],
            [s.response_snippet for s in settlements],
        )

    async def extend_leases(self, held: Sequence[tuple[int, int]]) -> None:
        """Push back the lease expiry of held (delivery id, attempt) pairs."""
        await self._pool.execute(
            self._q["extend_leases"], [h[0] for h in held], [h[1] for h in held], self._lease
        )

    async def release(self, held: Sequence[tuple[int, int]]) -> None:
        """Hand back deliveries that were claimed but never attempted."""
        await self._pool.execute(self._q["release"], [h[0] for h in held], [h[1] for h in held])

    async def arm_doorbell(self) -> None:
        await self._pool.execute(self._q["arm"])

    async def recheck(self, full_subscriptions: Sequence[int]) -> Recheck:
        row = await self._pool.fetchrow(self._q["recheck"], list(full_subscriptions))
        assert row is not None
        return Recheck(row["queued"], row["next_due_in"], row["writers_in_progress"])

    async def disable_subscription(self, subscription_id: int, reason: str) -> bool:
        status = await self._pool.execute(self._q["disable_subscription"], subscription_id, reason)
        return bool(status.endswith(" 1"))

    async def disable_failing(self, failing_seconds: float) -> list[tuple[int, str]]:
        """Disable subscriptions failing with no success for longer than that."""
        rows = await self._pool.fetch(self._q["disable_failing"], float(failing_seconds))
        return [(row["id"], row["disabled_reason"]) for row in rows]

    async def oldest_deliverable_age(self, timeout_seconds: float | None = None) -> float:
        """Seconds the oldest due, deliverable work has been waiting (0 if none)."""
        age = await self._pool.fetchval(self._q["oldest_deliverable"], timeout=timeout_seconds)
        return float(age or 0.0)

    async def backlog(self) -> Backlog:
        row = await self._pool.fetchrow(self._q["backlog"])
        assert row is not None
        return Backlog(row["pending"], row["oldest_age_seconds"] or 0.0)

    async def unvacuumed(self) -> tuple[bool, list[str]]:
        """Whether autovacuum is off for the server, and the notifier tables it is off for."""
        row = await self._pool.fetchrow(self._q["unvacuumed"])
        assert row is not None
        return row["server_off"], list(row["tables_off"])

    async def ping(self, timeout_seconds: float) -> None:
        await self._pool.fetchval(self._q["ping"], timeout=timeout_seconds)
