"""`notifier run` end to end: real processes, a real PostgreSQL, real HTTP receivers."""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path

import aiohttp
import asyncpg
import psycopg
from standardwebhooks.webhooks import Webhook

from notifier.devtools.daemon_process import wait_until
from notifier.devtools.receiver import Receiver
from notifier.subscriptions.store import SubscriptionStore
from tests.support import Daemon, caught_up, start

Conn = psycopg.Connection[tuple[object, ...]]
SUCCEEDED = 'notifier_deliveries_total{outcome="succeeded",sink="webhook"}'
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
METADATA = {"note": "caf\u00e9", "at": "2026-11-21T20:00:00.12+00:00"}


async def _succeeded_at_least(daemon: Daemon, count: int) -> bool:
    return (await daemon.metric(SUCCEEDED) or 0) >= count


def account(dba: Conn) -> int:
    row = dba.execute("INSERT INTO accounts (currency) VALUES ('USD') RETURNING id").fetchone()
    assert row is not None
    return int(str(row[0]))


def top_ups(dba: Conn, account_id: int, count: int) -> None:
    dba.execute(
        "INSERT INTO transactions (account_id, kind, amount) "
        "SELECT %s, 'top_up', n FROM generate_series(1, %s) n",
        [account_id, count],
    )


async def test_events_arrive_once_signed_and_in_the_contract_shape(
    database_url: str,
    dba: Conn,
    pool: asyncpg.Pool,
    receiver: Receiver,
    daemons: list[Daemon],
    tmp_path: Path,
) -> None:
    store = SubscriptionStore(pool, allow_private_targets=True)
    all_events = await store.create(receiver.url("/all"), event_types=["transaction.*"])
    rotated = await store.create(receiver.url("/rotated"))
    rotated_now = await store.rotate_secret(rotated.id, overlap_seconds=3600)
    assert rotated_now is not None
    await store.create(receiver.url("/other"), event_types=["order.created"])
    daemon = start(daemons, database_url, tmp_path, NOTIFIER_LOG_LEVEL="debug")

    account_id = account(dba)
    top_ups(dba, account_id, 3)  # a DBA in psql
    conn = await asyncpg.connect(database_url)  # an application on its own connection
    try:
        await conn.execute(
            "INSERT INTO transactions (account_id, kind, amount, metadata) "
            "VALUES ($1, 'debit', 2, $2)",
            account_id,
            json.dumps(METADATA),
        )
    finally:
        await conn.close()

    await wait_until(lambda: len(receiver.received) >= 8, what="8 deliveries")
    health = f"http://127.0.0.1:{daemon.port}"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{health}/healthz") as response:
            assert response.status == 200
        await wait_until(lambda: _succeeded_at_least(daemon, 8), what="metrics")
        async with http.get(f"{health}/metrics") as response:
            text = await response.text()
    assert 'notifier_attempt_duration_seconds_count{sink="webhook"} 8.0' in text
    assert 'notifier_delivery_latency_seconds_count{sink="webhook"} 8.0' in text
    assert "notifier_backlog " in text
    assert "notifier_oldest_pending_age_seconds " in text
    assert await daemon.terminate() == 0

    grouped = receiver.by_path()
    assert "/other" not in grouped
    assert len(grouped["/all"]) == 4
    assert len(grouped["/rotated"]) == 4
    rows = {
        r["id"]: r
        for r in await pool.fetch(
            "SELECT data->>'id' AS tx, uid::text AS id, type, created_at FROM notifier.events"
        )
    }
    committed = {r["id"]: r["created_at"] for r in await pool.fetch("SELECT * FROM transactions")}
    verifiers = {
        "/all": [Webhook(all_events.secret)],
        "/rotated": [Webhook(rotated_now.secret), Webhook(rotated.secret)],
    }
    for path, requests in grouped.items():
        assert len({r.headers["webhook-id"] for r in requests}) == 4, "each event once"
        for request in requests:
            for verifier in verifiers[path]:
                assert verifier.verify(request.body, request.headers) == request.event
            event = request.event
            assert list(event) == ["id", "type", "timestamp", "data", "previous"]
            assert event["id"] == request.headers["webhook-id"]
            assert event["type"] == "transaction.created"
            assert TIMESTAMP.match(event["timestamp"])
            assert event["previous"] is None
            assert event["data"]["account_id"] == account_id
            assert rows[event["id"]]["tx"] == str(event["data"]["id"])
            assert TIMESTAMP.match(event["data"]["created_at"])
            assert (
                datetime.fromisoformat(event["data"]["created_at"])
                == committed[event["data"]["id"]]
            )
            assert request.headers["Content-Type"] == "application/json"
            assert request.headers["User-Agent"].startswith("notifier/")
        signatures = requests[0].headers["webhook-signature"].split(" ")
        assert len(signatures) == (2 if path == "/rotated" else 1)
    debit = next(r.event for r in grouped["/all"] if r.event["data"]["kind"] == "debit")
    assert debit["data"]["metadata"] == METADATA  # nested values exactly as written

    statuses = await pool.fetch("SELECT status, attempts FROM notifier.delivery_states")
    assert [tuple(s) for s in statuses] == [("succeeded", 1)] * 8
    outcome_lines = [line for line in daemon.logs() if line["event"] == "delivery_succeeded"]
    assert len(outcome_lines) == 8
    assert {
        "event_id",
        "delivery_id",
        "subscription_id",
        "attempt",
        "status",
        "duration_ms",
    } <= set(outcome_lines[0])
    log_text = daemon.log_path.read_text()
    assert all_events.secret not in log_text
    assert rotated_now.secret not in log_text


