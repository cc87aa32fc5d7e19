"""Sending claimed deliveries: bounded concurrency, settling in batches, leases kept alive."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime

import aiohttp
import asyncpg

from notifier import metrics
from notifier.delivery import Outcome, Result, attempt
from notifier.logging import get_logger
from notifier.outbox import Claimed, Outbox, Settlement, Status
from notifier.retry import RetryPolicy

log = get_logger("notifier.dispatch")

# What a query raises when the database is unreachable or refuses: retried, not fatal.
DB_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
)
GONE_REASON = "the endpoint answered 410 Gone"


class Dispatcher:
    """Holds the deliveries this daemon claimed until their outcome is recorded.

    Each delivery waits for a slot of its subscription first, then for a global slot,
    so a slow endpoint fills only its own slots and never starves the others.
    """

    def __init__(
        self,
        outbox: Outbox,
        session: aiohttp.ClientSession,
        policy: RetryPolicy,
        *,
        max_in_flight: int,
        max_in_flight_per_subscription: int,
        request_timeout: float,
        held_per_subscription: int,
        allow_private_targets: bool = False,
    ) -> None:
        self._outbox = outbox
        self._session = session
        self._allow_private = allow_private_targets
        self._policy = policy
        self._timeout = request_timeout
        self._default_limit = max_in_flight_per_subscription
        self.held_per_subscription = held_per_subscription
        self._global = asyncio.Semaphore(max_in_flight)
        self._per_subscription: dict[int, tuple[int, asyncio.Semaphore]] = {}
        self._held: dict[int, Claimed] = {}
        self._held_by_subscription: Counter[int] = Counter()
        self._tasks: set[asyncio.Task[None]] = set()
        self._unsettled: list[Settlement] = []
        self._settle_wanted = asyncio.Event()
        self._stopping = False
        self._closed = False
        self.progress = asyncio.Event()  # set whenever held deliveries are settled

    # What the pump needs to know.

    def room(self) -> dict[int, int]:
        """How many more deliveries each busy subscription may take."""
        cap = self.held_per_subscription
        return {sub: max(0, cap - n) for sub, n in self._held_by_subscription.items()}

    def full_subscriptions(self) -> list[int]:
        cap = self.held_per_subscription
        return [sub for sub, n in self._held_by_subscription.items() if n >= cap]

    def busiest(self) -> int:
        return max(self._held_by_subscription.values(), default=0)

    # Sending.

    def dispatch(self, claimed: Sequence[Claimed]) -> None:
        """Start sending each claimed delivery; returns at once."""
        for item in claimed:
            self._held[item.delivery_id] = item
            self._held_by_subscription[item.subscription_id] += 1
            task = asyncio.create_task(self._deliver(item), name=f"delivery-{item.delivery_id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _slot(self, item: Claimed) -> asyncio.Semaphore:
        limit = item.max_in_flight or self._default_limit
        known = self._per_subscription.get(item.subscription_id)
        if known is None or known[0] != limit:
            known = (limit, asyncio.Semaphore(limit))
            self._per_subscription[item.subscription_id] = known
        return known[1]

    async def _deliver(self, item: Claimed) -> None:
        async with self._slot(item), self._global:
            if self._stopping:
                return  # never attempted: released at shutdown
            outcome = await attempt(
                self._session, item, self._timeout, allow_private=self._allow_private
            )
        await self._record(item, outcome)

    async def _record(self, item: Claimed, outcome: Outcome) -> None:
        duration_ms = outcome.duration * 1000
        metrics.ATTEMPT_DURATION.observe(outcome.duration)
        gone = outcome.status_code == 410
        retry_in = 0.0
        status: Status
        if outcome.result is Result.SUCCEEDED:
            status, label = "succeeded", "succeeded"
            latency = (datetime.now(UTC) - item.event_created_at).total_seconds()
            metrics.DELIVERY_LATENCY.observe(max(latency, 0.0))
        else:
            delay = self._policy.next_delay(item.schedule_attempt, outcome.retry_after)
            status = "dead" if delay is None else "pending"
            label = "gone" if gone else ("dead" if delay is None else "failed")
            retry_in = delay or 0.0
        metrics.DELIVERIES.labels(label).inc()
        fields = {
            "event_id": str(item.event_uid),
            "delivery_id": item.delivery_id,
            "subscription_id": item.subscription_id,
            "attempt": item.attempt,
            "status": outcome.status_code if outcome.error is None else outcome.error,
            "duration_ms": round(duration_ms, 2),
        }
        if status == "succeeded":
            log.info("delivery_succeeded", **fields)
        elif status == "dead":
            log.error("delivery_dead", **fields)
        else:
            log.warning("delivery_failed", retry_in=round(retry_in, 3), **fields)
        if gone:
            await self._disable(item.subscription_id)
        self._unsettled.append(
            Settlement(
                item.delivery_id,
                item.attempt,
                status,
                retry_in,
                outcome.status_code,
                outcome.error,
                outcome.started_at,
                duration_ms,
                outcome.response_snippet,
            )
        )
        self._settle_wanted.set()

    async def _disable(self, subscription_id: int) -> None:
        try:
            if await self._outbox.disable_subscription(subscription_id, GONE_REASON):
                metrics.SUBSCRIPTIONS_DISABLED.labels("gone").inc()
                log.warning(
                    "subscription_disabled", subscription_id=subscription_id, reason=GONE_REASON
                )
        except DB_ERRORS as exc:
            log.error(
                "subscription_disable_failed", subscription_id=subscription_id, error=str(exc)
            )

    # Background work.

    async def run_settler(self) -> None:
        """Record outcomes in batches: whatever finished while the last batch was written."""
        while not (self._closed and not self._unsettled):
            await self._settle_wanted.wait()
            self._settle_wanted.clear()
            if not self._unsettled:
                continue
            batch, self._unsettled = self._unsettled, []
            try:
                await self._outbox.settle(batch)
            except DB_ERRORS as exc:
                log.error("settle_failed", error=str(exc), deliveries=len(batch))
                self._unsettled[:0] = batch
                await asyncio.sleep(0.5)
                self._settle_wanted.set()
                continue
            for settled in batch:
                self._forget(settled.delivery_id)
            self.progress.set()

    def _forget(self, delivery_id: int) -> None:
        item = self._held.pop(delivery_id, None)
        if item is None:
            return
        self._held_by_subscription[item.subscription_id] -= 1
        if self._held_by_subscription[item.subscription_id] <= 0:
            del self._held_by_subscription[item.subscription_id]

    async def keep_leases(self, interval: float) -> None:
        """Extend the leases of everything held, so only a dead holder loses them."""
        while True:
            await asyncio.sleep(interval)
            held = [(item.delivery_id, item.attempt) for item in self._held.values()]
            if not held:
                continue
            try:
                await self._outbox.extend_leases(held)
            except DB_ERRORS as exc:
                log.error("lease_extension_failed", error=str(exc), deliveries=len(held))

    async def shutdown(self, grace: float, settler: asyncio.Task[None]) -> None:
        """Finish in-flight attempts within ``grace``, record them, release the rest."""
        self._stopping = True
        if self._tasks:
            _done, late = await asyncio.wait(set(self._tasks), timeout=grace)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)
                log.warning("shutdown_cancelled_attempts", deliveries=len(late))
        self._closed = True
        self._settle_wanted.set()
        await settler
        unattempted = [(item.delivery_id, item.attempt) for item in self._held.values()]
        if unattempted:
            await self._outbox.release(unattempted)
            log.info("released_unattempted", deliveries=len(unattempted))
        self._held.clear()
        self._held_by_subscription.clear()
