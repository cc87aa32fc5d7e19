"""Retention: 100,000 finished events removed in budgeted batches while writers and a
daemon keep working; what is not finished, or still queued, stays."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from pathlib import Path

import asyncpg
import psycopg

from notifier.db.migrate import migrate
from notifier.db.pool import create_pool
from notifier.devtools.daemon_process import wait_until
from notifier.devtools.receiver import Receiver
from notifier.engine.daemon import keep_session
from notifier.engine.upkeep import keep_retention
from notifier.ops.retention import RetentionPolicy, run_retention
from notifier.settings import Settings
from notifier.subscriptions.store import SubscriptionStore
from tests.ops_support import fanned_events
from tests.pg import embedded_server
from tests.support import Daemon

Conn = psycopg.Connection[tuple[object, ...]]
BUDGET_MS = 1000
# The statement timeout's cancel, the rollback and the round trip, on a busy machine.
CANCEL_SLACK_SECONDS = 0.5
POLICY = RetentionPolicy(
    retention_seconds=7 * 86400,
    dead_letter_retention_seconds=30 * 86400,
    batch_size=5000,
    batch_budget_ms=BUDGET_MS,
)


def _keepers(dba: Conn, sub: int) -> set[str]:
    """Old events retention must keep: unfinished, recently dead, or held in a batch
    being sent.
    ``sub`` is disabled, so the running daemon leaves its pending deliveries alone."""
    kept = set(fanned_events(dba, sub, 3, status="pending", age="10 days"))
    recently_dead = fanned_events(dba, sub, 3, status="dead", age="10 days")
    dba.execute(  # captured 10 days ago, died 10 days ago: inside the 30-day dead-letter window
        "UPDATE notifier.deliveries SET completed_at = now() - interval '10 days' "
        "WHERE event_id IN (SELECT id FROM notifier.events WHERE uid = ANY(%s::uuid[]))",
        [recently_dead],
    )
    kept |= set(recently_dead)
    held = fanned_events(dba, sub, 2, status="succeeded", age="10 days")
    dba.execute(  # claimed by a daemon that has not recorded them yet
        "INSERT INTO notifier.batches (subscription_id, event_ids, lease_expires_at)"
        " SELECT %s, array_agg(id ORDER BY id), now() + interval '1 hour'"
        "   FROM notifier.events WHERE uid = ANY(%s::uuid[])",
        [sub, held],
    )
    return kept | set(held)


async def _write(database_url: str, stop: asyncio.Event, latencies: list[float]) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        account = await conn.fetchval("INSERT INTO accounts (currency) VALUES ('USD') RETURNING id")
        written = 0
        while not stop.is_set():
            began = time.perf_counter()
            await conn.execute(
                "INSERT INTO transactions (account_id, kind, amount) VALUES ($1, 'top_up', 1)",
                account,
            )
            latencies.append(time.perf_counter() - began)
            written += 1
            await asyncio.sleep(0.005)
        return written
    finally:
        await conn.close()


async def test_retention_over_100000_finished_events_with_concurrent_writes(
    database_url: str,
    dba: Conn,
    pool: asyncpg.Pool,
    receiver: Receiver,
    daemons: list[Daemon],
    tmp_path: Path,
) -> None:
    sub = (
        await SubscriptionStore(pool, allow_private_targets=True).create(receiver.url("/new"))
    ).id
    fanned_events(dba, sub, 100_000, status="succeeded", age="8 days")
    fanned_events(dba, sub, 50, status="dead", age="40 days")  # dead long enough: goes too
    paused = (
        await SubscriptionStore(pool, allow_private_targets=True).create(
            receiver.url("/paused"), enabled=False
        )
    ).id
    kept = _keepers(dba, paused)
    # A daemon in the middle of recording the held batch: it holds the batch's row.
    recording = await asyncpg.connect(database_url)
    recording_tx = recording.transaction()
    await recording_tx.start()
    await recording.execute("SELECT * FROM notifier.batches FOR UPDATE")
    dba.execute("ANALYZE")
    daemon = Daemon(database_url, tmp_path / "daemon.log", NOTIFIER_RETENTION="30d")
    daemons.append(daemon)

    stop, latencies = asyncio.Event(), []
    writer = asyncio.create_task(_write(database_url, stop, latencies))
    await asyncio.sleep(0.3)
    conn = await asyncpg.connect(database_url)
    try:
        run = await run_retention(conn, POLICY)
    finally:
        await conn.close()
    stop.set()
    written = await writer
    await recording_tx.rollback()
    await recording.close()

    assert run.deleted == 100_050
    # A batch over its budget is cancelled by the server and tried again smaller (on a
    # busy machine, some are): either way no batch holds its locks much past the
    # budget, and no writer waits that long.
    assert max(run.batch_seconds) < BUDGET_MS / 1000 + CANCEL_SLACK_SECONDS
    assert max(latencies) < BUDGET_MS / 1000 + CANCEL_SLACK_SECONDS
    remaining = {str(r["uid"]) for r in await pool.fetch("SELECT uid FROM notifier.events")}
    assert kept <= remaining
    assert len(remaining) == len(kept) + written
    old_deliveries = await pool.fetchval(
        "SELECT count(*) FROM notifier.deliveries WHERE created_at < now() - interval '1 day'"
    )
    assert old_deliveries == len(kept)
    await wait_until(
        lambda: len(receiver.ok_event_ids("/new")) == written, what="the new events delivered"
    )
    assert set(receiver.ok_event_ids("/new")) <= remaining


async def test_one_run_at_a_time_and_the_daemon_runs_it(
    database_url: str,
    dba: Conn,
    pool: asyncpg.Pool,
    daemons: list[Daemon],
    tmp_path: Path,
) -> None:
    sub = (await SubscriptionStore(pool, allow_private_targets=True).create("http://x.test/")).id
    fanned_events(dba, sub, 20, status="succeeded", age="8 days")
    holder = await asyncpg.connect(database_url)
    other = await asyncpg.connect(database_url)
    try:
        await holder.fetchval("SELECT pg_advisory_lock(hashtext('notifier.retention'))")
        assert (await run_retention(other, POLICY)).ran is False
        await holder.fetchval("SELECT pg_advisory_unlock(hashtext('notifier.retention'))")
    finally:
        await holder.close()
        await other.close()
    assert await pool.fetchval("SELECT count(*) FROM notifier.events") == 20
    daemon = Daemon(
        database_url,
        tmp_path / "daemon.log",
        NOTIFIER_RETENTION="7d",
        NOTIFIER_RETENTION_INTERVAL_SECONDS="0.5",
    )
    daemons.append(daemon)

    async def emptied() -> bool:
        return await pool.fetchval("SELECT count(*) FROM notifier.events") == 0

    await wait_until(emptied, what="the daemon's retention run")
    # The run goes on to the records of batches before it reports: wait for its report.
    await wait_until(
        lambda: any(line["event"] == "retention_done" for line in daemon.logs()),
        what="the run's report",
    )
    assert await daemon.terminate() == 0


async def test_outbox_size_stays_bounded_over_repeated_days() -> None:
    """Day after day of events, each retention run followed by (auto)vacuum: the
    tables reuse the freed space instead of growing with every day's volume.

    On a server of its own: a freed index page is reused only once no transaction anywhere
    on the server is older than its deletion, and on a server shared with other tests
    some transaction always is."""
    with embedded_server() as server:
        server.start()
        url = server.url()
        conn = await asyncpg.connect(url)
        try:
            await migrate(conn)
            sub = (
                await SubscriptionStore(conn, allow_private_targets=True).create("http://x.test/")
            ).id
            sizes = await _days_of_retention(url, conn, sub, days=5)
        finally:
            await conn.close()
    # Freed index pages are recycled one vacuum later, so the footprint settles at about
    # two days' volume on the second day and stays there, where five days' volume
    # without retention would be five times the first day's.
    assert max(sizes[1:]) <= sizes[1] * 1.1, sizes
    assert sizes[-1] < 2.5 * sizes[0], sizes


async def _days_of_retention(url: str, conn: asyncpg.Connection, sub: int, days: int) -> list[int]:
    """The notifier tables' total size after each day's 20,000 events, retention run and
    vacuum."""
    # The batch budget has a test of its own (above); here it only has to let every run
    # finish, so that each day's volume goes.
    policy = dataclasses.replace(POLICY, batch_budget_ms=30_000)
    tables = ("notifier.events", "notifier.deliveries", "notifier.delivery_attempts")
    sizes: list[int] = []
    with psycopg.connect(url, autocommit=True) as dba:
        for _day in range(days):
            fanned_events(dba, sub, 20_000, status="succeeded", age="8 days")
            run = await run_retention(conn, policy)
            assert run.deleted == 20_000
            dba.execute("VACUUM " + ", ".join(tables))  # what autovacuum does in service
            sizes.append(
                await conn.fetchval(
                    "SELECT sum(pg_total_relation_size(t::regclass))::bigint"
                    " FROM unnest($1::text[]) AS t",
                    list(tables),
                )
            )
    return sizes


async def test_a_run_cut_short_on_the_daemons_pool_leaves_no_lock_behind(
    database_url: str, dba: Conn, pool: asyncpg.Pool
) -> None:
    """The daemon's pool does not reset released connections, so retention must not
    hand one back still holding its session lock: no daemon could run it again."""
    sub = (await SubscriptionStore(pool, allow_private_targets=True).create("http://x.test/")).id
    fanned_events(dba, sub, 5, status="succeeded", age="8 days")
    daemon_pool = await create_pool(database_url, min_size=1, max_size=1, reset=keep_session)
    blocker = await asyncpg.connect(database_url)
    # This database's: the tests beside it run daemons, and retention, of their own.
    held = (
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    )
    try:
        async with blocker.transaction():
            # A DBA's lock on the outbox: the purge waits for it, retention's lock in hand.
            await blocker.execute("LOCK TABLE notifier.deliveries IN ACCESS EXCLUSIVE MODE")
            settings = Settings(database_url=database_url, retention_batch_budget_ms=60_000)
            task = asyncio.create_task(keep_retention(daemon_pool, settings))

            async def running() -> bool:
                return await pool.fetchval(held) == 1

            await wait_until(running, what="retention to take its lock")
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        assert await pool.fetchval(held) == 0
        async with daemon_pool.acquire() as conn:
            assert await conn.fetchval(
                "SELECT pg_try_advisory_lock(hashtext('notifier.retention'))"
            )
            await conn.fetchval("SELECT pg_advisory_unlock(hashtext('notifier.retention'))")
    finally:
        await blocker.close()
        await daemon_pool.close()
