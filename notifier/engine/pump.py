"""The claim loop: take work while there is some, otherwise arm the doorbell and park."""

from __future__ import annotations

import asyncio

from notifier.db.errors import is_retryable, one_line, retry_delay
from notifier.engine.dispatcher import Dispatcher
from notifier.engine.store import Outbox
from notifier.engine.waits import wait_set
from notifier.observability import metrics
from notifier.observability.logging import get_logger

log = get_logger("notifier.pump")

# A transaction that read the doorbell just before it was armed commits without ringing.
# While any transaction is in progress at the re-check, park only this long, so such
# an event waits milliseconds rather than a whole poll interval.
RECHECK_SECONDS = 0.002
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

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    async def run(self) -> None:
        """Returns only once stopped. The database going away pauses it, with backoff."""
        disarm = False
        failures = 0
        while not self._stop.is_set():
            await self._wait_for_room()
            try:
                disarm = await self._round(disarm)
            except Exception as exc:
                if not is_retryable(exc):
                    raise
                failures += 1
                logger = log.warning if failures <= WARNINGS_BEFORE_ERRORS else log.error
                logger("claim_failed", error=one_line(exc), failures=failures)
                # Not woken by the doorbell: only stop() cuts the backoff short.
                await wait_set(self._stop, retry_delay(failures))
                disarm = False
                continue
            if failures:
                log.info("claim_recovered", failures=failures)
                failures = 0

    async def _round(self, disarm: bool) -> bool:
        """Claim once and dispatch; park when there was nothing. True: disarm next."""
        with metrics.CLAIM_DURATION.time():
            result = await self._outbox.claim(
                events=self._batch,
                due=self._batch,
                room=self._dispatcher.room(),
                default_room=self._dispatcher.held_per_subscription,
                disarm=disarm,
            )
        if result.claimed:
            self._dispatcher.dispatch(result.claimed)
        if result.fanned_events or result.claimed:
            return False
        return await self._park()

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

    async def _park(self) -> bool:
        """Arm the doorbell and wait for it, a due retry or the poll. True: disarm next."""
        self._wake.clear()
        await self._outbox.arm_doorbell()
        check = await self._outbox.recheck(self._dispatcher.full_subscriptions())
        if check.queued or (check.next_due_in is not None and check.next_due_in <= 0):
            return True
        timeout = self._poll
        if check.next_due_in is not None:
            timeout = min(timeout, check.next_due_in)
        if check.writers_in_progress:
            timeout = min(timeout, RECHECK_SECONDS)
        await self._sleep(timeout)
        return True

    async def _sleep(self, seconds: float) -> None:
        """Until the doorbell rings, stop() is called, or ``timeout`` passes."""
        await wait_set(self._wake, seconds)
