"""Inspection and redelivery over HTTP: events, deliveries, stats, retry, recover, replay."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import psycopg
import pytest
from aiohttp.test_utils import TestClient

from notifier.ops.operator import Operations
from tests.ops_support import fanned_events, subscription

Client = TestClient[Any, Any]
Conn = psycopg.Connection[Any]


async def _json(response: Any, status: int) -> Any:
    assert response.status == status, await response.text()
    return await response.json()


async def test_event_shows_deliveries_and_attempts(client: Client, dba: Conn) -> None:
    sub = subscription(dba)
    [uid] = fanned_events(dba, sub, 1)
    event = await _json(await client.get(f"/events/{uid}"), 200)
    assert (event["id"], event["type"], event["table"], event["op"]) == (
        uid,
        "transaction.created",
        "public.transactions",
        "INSERT",
    )
    assert event["data"]["amount"] == 1
    created_at = dba.execute(
        "SELECT (data->>'created_at')::timestamptz FROM notifier.events WHERE uid = %s", [uid]
    ).fetchone()
    assert created_at is not None
    # As delivered: UTC, six fractional digits, Z.
    assert event["data"]["created_at"] == created_at[0].astimezone(UTC).strftime(
        "%Y-%m-%dT%H:%M:%S.%fZ"
    )
    [delivery] = event["deliveries"]
    assert (delivery["subscription_id"], delivery["status"], delivery["event_id"]) == (
        sub,
        "dead",
        uid,
    )
    assert [(a["attempt"], a["outcome"], a["status_code"]) for a in delivery["attempt_log"]] == [
        (1, "http_500", 500)
    ]
    assert (delivery["last_outcome"], delivery["last_status_code"]) == ("http_500", 500)


@pytest.mark.parametrize("event_id", ["0190a0c4-8f2e-7c1a-9b3d-5e6f7a8b9c0d", "not-a-uuid", "1"])
async def test_unknown_event_is_404(client: Client, event_id: str) -> None:
    response = await client.get(f"/events/{event_id}")
    assert response.status == 404
    assert response.content_type == "application/problem+json"


async def test_deliveries_filter_and_page(client: Client, dba: Conn) -> None:
    one, two = subscription(dba), subscription(dba, "https://example.com/two")
    fanned_events(dba, one, 3, status="dead")
    fanned_events(dba, one, 2, status="succeeded")
    fanned_events(dba, two, 4, status="dead", age="2 days")
    dead_of_one = await _json(
        await client.get(f"/deliveries?status=dead&subscription_id={one}"), 200
    )
    assert [d["status"] for d in dead_of_one["items"]] == ["dead"] * 3
    assert {d["subscription_id"] for d in dead_of_one["items"]} == {one}
    recent = await _json(await client.get("/deliveries?since=2030-01-01T00:00:00Z"), 200)
    assert recent == {"items": [], "next_after": None}
    day_ago = await _json(
        await client.get("/deliveries?status=dead&since=2000-01-01T00:00:00Z"), 200
    )
    assert len(day_ago["items"]) == 7
    seen, after = [], 0
    while True:
        page = await _json(await client.get(f"/deliveries?limit=4&after={after}"), 200)
        seen += [d["id"] for d in page["items"]]
        if page["next_after"] is None:
            break
        after = page["next_after"]
    assert len(seen) == len(set(seen)) == 9
    assert seen == sorted(seen)


@pytest.mark.parametrize(
    "query",
    [
        "status=lost",
        "subscription_id=0",
        "since=yesterday",
        "since=2026-01-01T00:00:00",
        # Numbers are not date-time strings, though a parser may read them as Unix times.
        "since=0.5",
        "since=0",
        "since=1767225600",
        "since=2h",  # a duration: the CLI takes one, the API does not
        "since=2026-01-01T00:00Z",  # RFC 3339 wants seconds
        "since=2026-01-01%2000:00:00Z",
        "limit=0",
        "x=1",
    ],
)
async def test_bad_delivery_queries_are_422(client: Client, query: str) -> None:
    response = await client.get(f"/deliveries?{query}")
    assert response.status == 422
    assert response.content_type == "application/problem+json"


@pytest.mark.parametrize(
    "moment",
    [
        "2026-01-01T00:00:00Z",
        "2026-01-01t00:00:00z",
        "2026-01-01T00:00:00.5Z",
        "2026-01-01T02:00:00.123456%2B02:00",
        "2026-01-01T00:00:00-00:30",
    ],
)
async def test_rfc3339_moments_are_accepted(client: Client, moment: str) -> None:
    assert (await client.get(f"/deliveries?since={moment}")).status == 200


async def test_stats_counts_and_health(client: Client, dba: Conn) -> None:
    sub = subscription(dba)
    fanned_events(dba, sub, 3, status="dead")
    fanned_events(dba, sub, 2, status="succeeded")
    dba.execute(
        "UPDATE notifier.subscriptions SET consecutive_failures = 12, "
        "failing_since = now() - interval '1 hour', last_failure_at = now() WHERE id = %s",
        [sub],
    )
    stats = await _json(await client.get(f"/subscriptions/{sub}/stats"), 200)
    assert stats["deliveries"] == {"pending": 0, "in_flight": 0, "succeeded": 2, "dead": 3}
    assert stats["consecutive_failures"] == 12
    assert stats["failing_since"].endswith("Z")
    assert stats["last_success_at"] is None
    assert (await client.get("/subscriptions/999/stats")).status == 404


async def test_retry_one_delivery(client: Client, dba: Conn) -> None:
    sub = subscription(dba)
    fanned_events(dba, sub, 1, status="dead")
    [(delivery_id,)] = dba.execute("SELECT id FROM notifier.deliveries").fetchall()
    retried = await _json(await client.post(f"/deliveries/{delivery_id}/retry"), 202)
    assert (retried["status"], retried["completed_at"]) == ("pending", None)
    row = dba.execute(
        "SELECT status, attempts, schedule_offset, next_attempt_at <= now() "
        "FROM notifier.deliveries"
    ).fetchone()
    assert row == ("pending", 4, 4, True)  # due now, with the whole schedule ahead
    dba.execute("UPDATE notifier.deliveries SET status = 'in_flight'")
    busy = await client.post(f"/deliveries/{delivery_id}/retry")
    assert busy.status == 409
    assert (await busy.json())["type"].endswith("delivery-in-flight")
    assert (await client.post("/deliveries/424242/retry")).status == 404
    assert (await client.post("/deliveries/abc/retry")).status == 404


async def test_recover_resets_dead_since_and_adds_missed(client: Client, dba: Conn) -> None:
    sub = subscription(dba)
    dba.execute("UPDATE notifier.subscriptions SET created_at = now() - interval '1 year'")
    old = fanned_events(dba, sub, 2, status="dead", age="3 days")
    recent_dead = fanned_events(dba, sub, 3, status="dead", age="1 hour")
    fanned_events(dba, sub, 2, status="succeeded", age="1 hour")
    other = subscription(dba, "https://example.com/other")
    missed = fanned_events(dba, other, 4, status="succeeded", age="30 minutes")
    result = await _json(
        await client.post(f"/subscriptions/{sub}/recover", json={"since": "2000-01-01T00:00:00Z"}),
        202,
    )
    assert (result["reset"], result["created"]) == (5, 4)
    dba.execute("UPDATE notifier.deliveries SET status = 'dead' WHERE subscription_id = %s", [sub])
    since = (datetime.now(UTC) - timedelta(days=2)).isoformat()
    again = await _json(
        await client.post(f"/subscriptions/{sub}/recover", json={"since": since}), 202
    )
    assert (again["reset"], again["created"]) == (3 + 2 + 4, 0)
    still_dead = dba.execute(
        "SELECT e.uid::text FROM notifier.deliveries d JOIN notifier.events e ON e.id = d.event_id "
        "WHERE d.subscription_id = %s AND d.status = 'dead'",
        [sub],
    ).fetchall()
    assert sorted(r[0] for r in still_dead) == sorted(old)
    assert {len(recent_dead), len(missed)} == {3, 4}


async def test_replay_a_range_new_and_again(client: Client, dba: Conn) -> None:
    early = subscription(dba)
    fanned_events(dba, early, 5, status="succeeded", age="2 hours")
    fanned_events(dba, early, 5, status="succeeded", age="10 days")
    late = subscription(dba, "https://example.com/late")  # created after every event
    body = {"since": "2000-01-01T00:00:00Z"}
    first = await _json(await client.post(f"/subscriptions/{late}/replay", json=body), 202)
    assert (first["created"], first["reset"]) == (10, 0)
    window = await _json(
        await client.post(
            f"/subscriptions/{early}/replay",
            json={"since": "2000-01-01T00:00:00Z", "until": "2100-01-01T00:00:00Z"},
        ),
        202,
    )
    assert (window["created"], window["reset"]) == (0, 0)  # already sent: not without again
    again = await _json(
        await client.post(f"/subscriptions/{early}/replay", json={**body, "again": True}), 202
    )
    assert (again["created"], again["reset"]) == (0, 10)
    statuses = dba.execute(
        "SELECT status, count(*) FROM notifier.deliveries GROUP BY status"
    ).fetchall()
    assert statuses == [("pending", 20)]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"since": "yesterday"},
        {"since": "2026-01-01T00:00:00"},
        {"since": "9999-12-31T23:59:59-23:59"},
        {"since": 0},
        {"since": 1767225600.5},
        {"since": "0"},
        {"since": "2026-01-01T00:00:00Z", "until": 0},
        {"since": "2026-01-01T00:00:00Z", "until": "1767225600"},
        {"since": "2026-01-01T00:00:00Z", "again": "yes"},
        {"since": "2026-01-01T00:00:00Z", "extra": 1},
    ],
)
async def test_bad_replay_and_recover_bodies_are_422(
    client: Client, dba: Conn, body: dict[str, Any]
) -> None:
    sub = subscription(dba)
    for action in ("replay", "recover"):
        if action == "recover" and ("again" in body or "until" in body):
            continue
        response = await client.post(f"/subscriptions/{sub}/{action}", json=body)
        assert response.status == 422, (action, await response.text())
        assert response.content_type == "application/problem+json"


@pytest.mark.parametrize(
    ("since", "until"),
    [
        ("2026-01-02T00:00:00Z", "2026-01-01T00:00:00Z"),
        ("2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z"),  # empty: nothing could be meant
        ("2026-01-01T01:00:00+02:00", "2026-01-01T00:00:00+01:00"),  # the same moment
    ],
)
async def test_replay_range_must_end_after_it_starts(
    client: Client, dba: Conn, since: str, until: str
) -> None:
    sub = subscription(dba)
    response = await client.post(
        f"/subscriptions/{sub}/replay", json={"since": since, "until": until}
    )
    assert response.status == 422, await response.text()
    assert response.content_type == "application/problem+json"
    [error] = (await response.json())["errors"]
    assert error["field"] == "until"
    assert "later than since" in error["message"]


async def test_recover_and_replay_of_unknown_subscription_are_404(client: Client) -> None:
    for action in ("replay", "recover"):
        response = await client.post(
            f"/subscriptions/77/{action}", json={"since": "2026-01-01T00:00:00Z"}
        )
        assert response.status == 404


async def test_recover_works_in_batches(dba: Conn, database_url: str) -> None:
    sub = subscription(dba)
    dba.execute("UPDATE notifier.subscriptions SET created_at = now() - interval '1 day'")
    fanned_events(dba, sub, 25, status="dead", age="1 hour")
    conn = await asyncpg.connect(database_url)
    try:
        result = await Operations(conn, batch_size=7).recover(
            sub, datetime.now(UTC) - timedelta(days=1)
        )
    finally:
        await conn.close()
    assert (result.reset, result.batches, result.events_scanned) == (25, 4, 25)
