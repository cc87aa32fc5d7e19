"""Sending claimed deliveries: bounded concurrency, settling in batches, leases kept alive."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from prometheus_client import Counter as MetricCounter

from notifier.db.errors import REFUSED_DATA, is_retryable, one_line, retry_delay
from notifier.engine.retry import RetryPolicy
from notifier.engine.store import RELEASED, Claimed, Outbox, Settlement
from notifier.envelope import Envelope
from notifier.observability import metrics
from notifier.observability.logging import get_logger
from notifier.sinks.base import Outcome, Result, Sink, crashed
from notifier.sinks.registry import label
from notifier.statuses import SettledStatus

log = get_logger("notifier.dispatch")


class Dispatcher:
    """Holds the deliveries this daemon claimed until their outcome is recorded.

    Each delivery waits for a slot of its subscription first, then for a global slot,
    so a slow endpoint fills only its own slots and never starves the others.
    """

    def __init__(
        self,
        outbox: Outbox,
        sink: Sink,
        policy: RetryPolicy,
        *,
        max_in_flight: int,
        max_in_flight_per_subscription: int,
        held_per_subscription: int,
        on_key_freed: Callable[[], None] = lambda: None,
    ) -> None:
        self._outbox = outbox
        # Called once a head of an ordered subscription's key is recorded as finished:
        # the next of its key can go now, and the claim loop may be parked.
        self._on_key_freed = on_key_freed
        self._sink = sink
        self._policy = policy
        self._default_limit = max_in_flight_per_subscription
        self.held_per_subscription = held_per_subscription
        self._global = asyncio.Semaphore(max_in_flight)
        self._per_subscription: dict[int, tuple[int, asyncio.Semaphore]] = {}
        # Keyed by what holds the lease and the event: after an outage longer than a
        # lease, this daemon may claim again a delivery (or batch) whose earlier attempt
        # it still holds.
        self._held: dict[HeldKey, Claimed] = {}
        # The batches held, by (batch id, claim): recorded once every event has an outcome.
        self._batches: dict[tuple[int, int], _OpenBatch] = {}
        self._held_by_subscription: Counter[int] = Counter()
        self._tasks: set[asyncio.Task[None]] = set()
        self._unsettled: list[Settlement] = []
        self._settle_wanted = asyncio.Event()
        self._stopping = False
        self._closed = False
        self.progress = asyncio.Event()  # set whenever held deliveries are settled
        self._meters: dict[str, _Meters] = {}
        self._debug = log.is_enabled_for(logging.DEBUG)

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
            self._held[_key(item)] = item
            self._held_by_subscription[item.subscription_id] += 1
            if item.batch_id is not None:
                batch = self._batches.setdefault(item.lease, _OpenBatch())
                batch.order.append(item)
            task = asyncio.create_task(self._deliver(item), name=f"delivery-{item.event_id}")
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
            try:
                envelope = Envelope.of(
                    item.event_uid,
                    item.event_type,
                    item.event_created_at,
                    item.data,
                    item.previous,
                    item.trace,
                )
                outcome = await self._sink.deliver(item.destination, envelope)
            except Exception as exc:
                # A failed attempt whatever a receiver sends: a delivery whose task died
                # would be held, its lease extended, and never sent again.
                log.exception(
                    "attempt_crashed",
                    event_id=str(item.event_uid),
                    delivery_id=item.delivery_id,
                    batch_id=item.batch_id,
                )
                outcome = crashed(exc)
        await self._record(item, outcome)

    async def _record(self, item: Claimed, outcome: Outcome) -> None:
        sink = label(item.target)
        meters = self._meters.get(sink) or self._meters.setdefault(sink, _Meters(sink))
        meters.duration.observe(outcome.duration)
        retry_in = 0.0
        status: SettledStatus
        if outcome.result is Result.SUCCEEDED:
            status, outcome_label = "succeeded", "succeeded"
            latency = (datetime.now(UTC) - item.event_created_at).total_seconds()
            meters.latency.observe(max(latency, 0.0))
        else:
            delay = self._policy.next_delay(item.schedule_attempt, outcome.retry_after)
            status = "dead" if delay is None else "pending"
            outcome_label = "gone" if outcome.disable else ("dead" if delay is None else "failed")
            retry_in = delay or 0.0
        meters.outcome(outcome_label).inc()
        # Every attempt is in the database's attempt log and every outcome in the metrics:
        # a line for each success (thousands a second) is for debugging only.
        if status != "succeeded" or self._debug:
            _log_outcome(item, outcome, status, retry_in, sink)
        if outcome.disable:
            await self._disable(item.subscription_id, outcome.disable)
        self._settle_later(
            Settlement(
                item.delivery_id,
                item.batch_id,
                item.batch_claimed_at,
                item.event_id,
                item.subscription_id,
                item.attempt,
                status,
                retry_in,
                outcome.code,
                outcome.error,
                outcome.started_at,
                outcome.duration * 1000,
                outcome.detail,
            )
        )

    def _settle_later(self, settlement: Settlement) -> None:
        """Queue an outcome for the settler; a batch's, once all its events have one."""
        if settlement.batch_id is None:
            self._unsettled.append(settlement)
        else:
            lease = (settlement.batch_id, settlement.attempt)
            batch = self._batches[lease]
            batch.outcomes[settlement.event_id] = settlement
            if len(batch.outcomes) < len(batch.order):
                return
            del self._batches[lease]
            self._unsettled.extend(batch.outcomes[item.event_id] for item in batch.order)
        self._settle_wanted.set()

    async def _disable(self, subscription_id: int, reason: str) -> None:
        """The destination said it is gone for good (HTTP: 410): stop sending to it."""
        try:
            if await self._outbox.disable_subscription(subscription_id, reason):
                metrics.SUBSCRIPTIONS_DISABLED.labels("gone").inc()
                log.warning("subscription_disabled", subscription_id=subscription_id, reason=reason)
        except Exception as exc:
            if not is_retryable(exc):
                raise
            log.error(
                "subscription_disable_failed", subscription_id=subscription_id, error=one_line(exc)
            )

    # Background work.

    async def run_settler(self) -> None:
        """Record outcomes in batches: whatever finished while the last batch was written.

        While the database is away, outcomes are kept and recorded once it is back; one
        the database refuses (bad data) is set aside so that it never holds up the others.
        """
        failures = 0
        while not (self._closed and not self._unsettled):
            await self._settle_wanted.wait()
            self._settle_wanted.clear()
            if not self._unsettled:
                continue
            batch, self._unsettled = self._unsettled, []
            kept = await self._settle(batch)
            if kept:
                self._unsettled[:0] = kept
                failures += 1
                await asyncio.sleep(retry_delay(failures))
                self._settle_wanted.set()
            else:
                failures = 0

    async def _settle(self, batch: list[Settlement]) -> list[Settlement]:
        """Record ``batch``; returns the settlements that must wait for the database."""
        try:
            with metrics.SETTLE_DURATION.time():
                await self._outbox.settle(batch)
        except Exception as exc:
            if is_retryable(exc):
                log.warning("settle_failed", error=one_line(exc), deliveries=len(batch))
                return batch
            if not isinstance(exc, REFUSED_DATA):
                raise
            log.error("settle_refused", error=one_line(exc), deliveries=len(batch))
            return await self._settle_one_by_one(batch)
        self._settled(batch)
        return []

    async def _settle_one_by_one(self, batch: list[Settlement]) -> list[Settlement]:
        """Find what the database refused; record it without its receiver-supplied text.

        A batch's outcomes are one unit: they are recorded together or not at all.
        """
        done = 0
        for unit in _units(batch):
            for candidate in (unit, [s.scrubbed() for s in unit]):
                try:
                    await self._outbox.settle(candidate)
                except Exception as exc:
                    if is_retryable(exc):
                        return batch[done:]
                    if not isinstance(exc, REFUSED_DATA):
                        raise
                    log.error(
                        "settle_refused",
                        error=one_line(exc),
                        delivery_id=unit[0].delivery_id,
                        batch_id=unit[0].batch_id,
                        attempt=unit[0].attempt,
                    )
                    continue
                break
            # Recorded, or refused even scrubbed: either way it is let go, and work whose
            # outcome was not recorded is attempted again when its lease expires.
            self._settled(unit)
            done += len(unit)
        return []

    def _settled(self, batch: Sequence[Settlement]) -> None:
        freed = False
        for settled in batch:
            item = self._forget(_key(settled))
            if item is not None and item.destination.key is not None:
                freed = freed or settled.status != "pending"
        self.progress.set()
        if freed:
            self._on_key_freed()

    def _forget(self, key: HeldKey) -> Claimed | None:
        item = self._held.pop(key, None)
        if item is None:
            return None
        self._held_by_subscription[item.subscription_id] -= 1
        if self._held_by_subscription[item.subscription_id] <= 0:
            del self._held_by_subscription[item.subscription_id]
        return item

    async def keep_leases(self, interval: float) -> None:
        """Extend the leases of everything held, so only a dead holder loses them."""
        while True:
            await asyncio.sleep(interval)
            if not self._held:
                continue
            deliveries = {i.lease for i in self._held.values() if i.batch_id is None}
            batches = {i.lease for i in self._held.values() if i.batch_id is not None}
            try:
                await self._outbox.extend_leases(list(deliveries), list(batches))
            except Exception as exc:
                if not is_retryable(exc):
                    raise
                # Extended at the next turn. A lease that runs out meanwhile lets the
                # delivery be attempted again (at least once); a late outcome of this
                # attempt is still logged, and fenced off the delivery by its attempt.
                log.warning(
                    "lease_extension_failed",
                    error=one_line(exc),
                    deliveries=len(deliveries),
                    batches=len(batches),
                )

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
        # A batch's events that were never attempted are recorded as such (due again).
        for batch in list(self._batches.values()):
            for item in batch.order:
                if item.event_id not in batch.outcomes:
                    self._settle_later(_released(item))
        self._closed = True
        self._settle_wanted.set()
        try:
            async with asyncio.timeout(grace):
                await settler
        except TimeoutError:
            # The database is still away: these attempts are made again once their
            # leases expire (at least once, never lost).
            log.error("unsettled_at_shutdown", deliveries=len(self._unsettled))
        attempted = {_key(s) for s in self._unsettled}
        unattempted = [
            item.lease
            for key, item in self._held.items()
            if key not in attempted and item.batch_id is None
        ]
        if unattempted:
            try:
                async with asyncio.timeout(grace):
                    await self._outbox.release(unattempted)
                log.info("released_unattempted", deliveries=len(unattempted))
            except Exception as exc:
                if not is_retryable(exc):
                    raise
                log.warning("release_failed", error=one_line(exc), deliveries=len(unattempted))
        self._held.clear()
        self._held_by_subscription.clear()
        self._batches.clear()


