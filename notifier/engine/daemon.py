"""``notifier run``: wires the parts together, supervises them, and shuts down cleanly."""

from __future__ import annotations

import asyncio
import gc
import signal
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from notifier.db.errors import is_retryable, one_line, retry_delay
from notifier.db.migrate import discover
from notifier.db.pool import create_pool
from notifier.engine.dispatcher import Dispatcher
from notifier.engine.listener import Listener
from notifier.engine.pump import Pump
from notifier.engine.retry import RetryPolicy
from notifier.engine.store import Outbox
from notifier.engine.upkeep import StallWatch, keep_retention, watch_endpoint_health
from notifier.engine.waits import wait_set
from notifier.observability import metrics
from notifier.observability.health import HealthServer
from notifier.observability.logging import get_logger
from notifier.settings import Settings
from notifier.sinks.registry import WEBHOOK, SinkOptions, Sinks

log = get_logger("notifier.daemon")

BACKLOG_INTERVAL_SECONDS = 5.0
# The daemon's own writes (claims, settlements) need not wait for the WAL flush: if the
# server crashes and loses the last of them, the work is simply claimed and delivered
# again, which at-least-once delivery allows. Writers' transactions are not affected.
DAEMON_SESSION = {
    "synchronous_commit": "off",
    "application_name": "notifier-daemon",
}
# Plans are cached as PostgreSQL chooses (a generic plan once it is as cheap as custom
# ones): planning every claim and settle afresh, and every foreign-key check they make,
# cost the server more than a third of its time per delivery. A generic plan made while
# the outbox was small would scan it whole once it has grown, until an ANALYZE replaced
# it, and autovacuum may never run one; so each connection drops its cached plans this
# often, and statements are planned again for the tables as they are then.
REPLAN_SECONDS = 10.0
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
        except Exception as exc:
            if not is_retryable(exc):
                raise
            log.warning("backlog_query_failed", error=one_line(exc))
        await asyncio.sleep(BACKLOG_INTERVAL_SECONDS)


async def _warn_if_unvacuumed(outbox: Outbox) -> None:
    """The queue and deliveries churn: without vacuum their dead rows slow every claim."""
    try:
        server_off, tables_off = await outbox.unvacuumed()
    except Exception as exc:
        if not is_retryable(exc):
            raise
        log.warning("autovacuum_check_failed", error=one_line(exc))
        return
    if server_off or tables_off:
        log.warning(
            "autovacuum_off",
            server=server_off,
            tables=tables_off,
            effect="dead rows in the outbox pile up and delivery slows as they do; "
            "turn autovacuum on, or VACUUM the notifier tables on a schedule",
        )


async def _wait_for_database(outbox: Outbox, stop: asyncio.Event) -> bool:
    """Until the database answers with the schema this version needs; False if stopped."""
    needed = max(migration.version for migration in discover())
    failures = 0
    while not stop.is_set():
        try:
            version = await outbox.schema_version()
            if version >= needed:
                if failures:
                    log.info("database_available", waited_attempts=failures)
                return True
            reason = f"the schema is at migration {version:03d}, this notifier needs {needed:03d}"
        except Exception as exc:
            if not is_retryable(exc):
                raise
            reason = one_line(exc)
        failures += 1
        delay = retry_delay(failures)
        log.warning("waiting_for_database", reason=reason, retry_in=delay)
        await wait_set(stop, delay)
    return False


