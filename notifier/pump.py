"""The claim loop: take work while there is some, otherwise arm the doorbell and park."""

from __future__ import annotations

import asyncio
import contextlib

from notifier.dispatch import DB_ERRORS, Dispatcher
from notifier.logging import get_logger
from notifier.outbox import Outbox

log = get_logger("notifier.pump")

# A transaction that read the doorbell just before it was armed commits without ringing.
# While any transaction is in progress at the re-check, park only this long, so such
# an event waits milliseconds rather than a whole poll interval.
RECHECK_SECONDS = 0.002
# How long to hold back while a subscription has too little room for a batch: long
# enough for a healthy endpoint to make room, short enough that a dead one, which
# makes none, delays the others only briefly.
FULL_WAIT_SECONDS = 0.25
ERROR_BACKOFF_SECONDS = 1.0


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
        """Returns only once stopped."""
        disarm = False
        while not self._stop.is_set():
            await self._wait_for_room()
            try:
                result = await self._outbox.claim(
                    events=self._batch,
                    due=self._batch,
                    room=self._dispatcher.room(),
                    default_room=self._dispatcher.held_per_subscription,
                    disarm=disarm,
                )
                disarm = False
                if result.claimed:
                    self._dispatcher.dispatch(result.claimed)
                if result.fanned_events or result.claimed:
                    continue
                disarm = await self._park()
            except DB_ERRORS as exc:
                log.error("claim_failed", error=str(exc).splitlines()[0] if str(exc) else repr(exc))
                await self._sleep(ERROR_BACKOFF_SECONDS)

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
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dispatcher.progress.wait(), remaining)

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
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)
