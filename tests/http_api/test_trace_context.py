"""W3C Trace Context end to end: a caller's trace reaches every receiver of the events
it causes, through the API or a SQL session, and nothing else does."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import asyncpg
import psycopg
import pytest
from aiohttp.test_utils import TestClient

from notifier.devtools.daemon_process import wait_until
from notifier.devtools.receiver import Receiver
from notifier.subscriptions.store import SubscriptionStore
from tests.http_api.conftest import new_account
from tests.support import Daemon, start

Conn = psycopg.Connection[tuple[object, ...]]
API_TRACE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
SQL_TRACE = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
FUTURE_TRACE = "cc-5c1f0a7b2e9d4c3b8a6f0e1d2c3b4a59-1a2b3c4d5e6f7a8b-01-what-comes-next"


async def _transaction(
    client: TestClient[Any, Any], account_id: int, kind: str, headers: dict[str, str]
) -> int:
    path = f"/accounts/{account_id}/{kind}"
    response = await client.post(path, json={"amount": 10}, headers=headers)
    assert response.status == 201, await response.text()
    transaction_id: int = (await response.json())["id"]
    return transaction_id


async def test_the_callers_trace_reaches_the_receiver_and_untraced_events_carry_none(
    client: TestClient[Any, Any],
    database_url: str,
    dba: Conn,
    pool: asyncpg.Pool,
    receiver: Receiver,
    daemons: list[Daemon],
    tmp_path: Path,
) -> None:
    store = SubscriptionStore(pool, allow_private_targets=True)
    await store.create(receiver.url("/hook"))
    start(daemons, database_url, tmp_path)
    account_id = await new_account(client)

    traced = await _transaction(
        client,
        account_id,
        "top-ups",
        {"traceparent": API_TRACE, "tracestate": "rojo=00f067aa0ba902b7, congo=t61rcWkgMzE"},
    )
    untraced = await _transaction(client, account_id, "top-ups", {})
    # A malformed traceparent starts no error and no trace: the write goes through.
    malformed = await _transaction(
        client, account_id, "top-ups", {"traceparent": API_TRACE.upper(), "tracestate": "a=b"}
    )
    # A later version's first four fields are kept, passed on as version 00.
    future = await _transaction(client, account_id, "debits", {"traceparent": FUTURE_TRACE})
    # A DBA names the trace for one transaction; the session's next one has none.
    with dba.transaction():
        dba.execute(f"SET LOCAL notifier.traceparent = '{SQL_TRACE}'")
        row = dba.execute(
            "INSERT INTO transactions (account_id, kind, amount) VALUES (%s, 'top_up', 7) "
            "RETURNING id",
            [account_id],
        ).fetchone()
        assert row is not None
        from_sql = int(str(row[0]))
    row = dba.execute(
        "INSERT INTO transactions (account_id, kind, amount) VALUES (%s, 'top_up', 8) RETURNING id",
        [account_id],
    ).fetchone()
    assert row is not None
    after_sql = int(str(row[0]))

    await wait_until(lambda: len(receiver.received) >= 6, what="6 deliveries")
    headers = {json.loads(r.body)["data"]["id"]: r.headers for r in receiver.received}
    assert headers[traced]["traceparent"] == API_TRACE
    assert headers[traced]["tracestate"] == "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"
    assert headers[from_sql]["traceparent"] == SQL_TRACE
    assert "tracestate" not in headers[from_sql]
    assert headers[future]["traceparent"] == (
        "00-5c1f0a7b2e9d4c3b8a6f0e1d2c3b4a59-1a2b3c4d5e6f7a8b-01"
    )
    for untraced_id in (untraced, malformed, after_sql):
        assert "traceparent" not in headers[untraced_id]
        assert "tracestate" not in headers[untraced_id]
    assert len(receiver.received) == 6

    # An operator inspecting the event sees the trace it was made in.
    event_ids = {
        json.loads(r.body)["data"]["id"]: r.headers["webhook-id"] for r in receiver.received
    }
    shown = await client.get(f"/events/{event_ids[traced]}")
    assert shown.status == 200
    body = await shown.json()
    assert (body["traceparent"], body["tracestate"]) == (
        API_TRACE,
        "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE",
    )
    shown = await client.get(f"/events/{event_ids[untraced]}")
    assert (await shown.json())["traceparent"] is None


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"notifier.traceparent": "00-abc-def-01"},
            "notifier.traceparent is not a W3C traceparent: 00-abc-def-01",
        ),
        (
            {"notifier.traceparent": "00-00000000000000000000000000000000-b7ad6b7169203331-01"},
            "is not a W3C traceparent",
        ),
        (
            {"notifier.tracestate": "vendor=value"},
            "notifier.tracestate is not a W3C tracestate, or came without notifier.traceparent",
        ),
        (
            {"notifier.traceparent": SQL_TRACE, "notifier.tracestate": "vendor=caf\u00e9"},
            "notifier.tracestate is not a W3C tracestate",
        ),
        (
            {"notifier.traceparent": SQL_TRACE, "notifier.tracestate": "v=" + "x" * 511},
            "notifier.tracestate is not a W3C tracestate",
        ),
    ],
)
def test_a_malformed_trace_in_sql_is_refused_clearly_and_changes_nothing(
    dba: Conn, settings: dict[str, str], message: str
) -> None:
    account_id = dba.execute(
        "INSERT INTO accounts (currency) VALUES ('USD') RETURNING id"
    ).fetchone()
    assert account_id is not None
    events_before = dba.execute("SELECT count(*) FROM notifier.events").fetchone()
    with dba.transaction(force_rollback=True):
        for name, value in settings.items():
            dba.execute("SELECT set_config(%s, %s, true)", [name, value])
        with pytest.raises(psycopg.errors.InvalidParameterValue, match=message):
            dba.execute(
                "INSERT INTO transactions (account_id, kind, amount) VALUES (%s, 'top_up', 5)",
                [account_id[0]],
            )
    balance = dba.execute("SELECT balance FROM accounts WHERE id = %s", [account_id[0]]).fetchone()
    assert balance == (0,)
    assert dba.execute("SELECT count(*) FROM notifier.events").fetchone() == events_before


async def test_a_malformed_trace_written_around_the_trigger_never_reaches_a_receiver(
    database_url: str,
    dba: Conn,
    pool: asyncpg.Pool,
    receiver: Receiver,
    daemons: list[Daemon],
    tmp_path: Path,
) -> None:
    """The trigger refuses a malformed trace; a row written straight into the outbox is
    checked again before any of it becomes a header, and is delivered all the same."""
    store = SubscriptionStore(pool, allow_private_targets=True)
    await store.create(receiver.url("/hook"))
    rows = {
        "bad-parent": ("00-abc-def-01", None),
        "injected-state": (SQL_TRACE, "a=b\r\nx-injected: 1"),
        "state-alone": (None, "a=b"),
    }
    for name, (traceparent, tracestate) in rows.items():
        dba.execute(
            "INSERT INTO notifier.events (type, topic, table_schema, table_name, op, data, "
            "traceparent, tracestate) VALUES ('x.created', 'x', 'public', 'x', 'INSERT', "
            "jsonb_build_object('name', %s::text), %s, %s)",
            [name, traceparent, tracestate],
        )
    start(daemons, database_url, tmp_path)
    await wait_until(lambda: len(receiver.received) >= 3, what="3 deliveries")
    headers = {json.loads(r.body)["data"]["name"]: r.headers for r in receiver.received}
    assert "traceparent" not in headers["bad-parent"]
    assert headers["injected-state"]["traceparent"] == SQL_TRACE
    assert "tracestate" not in headers["injected-state"]
    assert "x-injected" not in headers["injected-state"]
    assert "traceparent" not in headers["state-alone"]
    assert "tracestate" not in headers["state-alone"]
    assert len(receiver.received) == 3