class _Meters:
    """One kind of destination's metric children, looked up once, not per attempt."""

    def __init__(self, sink: str) -> None:
        self.duration = metrics.ATTEMPT_DURATION.labels(sink)
        self.latency = metrics.DELIVERY_LATENCY.labels(sink)
        self._sink = sink
        self._outcomes: dict[str, MetricCounter] = {}

    def outcome(self, name: str) -> MetricCounter:
        known = self._outcomes.get(name)
        if known is None:
            known = self._outcomes[name] = metrics.DELIVERIES.labels(self._sink, name)
        return known


# (is a batch, delivery or batch id, attempt, event id): one held event.
HeldKey = tuple[bool, int, int, int]


def _key(held: Claimed | Settlement) -> HeldKey:
    if held.delivery_id is not None:
        return False, held.delivery_id, held.attempt, held.event_id
    assert held.batch_id is not None
    return True, held.batch_id, held.attempt, held.event_id


@dataclass(slots=True)
class _OpenBatch:
    """A held batch: its events in order, and the outcomes they have so far."""

    order: list[Claimed] = field(default_factory=list)
    outcomes: dict[int, Settlement] = field(default_factory=dict)


def _released(item: Claimed) -> Settlement:
    now = datetime.now(UTC)
    return Settlement(
        None,
        item.batch_id,
        item.batch_claimed_at,
        item.event_id,
        item.subscription_id,
        item.attempt,
        RELEASED,
        0.0,
        "",
        None,
        now,
        0.0,
        "",
    )


