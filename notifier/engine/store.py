"""The daemon's side of the outbox: fan-out, claiming, leases, settling, the doorbell."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal
from uuid import UUID

import asyncpg

from notifier.db.errors import is_retryable
from notifier.db.pool import load_queries
from notifier.sinks.base import Destination
from notifier.statuses import SettledStatus
from notifier.tracecontext import TraceContext

if TYPE_CHECKING:
    PooledConnection = asyncpg.pool.PoolConnectionProxy[asyncpg.Record]


@dataclass(frozen=True, slots=True)
class Claimed:
    """An event this daemon holds a lease on for one subscription, with what it needs to
    send it: as a delivery of its own, or as one of a batch's events."""

    delivery_id: int | None  # None: the event is one of batch ``batch_id``
    batch_id: int | None
    batch_claimed_at: datetime | None  # a batch's: with ``attempt``, its fencing token
    event_id: int
    attempt: int  # attempts (a batch: claims) started, ever: the fencing token
    schedule_attempt: int  # the attempt's place in the retry schedule (1 = first)
    subscription_id: int
    event_uid: UUID
    event_type: str
    event_created_at: datetime
    data: str  # JSON text: the stored row, its timestamps in the contract's form
    previous: str | None
    trace: TraceContext | None
    destination: Destination
    max_in_flight: int | None

    @property
    def target(self) -> str:
        return self.destination.target

    @property
    def lease(self) -> tuple[int, int]:
        """What holds the lease: (delivery id, attempt), or (batch id, claim) for a batch."""
        held = self.delivery_id if self.delivery_id is not None else self.batch_id
        assert held is not None
        return held, self.attempt


# What became of a batch's event that was never attempted (at shutdown): due again now.
RELEASED: Literal["released"] = "released"
# Work no claim reaches: the doorbell is left as it is.
NEVER_DISARM = 2**31 - 1


@dataclass(frozen=True, slots=True)
class Settlement:
    """What became of one attempt, as recorded in the database."""

    delivery_id: int | None  # None: the attempt was one of batch ``batch_id``
    batch_id: int | None
    batch_claimed_at: datetime | None
    event_id: int
    subscription_id: int
    attempt: int
    status: SettledStatus | Literal["released"]
    retry_in: float  # seconds; used when status is pending
    outcome: str  # a short code: http_204, timeout, ...
    error: str | None
    started_at: datetime
    duration_ms: float
    detail: str  # the start of what the destination answered

    def scrubbed(self) -> Settlement:
        """The same outcome without the text a receiver could have chosen."""
        error = None if self.error is None else self.error.encode("ascii", "replace").decode()
        return replace(self, error=error, detail="")


@dataclass(frozen=True, slots=True)
class ClaimResult:
    fanned_events: int
    claimed: list[Claimed]
    work: int  # new events fanned out, plus due deliveries, freed keys and expired batches
    more: bool  # a position still has events it had no room or batch size left for
    armed: bool  # the doorbell, after this claim
    # Only when the doorbell is armed and the claim found too little to disarm it:
    next_due_in: float | None  # seconds to the next retry or batch lease due; None: none
    writers_in_progress: bool  # another transaction was in progress at the claim
    ordered: bool  # an enabled subscription is ordered


@dataclass(frozen=True, slots=True)
class Backlog:
    pending: int
    oldest_age_seconds: float


def _destination(row: asyncpg.Record) -> Destination:
    secrets = (
        (row["secret"],)
        if row["previous_secret"] is None
        else (row["secret"], row["previous_secret"])
    )
    return Destination(
        row["target"],
        secrets,
        tuple(json.loads(row["headers"]).items()),
        row["format"],
        row["ordering_key"],
        row["subscription_id"],
    )


def _claim_result(rows: list[asyncpg.Record]) -> ClaimResult:
    first = rows[0]
    return ClaimResult(
        fanned_events=first["fanned_events"],
        claimed=_claimed(rows),
        work=first["work"],
        more=first["more"],
        armed=first["armed"],
        next_due_in=first["next_due_in"],
        writers_in_progress=first["writers_in_progress"],
        ordered=first["ordered"],
    )


def _claimed(rows: list[asyncpg.Record]) -> list[Claimed]:
    """The claimed rows as work to send; a batch's events share one destination."""
    shared: dict[int, Destination] = {}
    claimed = []
    for row in rows:
        if row["event_id"] is None:
            continue
        if row["batch_id"] is None:
            destination = _destination(row)
        else:
            destination = shared.get(row["batch_id"]) or shared.setdefault(
                row["batch_id"], _destination(row)
            )
        claimed.append(
            Claimed(
                delivery_id=row["delivery_id"],
                batch_id=row["batch_id"],
                batch_claimed_at=row["batch_claimed_at"],
                event_id=row["event_id"],
                attempt=row["attempts"],
                schedule_attempt=row["attempts"] - row["schedule_offset"],
                subscription_id=row["subscription_id"],
                event_uid=row["event_uid"],
                event_type=row["event_type"],
                event_created_at=row["event_created_at"],
                data=row["data"],
                previous=row["previous"],
                trace=TraceContext.stored(row["traceparent"], row["tracestate"]),
                destination=destination,
                max_in_flight=row["max_in_flight"],
            )
        )
    return claimed


