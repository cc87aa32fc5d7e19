"""Retention: old, finished events leave the outbox in small, short, bounded batches.

An event goes once it is older than the retention period, has been fanned out, and every
delivery of it is final: succeeded, or dead for longer than the dead-letter retention.
Each batch is its own transaction with a lock and statement budget, so retention never
holds locks for long and never makes writers or the daemon wait beyond that budget.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import asyncpg

from notifier.db.pool import load_queries
from notifier.observability import metrics
from notifier.observability.logging import get_logger

log = get_logger("notifier.retention")

Conn = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy


@dataclass(frozen=True)
class RetentionPolicy:
    retention_seconds: float
    dead_letter_retention_seconds: float
    batch_size: int
    batch_budget_ms: int


@dataclass
class RetentionRun:
    """What a run did; ``ran`` is False when another run held the lock."""

    ran: bool = True
    deleted: int = 0
    batches: int = 0
    timed_out_batches: int = 0
    batch_seconds: list[float] = field(default_factory=list)
    batches_deleted: int = 0  # records of delivered batches, once their events are gone

    def as_dict(self) -> dict[str, object]:
        return {
            "ran": self.ran,
            "deleted": self.deleted,
            "batches": self.batches,
            "timed_out_batches": self.timed_out_batches,
            "longest_batch_ms": round(max(self.batch_seconds, default=0.0) * 1000, 1),
            "delivery_batches_deleted": self.batches_deleted,
        }


# A batch that ran out of budget is retried this many times at half the size.
MAX_SHRINKS = 4


async def run_retention(conn: Conn, policy: RetentionPolicy) -> RetentionRun:
    """Delete what retention allows, batch by batch, unless another run is under way."""
    queries = load_queries("retention")
    if not await conn.fetchval(queries["try_lock"]):
        return RetentionRun(ran=False)
    try:
        run = await _purge(conn, policy, queries)
        run.batches_deleted = await _purge_batches(conn, policy, queries)
        log.info("retention_done", **run.as_dict())
        return run
    finally:
        await conn.fetchval(queries["unlock"])


async def _purge(conn: Conn, policy: RetentionPolicy, queries: Mapping[str, str]) -> RetentionRun:
    run = RetentionRun()
    after, size, shrinks = 0, policy.batch_size, 0
    budget = f"{policy.batch_budget_ms}ms"
    while True:
        started = time.perf_counter()
        try:
            async with conn.transaction():
                await conn.execute(queries["budget"], budget)
                row = await conn.fetchrow(
                    queries["purge_batch"],
                    after,
                    size,
                    policy.retention_seconds,
                    policy.dead_letter_retention_seconds,
                )
        except (asyncpg.LockNotAvailableError, asyncpg.QueryCanceledError) as exc:
            run.batch_seconds.append(time.perf_counter() - started)
            run.timed_out_batches += 1
            log.warning("retention_batch_over_budget", batch_size=size, error=type(exc).__name__)
            if shrinks >= MAX_SHRINKS:
                break  # the next run tries again
            size, shrinks = max(1, size // 2), shrinks + 1
            continue
        assert row is not None
        run.batch_seconds.append(time.perf_counter() - started)
        run.batches += 1
        run.deleted += row["deleted"]
        metrics.RETENTION_DELETED.inc(row["deleted"])
        if row["scanned"] < size or not row["all_old"]:
            break
        after = row["last_id"]
    return run


async def _purge_batches(conn: Conn, policy: RetentionPolicy, queries: Mapping[str, str]) -> int:
    """Delete the records of batches whose events are all gone, a bounded step at a time."""
    deleted = 0
    budget = f"{policy.batch_budget_ms}ms"
    while True:
        try:
            async with conn.transaction():
                await conn.execute(queries["budget"], budget)
                status = await conn.execute(
                    queries["purge_batches"], policy.retention_seconds, policy.batch_size
                )
        except (asyncpg.LockNotAvailableError, asyncpg.QueryCanceledError) as exc:
            log.warning("retention_batch_over_budget", step="batches", error=type(exc).__name__)
            break  # the next run goes on
        step = int(status.split()[-1])
        deleted += step
        if step < policy.batch_size:
            break
    return deleted