def _units(settlements: Sequence[Settlement]) -> list[list[Settlement]]:
    """Settlements in the units they are recorded in: a delivery alone, a batch whole."""
    units: list[list[Settlement]] = []
    for settlement in settlements:
        last = units[-1][0] if units else None
        if (
            settlement.batch_id is not None
            and last is not None
            and (last.batch_id, last.attempt) == (settlement.batch_id, settlement.attempt)
        ):
            units[-1].append(settlement)
        else:
            units.append([settlement])
    return units


def _log_outcome(
    item: Claimed, outcome: Outcome, status: SettledStatus, retry_in: float, sink: str
) -> None:
    fields = {
        "event_id": str(item.event_uid),
        "delivery_id": item.delivery_id,
        "batch_id": item.batch_id,
        "subscription_id": item.subscription_id,
        "sink": sink,
        "attempt": item.attempt,
        "status": outcome.code if outcome.error is None else outcome.error,
        "duration_ms": round(outcome.duration * 1000, 2),
    }
    if status == "succeeded":
        log.debug("delivery_succeeded", **fields)
    elif status == "dead":
        # A receiver's failure, not the daemon's: counted, kept as a dead letter to
        # recover, and not an error line (those page someone through Sentry).
        log.warning("delivery_dead", **fields)
    else:
        log.warning("delivery_failed", retry_in=round(retry_in, 3), **fields)
