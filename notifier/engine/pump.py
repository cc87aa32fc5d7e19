"""The claim loop: take work while there is some, otherwise park on the doorbell.

While the doorbell is armed, every commit that writes an event rings it. A claim that
finds little leaves it armed, so a daemon taking events one at a time spends a single
statement on each and parks again at once; a claim that finds more disarms it, so that
writers stop paying for a NOTIFY while the daemon is busy, and the daemon claims on until
a claim finds little. Then it arms the doorbell and claims once more before it parks: a
commit that read the doorbell before it was armed does not ring, and that claim, whose
snapshot is taken after the arm, is the one that sees it.
"""

from __future__ import annotations

import asyncio

from notifier.db.errors import is_retryable, one_line, retry_delay
from notifier.engine.dispatcher import Dispatcher
from notifier.engine.store import ClaimResult, Outbox
from notifier.engine.waits import wait_set
from notifier.observability import metrics
from notifier.observability.logging import get_logger

log = get_logger("notifier.pump")

# Work found in one claim (new events, due retries, freed keys, expired leases) that
# disarms the doorbell. One event at a time is what a ringing doorbell is for; two mean
# events come faster than claims, and the daemon is better off claiming without it.
DISARM_AT = 2
# A transaction that read the doorbell just before it was armed commits without ringing.
# While any transaction is in progress at the claim after arming, park only this long, so
# such an event waits milliseconds rather than a whole poll interval.
RECHECK_SECONDS = 0.002
# A claim of new events alone (claim_new) costs a third less than a full claim, which
# also takes due retries, expired leases and ordered subscriptions' work: while no
# subscription is ordered, the daemon makes a full claim only this often, or when the
# next retry or lease it knows of falls due.
FULL_CLAIM_SECONDS = 0.25
# How long to hold back while a subscription has too little room for a batch: long
# enough for a healthy endpoint to make room, short enough that a dead one, which
# makes none, delays the others only briefly.
FULL_WAIT_SECONDS = 0.25
# After this many failed claims in a row the pump logs errors instead of warnings: a
# terminated backend is routine, a database away for seconds is not.
WARNINGS_BEFORE_ERRORS = 3


class Pump:
    """Claims batches and hands them to the dispatcher until stopped."""

    def __init__(
        self,
        outbox: Outbox,
        dispatcher: Dispatcher,
        wake: asyncio.Event,
        *,
        batch_size: int,
        poll_interval: float,
    ) -> None:
        self._outbox = outbox
        self._dispatcher = dispatcher
        self._wake = wake
        self._batch = batch_size
        self._poll = poll_interval
        self._stop = asyncio.Event()
        self._just_armed = False  # the last round armed the doorbell
        self._ordered = True  # an ordered subscription exists, as far as it knows
        self._full_at = 0.0  # loop time by which the next full claim is due
        self._due_at: float | None = None  # the next retry or lease known to fall due

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    async def run(self) -> None:
        """Returns only once stopped. The database going away pauses it, with backoff."""
        failures = 0
        while not self._stop.is_set():
            await self._wait_for_room()
            try:
                await self._round()
            except Exception as exc:
                if not is_retryable(exc):
                    raise
                failures += 1
                logger = log.warning if failures <= WARNINGS_BEFORE_ERRORS else log.error
                logger("claim_failed", error=one_line(exc), failures=failures)
                # Not woken by the doorbell: only stop() cuts the backoff short.
                await wait_set(self._stop, retry_delay(failures))
                self._just_armed = False
                continue
            if failures:
                log.info("claim_recovered", failures=failures)
                failures = 0

    async def _round(self) -> None:
        """Claim once and dispatch; then claim again, arm the doorbell, or park on it."""
        just_armed, self._just_armed = self._just_armed, False
        self._wake.clear()
        loop = asyncio.get_running_loop()
        now = loop.time()
        # The claim after arming is full: before the daemon parks, it learns when the
        # next retry or lease falls due, whatever came due while it was busy.
        full = (
            just_armed
            or self._ordered
            or now >= self._full_at
            or (self._due_at is not None and now >= self._due_at)
        )
        with metrics.CLAIM_DURATION.time():
            result = await self._claim(full)
        if result.claimed:
            self._dispatcher.dispatch(result.claimed)
        self._ordered = result.ordered
        parks = result.armed and result.work < DISARM_AT and not result.more
        if full:
            self._full_at = now + FULL_CLAIM_SECONDS
            # Only a full claim that parks looks for the next retry or lease due.
            due_in = result.next_due_in if parks else None
            self._due_at = None if due_in is None else now + max(0.0, due_in)
        if result.work >= DISARM_AT or result.more:
            return  # busy: claim again at once
        if not result.armed:
            # Disarmed while this daemon (or another) was busy: arm it, and let the next
            # claim, which sees every commit that did not ring, decide whether to park.
            await self._outbox.arm_doorbell()
            self._just_armed = True
            return
        await self._sleep(self._park_seconds(loop.time(), result, just_armed))

    async def _claim(self, full: bool) -> ClaimResult:
        room = self._dispatcher.room()
        default_room = self._dispatcher.held_per_subscription
        if full:
            return await self._outbox.claim(
                events=self._batch,
                due=self._batch,
                room=room,
                default_room=default_room,
                disarm_at=DISARM_AT,
            )
        return await self._outbox.claim_new(
            events=self._batch, room=room, default_room=default_room, disarm_at=DISARM_AT
        )

    def _park_seconds(self, now: float, result: ClaimResult, just_armed: bool) -> float:
        """Until the poll, the next retry or lease due, or a writer that may not ring."""
        timeout = self._poll
        if self._due_at is not None:
            timeout = min(timeout, max(0.0, self._due_at - now))
        if just_armed and result.writers_in_progress:
            timeout = min(timeout, RECHECK_SECONDS)
        return timeout

    async def _wait_for_room(self) -> None:
        """Hold back while a subscription could not take a whole batch."""
        limit = self._dispatcher.held_per_subscription - self._batch
        loop = asyncio.get_running_loop()
        deadline = loop.time() + FULL_WAIT_SECONDS
        while self._dispatcher.busiest() > limit and not self._stop.is_set():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._dispatcher.progress.clear()
            await wait_set(self._dispatcher.progress, remaining)

    async def _sleep(self, seconds: float) -> None:
        """Until the doorbell rings, stop() is called, or ``timeout`` passes."""
        await wait_set(self._wake, seconds)