def _task(coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
    return asyncio.create_task(coro, name=name)


async def keep_session(_conn: asyncpg.Connection) -> None:
    """A pool's ``reset`` that leaves a released connection as it is.

    The driver's default reset is a round trip on every release (unlock, close cursors,
    unlisten, reset settings): on the daemon's pool, one more per claim and per settle.
    Nothing the daemon runs on its pool leaves session state behind: its statements set
    nothing beyond their transaction, and retention, the one user of a session lock,
    closes its connection rather than return it with the lock still held.
    """


def replan_now_and_then(
    seconds: float,
) -> Callable[[PoolConnectionProxy], Coroutine[Any, Any, None]]:
    """A pool's ``setup``: drops a connection's cached plans once they are ``seconds`` old."""
    planned: dict[int, float] = {}  # server process id: when its plans were last dropped

    async def setup(conn: PoolConnectionProxy) -> None:
        now = time.monotonic()
        pid = conn.get_server_pid()
        since = planned.setdefault(pid, now)
        if now - since >= seconds:
            await conn.execute("DISCARD PLANS")
            planned[pid] = now
            # Connections closed long ago (the pool replaces them) are forgotten.
            for gone in [p for p, at in planned.items() if now - at > 60 * seconds]:
                del planned[gone]

    return setup


async def run_daemon(settings: Settings) -> int:
    """Deliver until SIGTERM or SIGINT (exit 0) or until a part dies (exit 1).

    The database may be away at start and at any time after: the daemon waits for it,
    not ready meanwhile, and carries on when it is back.
    """
    # min_size=0: no connection is opened here, so a database that is away does not stop
    # the start; every query connects (again) as needed.
    pool = await create_pool(
        settings.database_url,
        min_size=0,
        max_size=6,
        server_settings=DAEMON_SESSION,
        setup=replan_now_and_then(REPLAN_SECONDS),
        reset=keep_session,
    )
    sink = Sinks(
        SinkOptions(
            timeout_seconds=settings.request_timeout_seconds,
            max_connections=settings.max_in_flight,
            allow_private=settings.allow_private_targets,
            source=settings.event_source,
        )
    )
    # Webhooks are always wanted: ready before the first delivery, whose latency would
    # otherwise include importing and setting up the sink.
    await sink.prepare(WEBHOOK)
    outbox = Outbox(pool, settings.lease_seconds)
    wake = asyncio.Event()
    dispatcher = Dispatcher(
        outbox,
        sink,
        RetryPolicy(settings.retry_schedule, settings.retry_after_max_seconds),
        max_in_flight=settings.max_in_flight,
        max_in_flight_per_subscription=settings.max_in_flight_per_subscription,
        held_per_subscription=2 * settings.batch_size,
        on_key_freed=wake.set,
    )
    stall = StallWatch(outbox, settings.stall_threshold_seconds)
    listener = Listener(settings.database_url, wake.set)
    pump = Pump(
        outbox,
        dispatcher,
        wake,
        batch_size=settings.batch_size,
        poll_interval=settings.poll_interval_seconds,
    )
    started = False

    async def readiness() -> dict[str, bool]:
        flowing = True  # unknown while the database is away, which fails readiness anyway
        try:
            async with asyncio.timeout(READY_PING_TIMEOUT_SECONDS):
                await outbox.ping(READY_PING_TIMEOUT_SECONDS)
                database = started
                if started:
                    flowing = await stall.flowing(READY_PING_TIMEOUT_SECONDS)
        except Exception as exc:
            if not is_retryable(exc):
                raise
            database = False
        return {"database": database, "listener": listener.connected, "not_stalled": flowing}

    health = await HealthServer.start(readiness, settings.daemon_host, settings.daemon_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        if not await _wait_for_database(outbox, stop):
            log.info("daemon_stopped")
            return 0
        await _warn_if_unvacuumed(outbox)
        started = True
        return await _deliver(
            settings, pool, outbox, dispatcher, pump, listener, stall, stop, health.port
        )
    finally:
        await health.close()
        await sink.close()
        await pool.close()


async def _deliver(
    settings: Settings,
    pool: asyncpg.Pool,
    outbox: Outbox,
    dispatcher: Dispatcher,
    pump: Pump,
    listener: Listener,
    stall: StallWatch,
    stop: asyncio.Event,
    port: int,
) -> int:
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
    log.info("daemon_stopped")
    return 1 if died else 0