class Outbox:
    """Every query the daemon runs against the outbox, on a pool."""

    def __init__(self, pool: asyncpg.Pool, lease_seconds: float) -> None:
        self._pool = pool
        self._lease = float(lease_seconds)
        self._q = load_queries("outbox")

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[PooledConnection]:
        """A pooled connection that is closed, never reused, after a lost or cut operation."""
        async with self._pool.acquire() as conn:
            try:
                yield conn
            except BaseException as exc:
                if is_retryable(exc) or isinstance(exc, asyncio.CancelledError):
                    conn.terminate()
                raise

    async def _fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        async with self._connection() as conn:
            return await conn.fetch(self._q[query], *args)

    async def _fetchrow(self, query: str, *args: Any) -> asyncpg.Record:
        async with self._connection() as conn:
            row = await conn.fetchrow(self._q[query], *args)
        assert row is not None
        return row

    async def _fetchval(self, query: str, *args: Any, seconds: float | None = None) -> Any:
        async with self._connection() as conn:
            return await conn.fetchval(self._q[query], *args, timeout=seconds)

    async def _execute(self, query: str, *args: Any) -> str:
        async with self._connection() as conn:
            return str(await conn.execute(self._q[query], *args))

    async def claim(
        self,
        *,
        events: int,
        due: int,
        room: Mapping[int, int],
        default_room: int,
        disarm_at: int | None = None,
    ) -> ClaimResult:
        """Fan out up to ``events`` new events and claim what fits in ``room``; disarm the
        doorbell if the work found reaches ``disarm_at`` (None: leave it as it is)."""
        rows = await self._fetch(
            "claim",
            events,
            self._lease,
            list(room.keys()),
            list(room.values()),
            default_room,
            due,
            NEVER_DISARM if disarm_at is None else disarm_at,
        )
        return _claim_result(rows)

    async def claim_new(
        self,
        *,
        events: int,
        room: Mapping[int, int],
        default_room: int,
        disarm_at: int | None = None,
    ) -> ClaimResult:
        """Claim new events of unordered subscriptions only, as ``claim`` does, without
        looking for due retries, expired leases or ordered subscriptions' work."""
        rows = await self._fetch(
            "claim_new",
            events,
            self._lease,
            list(room.keys()),
            list(room.values()),
            default_room,
            NEVER_DISARM if disarm_at is None else disarm_at,
        )
        return _claim_result(rows)

    async def settle(self, settlements: Sequence[Settlement]) -> None:
        """Record attempt outcomes and move their deliveries on, in one statement.

        A batch's settlements come together, one for each of its events, in its order.
        """
        await self._execute(
            "settle",
            [s.delivery_id for s in settlements],
            [s.batch_id for s in settlements],
            [s.event_id for s in settlements],
            [s.attempt for s in settlements],
            [s.status for s in settlements],
            [s.retry_in for s in settlements],
            [s.outcome for s in settlements],
            [s.error for s in settlements],
            [s.started_at for s in settlements],
            [s.duration_ms for s in settlements],
            [s.detail for s in settlements],
            [s.subscription_id for s in settlements],
            [s.batch_claimed_at for s in settlements],
        )

    async def extend_leases(
        self, deliveries: Sequence[tuple[int, int]], batches: Sequence[tuple[int, int]]
    ) -> None:
        """Push back the leases of held (delivery id, attempt) and (batch id, claim) pairs."""
        await self._execute(
            "extend_leases",
            [h[0] for h in deliveries],
            [h[1] for h in deliveries],
            self._lease,
            [h[0] for h in batches],
            [h[1] for h in batches],
        )

    async def release(self, held: Sequence[tuple[int, int]]) -> None:
        """Hand back deliveries that were claimed but never attempted."""
        await self._execute("release", [h[0] for h in held], [h[1] for h in held])

    async def arm_doorbell(self) -> None:
        await self._execute("arm")

    async def disable_subscription(self, subscription_id: int, reason: str) -> bool:
        status = await self._execute("disable_subscription", subscription_id, reason)
        return status.endswith(" 1")

    async def disable_failing(self, failing_seconds: float) -> list[tuple[int, str]]:
        """Disable subscriptions failing with no success for longer than that."""
        rows = await self._fetch("disable_failing", float(failing_seconds))
        return [(row["id"], row["disabled_reason"]) for row in rows]

    async def oldest_deliverable_age(self, timeout_seconds: float | None = None) -> float:
        """Seconds the oldest due, deliverable work has been waiting (0 if none)."""
        age = await self._fetchval("oldest_deliverable", seconds=timeout_seconds)
        return float(age or 0.0)

    async def backlog(self) -> Backlog:
        row = await self._fetchrow("backlog")
        return Backlog(row["pending"], row["oldest_age_seconds"] or 0.0)

    async def unvacuumed(self) -> tuple[bool, list[str]]:
        """Whether autovacuum is off for the server, and the notifier tables it is off for."""
        row = await self._fetchrow("unvacuumed")
        return row["server_off"], list(row["tables_off"])

    async def ping(self, timeout_seconds: float) -> None:
        await self._fetchval("ping", seconds=timeout_seconds)

    async def schema_version(self) -> int:
        """The newest migration applied to the database (0 before the first)."""
        try:
            return int(await self._fetchval("schema_version"))
        except asyncpg.UndefinedTableError:
            return 0
