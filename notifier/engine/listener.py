"""A LISTEN connection that keeps itself alive and comes back after any failure."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from notifier.db.errors import RETRY_MAX_SECONDS
from notifier.db.pool import CONNECT_ERRORS, DatabaseUnavailable, connect
from notifier.engine.waits import wait_set
from notifier.observability import metrics
from notifier.observability.logging import get_logger

log = get_logger("notifier.listener")

CHANNEL = "notifier"
# Shown in pg_stat_activity, so operators can tell the LISTEN connection apart.
APPLICATION_NAME = "notifier-listener"
# After this many failures in a row the listener logs errors instead of warnings.
WARNINGS_BEFORE_ERRORS = 3

_LOST_ERRORS: tuple[type[BaseException], ...] = (*CONNECT_ERRORS, DatabaseUnavailable)


class Listener:
    """Listens on the ``notifier`` channel and calls ``on_wake`` for each doorbell.

    ``on_wake`` is also called after every (re)connect, because notifications sent
    while the connection was down are lost: the caller should look for work then.
    """

    def __init__(
        self,
        database_url: str,
        on_wake: Callable[[], None],
        *,
        keepalive_seconds: float = 5.0,
        backoff_initial: float = 0.1,
        backoff_max: float = RETRY_MAX_SECONDS,
    ) -> None:
        self._url = database_url
        self._on_wake = on_wake
        self._keepalive = keepalive_seconds
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self.connected = False
        self._established = False

    async def run(self) -> None:
        """Listen forever; cancel the task to stop."""
        failures = 0
        backoff = self._backoff_initial
        connected_before = False
        while True:
            self._established = False
            try:
                await self._listen_once(reconnect=connected_before)
            except _LOST_ERRORS as exc:
                if self._established:
                    connected_before = True
                    failures, backoff = 0, self._backoff_initial
                failures += 1
                logger = log.warning if failures <= WARNINGS_BEFORE_ERRORS else log.error
                logger(
                    "listener_disconnected",
                    error=str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                    failures=failures,
                    retry_in=round(backoff, 3),
                )
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self._backoff_max)

    def _set_connected(self, value: bool) -> None:
        self.connected = value
        metrics.LISTENER_CONNECTED.set(1 if value else 0)

    async def _listen_once(self, *, reconnect: bool) -> None:
        conn = await connect(self._url, application_name=APPLICATION_NAME)
        lost = asyncio.Event()
        try:
            conn.add_termination_listener(lambda _conn: lost.set())
            await conn.add_listener(CHANNEL, lambda *_args: self._on_wake())
            self._set_connected(True)
            self._established = True
            if reconnect:
                metrics.LISTENER_RECONNECTS.inc()
            log.info("listener_connected", reconnect=reconnect)
            self._on_wake()
            while not await wait_set(lost, self._keepalive):
                # Quiet for a while: prove the connection still answers.
                await conn.fetchval("SELECT 1", timeout=self._keepalive)
            raise DatabaseUnavailable("the LISTEN connection was closed")
        finally:
            self._set_connected(False)
            conn.terminate()
