"""Outbox capture: an event exists exactly for each committed change, however it arrived."""

from __future__ import annotations

import asyncio
import json

import asyncpg
import psycopg
import pytest

Conn = psycopg.Connection[tuple[object, ...]]


def _funded_account(dba: Conn, balance: int = 10_000) -> int:
    row = dba.execute("INSERT INTO accounts (currency) VALUES ('USD') RETURNING id").fetchone()
    assert row is not None
    account_id = int(str(row[0]))
    dba.execute(
        "INSERT INTO transactions (account_id, kind, amount) VALUES (%s, 'top_up', %s)",
        [account_id, balance],
    )
    return account_id


def _events(dba: Conn) -> list[tuple[object, ...]]:
    return dba.execute("SELECT type, data, previous FROM notifier.events ORDER BY id").fetchall()


def _count(dba: Conn, table: str) -> int:
    row = dba.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None
    return int(str(row[0]))


def test_rolled_back_transaction_leaves_no_event(dba: Conn) -> None:
    account_id = _funded_account(dba)
    before = _count(dba, "notifier.events")
    with dba.transaction(force_rollback=True):
        dba.execute(
            "INSERT INTO transactions (account_id, kind, amount) VALUES (%s, 'debit', 5)",
            [account_id],
        )
        assert _count(dba, "notifier.events") == before + 1
    assert _count(dba, "notifier.events") == before


