"""``notifier run``: wires the parts together, supervises them, and shuts down cleanly."""

from __future__ import annotations

import asyncio
import gc
import signal
from collections.abc import Coroutine, Mapping
from typing import Any

import aiohttp
from aiohttp import web

from notifier import metrics
from notifier.db import create_pool
from notifier.dispatch import DB_ERRORS, Dispatcher
from notifier.health import health_app
from notifier.listener import Listener
from notifier.logging import get_logger
from notifier.outbox import Outbox
from notifier.pump import Pump
from notifier.retry import RetryPolicy
from notifier.settings import Settings
from notifier.targets import GuardedResolver
from notifier.upkeep import StallWatch, keep_retention, watch_endpoint_health

log = get_logger("notifier.daemon")

BACKLOG_INTERVAL_SECONDS = 5.0
# The daemon's own writes (claims, settlements) need not wait for the WAL flush: if the
# server crashes and loses the last of them, the work is simply claimed and delivered
# again, which at-least-once delivery allows. Writers' transactions are not affected.
# Each statement is planned for the tables as they are now: a generic plan cached while
# the outbox was small would go on scanning it whole once it has grown, until an ANALYZE
# (which autovacuum may never run) replaces it. Planning costs well under a millisecond.
DAEMON_SESSION = {
    "synchronous_commit": "off",
    "application_name": "notifier-daemon",
    "plan_cache_mode": "force_custom_plan",
}
READY_PING_TIMEOUT_SECONDS = 2.0


async def supervise(tasks: Mapping[str, asyncio.Task[Any]], stop: asyncio.Event) -> str | None:
    """Wait until ``stop`` is set (None) or a task ends on its own (its name)."""
    stopper = asyncio.create_task(stop.wait(), name="stop-signal")
    try:
        done, _ = await asyncio.wait(
            [stopper, *tasks.values()], return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        stopper.cancel()
    for name, task in tasks.items():
        if task in done:
            error = None if task.cancelled() else task.exception()
            log.error("task_died", task=name, error=repr(error), exc_info=error)
            return name
    return None


async def _track_backlog(outbox: Outbox, stall: StallWatch) -> None:
    while True:
        try:
            backlog = await outbox.backlog()
            metrics.BACKLOG.set(backlog.pending)
            metrics.OLDEST_PENDING_AGE.set(backlog.oldest_age_seconds)
            await stall.flowing()
        except DB_ERRORS as exc:
            log.warning("backlog_query_failed", error=str(exc))
        await asyncio.sleep(BACKLOG_INTERVAL_SECONDS)


async def _warn_if_unvacuumed(outbox: Outbox) -> None:
    """The queue and deliveries churn: without vacuum their dead rows slow every claim."""
    try:
        server_off, tables_off = await outbox.unvacuumed()
    except DB_ERRORS as exc:
        log.warning("autovacuum_check_failed", error=str(exc))
        return
    if server_off or tables_off:
        log.warning(
            "autovacuum_off",
            server=server_off,
            tables=tables_off,
            effect="dead rows in the outbox pile up and delivery slows as they do; "
            "turn autovacuum on, or VACUUM the notifier tables on a schedule",
        )


def _task(coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
    return asyncio.create_task(coro, name=name)


async def run_daemon(settings: Settings) -> int:
    """Deliver until SIGTERM or SIGINT (exit 0) or until a part dies (exit 1)."""
    pool = await create_pool(
        settings.database_url, min_size=2, max_size=6, server_settings=DAEMON_SESSION
    )
    # The SSRF guard at connect time: DNS answers may have changed since the subscription
    # was created. IP literals bypass resolvers; each attempt checks those itself.
    resolver = None if settings.allow_private_targets else GuardedResolver()
    connector = aiohttp.TCPConnector(
        limit=settings.max_in_flight, limit_per_host=0, resolver=resolver
    )
    session = aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar())
    outbox = Outbox(pool, settings.lease_seconds)
    dispatcher = Dispatcher(
        outbox,
        session,
        RetryPolicy(settings.retry_schedule, settings.retry_after_max_seconds),
        max_in_flight=settings.max_in_flight,
        max_in_flight_per_subscription=settings.max_in_flight_per_subscription,
        request_timeout=settings.request_timeout_seconds,
        held_per_subscription=2 * settings.batch_size,
        allow_private_targets=settings.allow_private_targets,
    )
    await _warn_if_unvacuumed(outbox)
    stall = StallWatch(outbox, settings.stall_threshold_seconds)
    wake = asyncio.Event()
    listener = Listener(settings.database_url, wake.set)
    pump = Pump(
        outbox,
        dispatcher,
        wake,
        batch_size=settings.batch_size,
        poll_interval=settings.poll_interval_seconds,
    )

    async def readiness() -> dict[str, bool]:
        flowing = True  # unknown while the database is away, which fails readiness anyway
        try:
            await outbox.ping(READY_PING_TIMEOUT_SECONDS)
            database = True
            flowing = await stall.flowing(READY_PING_TIMEOUT_SECONDS)
        except DB_ERRORS:
            database = False
        return {"database": database, "listener": listener.connected, "not_stalled": flowing}

    runner = web.AppRunner(health_app(readiness), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.daemon_host, settings.daemon_port)
    await site.start()
    port = runner.addresses[0][1] if runner.addresses else settings.daemon_port
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    # Everything allocated so far (modules, settings, the pool) lives as long as the
    # process: keep it out of the cyclic collector, so a full collection stays short.
    gc.collect()
    gc.freeze()
    log.info("daemon_started", health_port=port, batch_size=settings.batch_size)

    settler = _task(dispatcher.run_settler(), "settler")
    tasks = {
        "listener": _task(listener.run(), "listener"),
        "pump": _task(pump.run(), "pump"),
        "settler": settler,
        "leases": _task(dispatcher.keep_leases(settings.lease_seconds / 3), "leases"),
        "backlog": _task(_track_backlog(outbox, stall), "backlog"),
        "endpoint-health": _task(watch_endpoint_health(outbox, settings), "endpoint-health"),
        "retention": _task(keep_retention(pool, settings), "retention"),
    }
    died = await supervise(tasks, stop)
    log.info("daemon_stopping", reason="task died" if died else "signal")
    try:
        pump.stop()
        if died != "pump":
            await tasks["pump"]
        if died != "settler":
            await dispatcher.shutdown(settings.shutdown_grace_seconds, settler)
    finally:
        for task in tasks.values():
            task.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)
        await runner.cleanup()
        await session.close()
        await pool.close()
    log.info("daemon_stopped")
    return 1 if died else 0
