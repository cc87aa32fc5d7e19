"""The daemon's periodic upkeep: endpoint health, stall detection and retention."""

from __future__ import annotations

import asyncio

import asyncpg

from notifier.db.errors import is_retryable, one_line
from notifier.engine.store import Outbox
from notifier.observability import metrics
from notifier.observability.logging import get_logger
from notifier.ops.retention import RetentionPolicy, run_retention
from notifier.settings import Settings

log = get_logger("notifier.upkeep")


async def disable_failing_endpoints(outbox: Outbox, failing_seconds: float) -> list[int]:
    """Disable every subscription failing with no success for longer than that."""
    disabled = await outbox.disable_failing(failing_seconds)
    for subscription_id, reason in disabled:
        metrics.SUBSCRIPTIONS_DISABLED.labels("failing").inc()
        log.warning("subscription_disabled", subscription_id=subscription_id, reason=reason)
    return [subscription_id for subscription_id, _ in disabled]


async def watch_endpoint_health(outbox: Outbox, settings: Settings) -> None:
    """Every health-check interval, disable endpoints that have been failing too long."""
    while True:
        try:
            await disable_failing_endpoints(outbox, settings.disable_after_failing_seconds)
        except Exception as exc:
            if not is_retryable(exc):
                raise
            log.warning("endpoint_health_check_failed", error=one_line(exc))
        await asyncio.sleep(settings.health_check_interval_seconds)


class StallWatch:
    """Whether deliverable work has waited longer than the threshold: a stuck pipeline."""

    def __init__(self, outbox: Outbox, threshold_seconds: float) -> None:
        self._outbox = outbox
        self._threshold = threshold_seconds

    async def flowing(self, timeout_seconds: float | None = None) -> bool:
        """Measure, publish the metrics, and say whether work is flowing."""
        age = await self._outbox.oldest_deliverable_age(timeout_seconds)
        stalled = age > self._threshold
        metrics.OLDEST_DELIVERABLE_AGE.set(age)
        metrics.STALLED.set(1 if stalled else 0)
        return not stalled


def retention_policy(settings: Settings) -> RetentionPolicy:
    return RetentionPolicy(
        retention_seconds=settings.retention_seconds,
        dead_letter_retention_seconds=settings.dead_letter_retention_seconds,
        batch_size=settings.retention_batch_size,
        batch_budget_ms=settings.retention_batch_budget_ms,
    )


async def keep_retention(pool: asyncpg.Pool, settings: Settings) -> None:
    """Run retention every interval; with several daemons, one runs it at a time."""
    policy = retention_policy(settings)
    while True:
        try:
            async with pool.acquire() as conn:
                try:
                    await run_retention(conn, policy)
                except BaseException:
                    # Its session lock may not have been released, and this pool does not
                    # reset connections: closed, never returned with the lock held.
                    conn.terminate()
                    raise
        except Exception as exc:
            if not is_retryable(exc):
                raise
            log.warning("retention_failed", error=one_line(exc))
        await asyncio.sleep(settings.retention_interval_seconds)
