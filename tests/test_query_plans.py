"""The daemon's per-batch statements reach history by key, never by scanning it.

The events and deliveries tables only grow. A statement that scans either of them
costs time in proportion to everything ever captured, on every batch: delivery gets
slower week by week. Each statement is planned here as the daemon plans it, against
a few thousand rows of history, and its plan must touch history through an index.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from notifier.db.pool import connect, create_pool, load_queries
from notifier.engine.daemon import DAEMON_SESSION
from notifier.subscriptions.store import SubscriptionStore, generate_secret

HISTORY = 5000
GROWING = {"events", "deliveries", "delivery_attempts", "batches"}
QUERIES = load_queries("outbox")


def _scans(plan: dict[str, Any]) -> Iterator[tuple[str, str]]:
    if "Relation Name" in plan:
        yield plan["Node Type"], plan["Relation Name"]
    for child in plan.get("Plans", []):
        yield from _scans(child)


async def _seq_scans(conn: asyncpg.Connection, query: str, *args: object) -> set[str]:
    """The growing tables that the statement's plan scans whole, planned both ways the
    daemon's cached statements may be: for these values, and generic (for any values)."""
    found: set[str] = set()
    for mode in ("force_custom_plan", "force_generic_plan"):
        await conn.execute(f"SET plan_cache_mode = {mode}")
        explained = await conn.fetchval(f"EXPLAIN (FORMAT JSON) {query}", *args)
        plan = json.loads(explained)[0]["Plan"]
        scanned = {table for node, table in _scans(plan) if node == "Seq Scan"} & GROWING
        found |= {f"{table} ({mode})" for table in scanned}
    await conn.execute("RESET plan_cache_mode")
    return found


@pytest.fixture(params=["none", "key"])
async def history(
    database_url: str, request: pytest.FixtureRequest
) -> AsyncIterator[asyncpg.Connection]:
    """HISTORY delivered events (in batches, each with a delivery row too: the history of
    both), one new event not yet claimed, one batch and one delivery in flight; for an
    ordered subscription (by account) the in-flight one is its key's head, a later event
    of its key waits, and another key's head finished with one waiting (a freed key).

    No ANALYZE: the planner sees the tables as it does before autovacuum catches up,
    with its deleted rows still counted.
    """
    conn = await asyncpg.connect(database_url, server_settings=DAEMON_SESSION)
    subscription = await SubscriptionStore(conn, allow_private_targets=True).create(
        "http://127.0.0.1:9/",
        secret=generate_secret(),
        event_types=["transaction.*"],
        ordering=request.param,
    )
    await conn.execute("INSERT INTO accounts (currency) SELECT 'USD' FROM generate_series(1, 10)")
    await conn.execute(
        "INSERT INTO transactions (account_id, kind, amount) "
        "SELECT 1 + n % 10, 'top_up', 1 FROM generate_series(1, $1) n",
        HISTORY,
    )
    await conn.execute(
        "UPDATE notifier.positions SET since = pg_current_snapshot()"
    )  # the position past them all
    await conn.execute(
        "INSERT INTO notifier.batches (subscription_id, event_ids, finished_at, succeeded)"
        " SELECT $1, array_agg(id ORDER BY id), now(), count(*) FROM notifier.events"
        " GROUP BY id / 200",
        subscription.id,
    )
    await conn.execute(
        "UPDATE notifier.batches SET finished_at = NULL, lease_expires_at = now()"
        " WHERE id = (SELECT max(id) FROM notifier.batches)"
    )
    await conn.execute(
        "INSERT INTO notifier.deliveries (event_id, subscription_id, status, attempts, completed_at)"
        " SELECT id, $1, 'succeeded', 1, now() FROM notifier.events",
        subscription.id,
    )
    await conn.execute(
        "INSERT INTO notifier.delivery_attempts"
        " (delivery_id, attempt, started_at, duration_ms, outcome)"
        " SELECT id, 1, now(), 1, 'http_204' FROM notifier.deliveries"
    )
    await conn.execute(
        "UPDATE notifier.deliveries SET status = 'in_flight', attempts = 2"
        " WHERE id = (SELECT max(id) FROM notifier.deliveries)"
    )
    if request.param == "key":
        await conn.execute(
            "UPDATE notifier.deliveries d SET ordering_key = e.data ->> 'account_id'"
            " FROM notifier.events e WHERE e.id = d.event_id"
        )
        # Key of the in-flight head: it, and a later event waiting. Another key: freed,
        # with its last event waiting.
        head = await conn.fetchrow(
            "SELECT event_id, ordering_key FROM notifier.deliveries WHERE status = 'in_flight'"
        )
        waiting = await conn.fetch(
            "UPDATE notifier.deliveries SET status = 'pending', next_attempt_at = 'infinity'"
            " WHERE id IN (SELECT max(id) FROM notifier.deliveries"
            "               WHERE status = 'succeeded' GROUP BY ordering_key LIMIT 2)"
            " RETURNING ordering_key"
        )
        await conn.executemany(
            "INSERT INTO notifier.ordering_keys (subscription_id, key, head, waiting)"
            " VALUES ($1, $2, $3, 1)",
            [
                (
                    subscription.id,
                    row["ordering_key"],
                    head["event_id"] if row["ordering_key"] == head["ordering_key"] else None,
                )
                for row in waiting
            ],
        )
    await conn.execute(
        "INSERT INTO transactions (account_id, kind, amount) VALUES (1, 'top_up', 1)"
    )
    try:
        yield conn
    finally:
        await conn.close()