async def test_a_later_subscription_gets_only_later_events(
    database_url: str,
    dba: Conn,
    pool: asyncpg.Pool,
    receiver: Receiver,
    daemons: list[Daemon],
    tmp_path: Path,
) -> None:
    account_id = account(dba)
    top_ups(dba, account_id, 2)
    await SubscriptionStore(pool, allow_private_targets=True).create(receiver.url("/late"))
    top_ups(dba, account_id, 1)
    daemon = start(daemons, database_url, tmp_path)
    await wait_until(lambda: len(receiver.received) >= 1, what="the later event")
    await wait_until(lambda: caught_up(pool), what="the position past every event")
    assert await daemon.terminate() == 0
    assert [r.event["data"]["amount"] for r in receiver.received] == [1]


async def test_a_table_left_unvacuumed_is_named_at_start(
    database_url: str, dba: Conn, daemons: list[Daemon], tmp_path: Path
) -> None:
    dba.execute("ALTER TABLE notifier.batches SET (autovacuum_enabled = off)")
    server_off = dba.execute("SELECT NOT current_setting('autovacuum')::boolean").fetchone()
    daemon = start(daemons, database_url, tmp_path)
    await wait_until(
        lambda: any(line["event"] == "daemon_started" for line in daemon.logs()), what="start"
    )
    assert await daemon.terminate() == 0
    warnings = [line for line in daemon.logs() if line["event"] == "autovacuum_off"]
    assert len(warnings) == 1
    assert warnings[0]["level"] == "warning"
    assert warnings[0]["tables"] == ["batches"]
    assert server_off is not None
    assert warnings[0]["server"] is server_off[0]


async def test_events_deleted_by_hand_are_shrugged_off(
    database_url: str,
    dba: Conn,
    pool: asyncpg.Pool,
    receiver: Receiver,
    daemons: list[Daemon],
    tmp_path: Path,
) -> None:
    """A superuser's DELETE FROM notifier.events, before the daemon moved past them and
    while a batch of them is held, leaves positions and batches naming events that are
    gone: the daemon passes over them and delivers what comes next."""
    await SubscriptionStore(pool, allow_private_targets=True).create(receiver.url("/after"))
    account_id = account(dba)
    top_ups(dba, account_id, 5)
    dba.execute(
        "INSERT INTO notifier.batches (subscription_id, event_ids, lease_expires_at)"
        " SELECT 1, array_agg(id ORDER BY id), now() FROM notifier.events"
    )
    dba.execute("DELETE FROM notifier.events")
    daemon = start(daemons, database_url, tmp_path)
    top_ups(dba, account_id, 2)
    await wait_until(lambda: len(receiver.received) >= 2, what="the events written afterwards")
    await wait_until(lambda: caught_up(pool), what="the position past every event")
    await wait_until(
        lambda: pool.fetchval("SELECT bool_and(finished_at IS NOT NULL) FROM notifier.batches"),
        what="the held batch recorded",
    )
    assert await daemon.terminate() == 0
    assert sorted(r.event["data"]["amount"] for r in receiver.received) == [1, 2]
    assert [line for line in daemon.logs() if line["level"] in ("error", "critical")] == []