def test_rolled_back_savepoint_leaves_no_event(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        account = conn.execute(
            "INSERT INTO accounts (currency) VALUES ('USD') RETURNING id"
        ).fetchone()
        assert account is not None
        conn.execute("SAVEPOINT before_top_up")
        conn.execute(
            "INSERT INTO transactions (account_id, kind, amount) VALUES (%s, 'top_up', 7)",
            [account[0]],
        )
        conn.execute("ROLLBACK TO SAVEPOINT before_top_up")
        conn.execute(
            "INSERT INTO transactions (account_id, kind, amount) VALUES (%s, 'top_up', 9)",
            [account[0]],
        )
        conn.commit()
        events = conn.execute("SELECT data->>'amount' FROM notifier.events").fetchall()
        balance = conn.execute(
            "SELECT balance FROM accounts WHERE id = %s", [account[0]]
        ).fetchone()
    assert events == [("9",)]
    assert balance == (9,)


def test_multi_row_insert_and_insert_select_create_one_event_per_row(dba: Conn) -> None:
    account_id = _funded_account(dba)
    before = _count(dba, "notifier.events")
    dba.execute(
        "INSERT INTO transactions (account_id, kind, amount) VALUES "
        "(%(a)s, 'debit', 1), (%(a)s, 'debit', 2), (%(a)s, 'top_up', 3)",
        {"a": account_id},
    )
    dba.execute(
        "INSERT INTO transactions (account_id, kind, amount) "
        "SELECT %s, 'debit', n FROM generate_series(1, 10) AS n",
        [account_id],
    )
    events = _events(dba)[before:]
    assert len(events) == 13
    balances = [data["balance_after"] for _, data, _ in events if isinstance(data, dict)]
    # Each row saw the balance left by the row before it within the same statement.
    assert balances[:3] == [9_999, 9_997, 10_000]
    assert balances[-1] == 10_000 - 55
    # Each event names the transaction that wrote it: one per autocommitted statement.
    row = dba.execute(
        "SELECT count(DISTINCT xid), count(*) FILTER (WHERE xid IS NULL) FROM notifier.events"
        " WHERE id > (SELECT coalesce(max(id), 0) FROM notifier.events) - 13"
    ).fetchone()
    assert row == (2, 0)


def test_copy_creates_one_event_per_row(dba: Conn) -> None:
    account_id = _funded_account(dba)
    before = _count(dba, "notifier.events")
    with (
        dba.cursor() as cursor,
        cursor.copy("COPY transactions (account_id, kind, amount, metadata) FROM STDIN") as copy,
    ):
        for n in range(1, 501):
            copy.write_row((account_id, "debit", 1, json.dumps({"line": n})))
    assert _count(dba, "notifier.events") == before + 500
    row = dba.execute("SELECT balance FROM accounts WHERE id = %s", [account_id]).fetchone()
    assert row == (10_000 - 500,)
    lines = dba.execute(
        "SELECT (data->'metadata'->>'line')::int FROM notifier.events ORDER BY id DESC LIMIT 500"
    ).fetchall()
    lines.reverse()
    assert [line for (line,) in lines] == list(range(1, 501))


async def test_large_row_is_captured_whole_and_the_doorbell_stays_tiny(database_url: str) -> None:
    listener = await asyncpg.connect(database_url)
    heard: asyncio.Queue[str] = asyncio.Queue()
    await listener.add_listener("notifier", lambda *args: heard.put_nowait(args[3]))
    try:
        await listener.execute("UPDATE notifier.doorbell SET armed = true")
        writer = await asyncpg.connect(database_url)
        try:
            account_id = await writer.fetchval(
                "INSERT INTO accounts (currency) VALUES ('USD') RETURNING id"
            )
            metadata = {"note": "x" * 20_000}
            await writer.execute(
                "INSERT INTO transactions (account_id, kind, amount, metadata) "
                "VALUES ($1, 'top_up', 5, $2::jsonb)",
                account_id,
                json.dumps(metadata),
            )
            stored = await writer.fetchval("SELECT data->'metadata'->>'note' FROM notifier.events")
        finally:
            await writer.close()
        payload = await asyncio.wait_for(heard.get(), timeout=5)
    finally:
        await listener.close()
    assert stored == metadata["note"]
    assert payload == "transaction"


async def test_disarmed_doorbell_stays_silent(database_url: str) -> None:
    listener = await asyncpg.connect(database_url)
    heard: asyncio.Queue[str] = asyncio.Queue()
    await listener.add_listener("notifier", lambda *args: heard.put_nowait(args[3]))
    try:
        assert await listener.fetchval("SELECT armed FROM notifier.doorbell") is False
        account_id = await listener.fetchval(
            "INSERT INTO accounts (currency) VALUES ('USD') RETURNING id"
        )
        await listener.execute(
            "INSERT INTO transactions (account_id, kind, amount) VALUES ($1, 'top_up', 5)",
            account_id,
        )
        # A NOTIFY from this session would arrive right after its own commit.
        await listener.execute("SELECT 1")
        await asyncio.sleep(0.2)
        assert heard.empty()
        assert await listener.fetchval("SELECT count(*) FROM notifier.events") == 1
    finally:
        await listener.close()


def test_watching_another_table_captures_created_updated_deleted(dba: Conn) -> None:
    dba.execute("CREATE TABLE orders (id int PRIMARY KEY, status text, placed_at timestamptz)")
    dba.execute("SELECT notifier.watch('orders', 'order')")
    dba.execute("SET TimeZone = 'Asia/Tokyo'")
    dba.execute("INSERT INTO orders VALUES (1, 'new', '2026-11-21T20:00:00.12Z')")
    dba.execute("UPDATE orders SET status = 'paid' WHERE id = 1")
    dba.execute("DELETE FROM orders WHERE id = 1")
    rows = dba.execute(
        "SELECT type, topic, table_name, op, data, previous FROM notifier.events"
        " WHERE topic = 'order' ORDER BY id"
    ).fetchall()
    assert [row[0] for row in rows] == ["order.created", "order.updated", "order.deleted"]
    created, updated, deleted = rows
    assert created[4] == {"id": 1, "status": "new", "placed_at": "2026-11-21T20:00:00.12+00:00"}
    assert created[5] is None
    assert updated[4] == {**created[4], "status": "paid"}
    assert updated[5] == created[4]
    assert deleted[4] == updated[4]
    assert deleted[5] is None
    watched = dba.execute(
        "SELECT table_name::text, topic FROM notifier.watched_tables ORDER BY 1"
    ).fetchall()
    assert watched == [("orders", "order"), ("transactions", "transaction")]

    dba.execute("SELECT notifier.unwatch('orders')")
    dba.execute("INSERT INTO orders VALUES (2, 'new', now())")
    assert _count(dba, "notifier.events WHERE topic = 'order'") == 3


RENDERED = (
    "SELECT notifier.contract_timestamps(data, notifier.timestamptz_columns(table_schema,"
    " table_name)) FROM notifier.events WHERE topic = 'order' ORDER BY id"
)


def test_events_are_read_with_timestamps_in_the_contract_form(dba: Conn) -> None:
    dba.execute(
        "CREATE TABLE orders (id int, placed_at timestamptz, note text, extra jsonb,"
        " due timestamptz)"
    )
    dba.execute("SELECT notifier.watch('orders', 'order')")
    dba.execute("SET TimeZone = 'Asia/Tokyo'")
    looks_like = "2026-11-21T20:00:00+00:00"
    dba.execute(
        "INSERT INTO orders VALUES"
        " (1, '2026-11-21T20:00:00.12Z', %(s)s, jsonb_build_object('at', %(s)s::text), NULL),"
        " (2, '2026-11-21T20:00:00Z', 'x', NULL, 'infinity'),"
        " (3, '1900-01-01T00:00:00.000001+09:18:59', '2026-02-30T10:00:00+00:00', NULL,"
        "  '2026-01-01T09:00:00+09:00')",
        {"s": looks_like},
    )
    rows = [row[0] for row in dba.execute(RENDERED).fetchall()]
    assert rows[0] == {
        "id": 1,
        "placed_at": "2026-11-21T20:00:00.120000Z",
        "note": looks_like,  # a text column: left as written
        "extra": {"at": looks_like},  # nested: left as written
        "due": None,
    }
    assert (rows[1]["placed_at"], rows[1]["due"]) == ("2026-11-21T20:00:00.000000Z", "infinity")
    assert (rows[2]["placed_at"], rows[2]["due"]) == (
        "1899-12-31T14:41:01.000001Z",
        "2026-01-01T00:00:00.000000Z",
    )

    # A column whose type changed after capture: old values that are not timestamps,
    # even ones shaped like one, stay as they were.
    dba.execute("ALTER TABLE orders ALTER COLUMN note TYPE timestamptz USING NULL")
    notes = [row[0]["note"] for row in dba.execute(RENDERED).fetchall()]
    assert notes[1:] == ["x", "2026-02-30T10:00:00+00:00"]
    dba.execute("ALTER TABLE orders ALTER COLUMN note TYPE text")
    # A table that is gone: its events read as stored.
    stored = [
        row[0]
        for row in dba.execute(
            "SELECT data FROM notifier.events WHERE topic = 'order' ORDER BY id"
        ).fetchall()
    ]
    dba.execute("DROP TABLE orders")
    assert [row[0] for row in dba.execute(RENDERED).fetchall()] == stored


def test_watch_refuses_a_bad_topic(dba: Conn) -> None:
    dba.execute("CREATE TABLE things (id int)")
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="invalid topic"):
        dba.execute("SELECT notifier.watch('things', 'Bad Topic!')")
    with pytest.raises(psycopg.errors.UndefinedTable):
        dba.execute("SELECT notifier.watch('no_such_table', 'thing')")


def test_event_ids_are_unique_time_ordered_uuids(dba: Conn) -> None:
    account_id = _funded_account(dba)
    dba.execute(
        "INSERT INTO transactions (account_id, kind, amount) "
        "SELECT %s, 'debit', 1 FROM generate_series(1, 50)",
        [account_id],
    )
    uids = [
        str(uid) for (uid,) in dba.execute("SELECT uid FROM notifier.events ORDER BY id").fetchall()
    ]
    assert len(set(uids)) == len(uids) == 51
    assert all(uid[14] == "7" for uid in uids)  # version nibble
    assert all(uid[19] in "89ab" for uid in uids)  # RFC 4122 variant
    assert [uid[:13] for uid in uids] == sorted(uid[:13] for uid in uids)