async def test_claim_fetches_events_by_key(history: asyncpg.Connection) -> None:
    # Its plan holds the checks made before parking (the next retry or lease due) too.
    for room in ([], [1]):
        scans = await _seq_scans(
            history, QUERIES["claim"], 100, 30.0, room, [50] * len(room), 200, 100, 2
        )
        assert not scans, f"claim scans {scans} whole"
        scans = await _seq_scans(
            history, QUERIES["claim_new"], 100, 30.0, room, [50] * len(room), 200, 2
        )
        assert not scans, f"claim_new scans {scans} whole"


async def test_settle_and_leases_find_deliveries_by_key(history: asyncpg.Connection) -> None:
    delivery_id, event_id, subscription_id = await history.fetchrow(
        "SELECT id, event_id, subscription_id FROM notifier.deliveries ORDER BY id DESC LIMIT 1"
    )
    batch_id, batch_event, batch_subscription, claimed_at = await history.fetchrow(
        "SELECT id, event_ids[1], subscription_id, claimed_at FROM notifier.batches"
        " WHERE finished_at IS NULL"
    )
    now = datetime.now(UTC)
    settle = await _seq_scans(
        history,
        QUERIES["settle"],
        [delivery_id, None],
        [None, batch_id],
        [event_id, batch_event],
        [2, 1],
        ["succeeded", "pending"],
        [0.0, 1.0],
        ["http_204", "http_500"],
        [None, "http_500"],
        [now, now],
        [1.5, 1.5],
        ["", ""],
        [subscription_id, batch_subscription],
        [None, claimed_at],
    )
    assert not settle, f"settle scans {settle} whole"
    held: dict[str, tuple[object, ...]] = {
        "extend_leases": ([delivery_id], [2], 30.0, [batch_id], [1]),
        "release": ([delivery_id], [2]),
    }
    for name, args in held.items():
        scans = await _seq_scans(history, QUERIES[name], *args)
        assert not scans, f"{name} scans {scans} whole"


async def test_the_products_sessions_never_compile_statements(database_url: str) -> None:
    # A claim planned without statistics is estimated above jit_above_cost; compiling it
    # took seconds, at every execution of its cached plan.
    conn = await connect(database_url)
    pool = await create_pool(database_url, server_settings=DAEMON_SESSION)
    try:
        assert await conn.fetchval("SHOW jit") == "off"
        assert await pool.fetchval("SHOW jit") == "off"
        assert await pool.fetchval("SHOW application_name") == DAEMON_SESSION["application_name"]
    finally:
        await pool.close()
        await conn.close()
