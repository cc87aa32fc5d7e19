"""The ledger rules hold in the database itself, for any client (here: a DBA's psycopg)."""

from __future__ import annotations

import asyncio

import psycopg
import pytest
from psycopg import errors

Conn = psycopg.Connection[tuple[object, ...]]


def _account(dba: Conn, currency: str = "USD", balance: int = 0) -> int:
    row = dba.execute(
        "INSERT INTO accounts (currency) VALUES (%s) RETURNING id", [currency]
    ).fetchone()
    assert row is not None
    account_id = int(str(row[0]))
    if balance:
        dba.execute(
            "INSERT INTO transactions (account_id, kind, amount) VALUES (%s, 'top_up', %s)",
            [account_id, balance],
        )
    return account_id


def _scalar(dba: Conn, sql: str, *params: object) -> object:
    row = dba.execute(sql, list(params)).fetchone()
    assert row is not None
    return row[0]


def _balance(dba: Conn, account_id: int) -> object:
    return _scalar(dba, "SELECT balance FROM accounts WHERE id = %s", account_id)


def _event_count(dba: Conn) -> object:
    return _scalar(dba, "SELECT count(*) FROM notifier.events")


def test_dba_insert_updates_balance_and_creates_one_event(dba: Conn) -> None:
    account_id = _account(dba, balance=1000)
    events_before = _event_count(dba)

    dba.execute(
        f"INSERT INTO transactions (account_id, kind, amount) VALUES ({account_id}, 'debit', 300)"
    )

    assert _balance(dba, account_id) == 700
    assert _event_count(dba) == int(str(events_before)) + 1
    row = dba.execute(
        "SELECT currency, balance_after FROM transactions ORDER BY id DESC LIMIT 1"
    ).fetchone()
    assert row == ("USD", 700)
    event = dba.execute(
        "SELECT type, data FROM notifier.events ORDER BY id DESC LIMIT 1"
    ).fetchone()
    assert event is not None
    assert event[0] == "transaction.created"
    assert isinstance(event[1], dict)
    assert event[1]["kind"] == "debit"
    assert event[1]["amount"] == 300
    assert event[1]["balance_after"] == 700
    assert event[1]["currency"] == "USD"


def test_overdraw_fails_with_its_sqlstate_and_changes_nothing(dba: Conn) -> None:
    account_id = _account(dba, balance=100)
    events_before = _event_count(dba)

    with pytest.raises(psycopg.Error) as raised:
        dba.execute(
            "INSERT INTO transactions (account_id, kind, amount) VALUES (%s, 'debit', 150)",
            [account_id],
        )

    assert raised.value.sqlstate == "WL001"
    message = str(raised.value)
    assert f"account {account_id}" in message
    assert "balance 100" in message
    assert "150" in message
    assert _balance(dba, account_id) == 100
    assert _event_count(dba) == events_before


def test_unknown_account_fails_with_its_sqlstate(dba: Conn) -> None:
    with pytest.raises(psycopg.Error) as raised:
        dba.execute(
            "INSERT INTO transactions (account_id, kind, amount) VALUES (999999, 'top_up', 5)"
        )
    assert raised.value.sqlstate == "WL002"
    assert "account 999999 does not exist" in str(raised.value)


def test_transactions_are_append_only(dba: Conn) -> None:
    account_id = _account(dba, balance=100)
    for statement in (
        "UPDATE transactions SET amount = 1",
        "DELETE FROM transactions",
        "TRUNCATE transactions",
    ):
        with pytest.raises(psycopg.Error) as raised:
            dba.execute(statement)
        assert raised.value.sqlstate == "WL004", statement
        assert "append-only" in str(raised.value)
    assert _balance(dba, account_id) == 100
    assert _scalar(dba, "SELECT count(*) FROM transactions") == 1


def test_balance_changes_only_through_transactions(dba: Conn) -> None:
    account_id = _account(dba, balance=100)
    with pytest.raises(psycopg.Error) as raised:
        dba.execute("UPDATE accounts SET balance = 1000000 WHERE id = %s", [account_id])
    assert raised.value.sqlstate == "WL005"
    with pytest.raises(psycopg.Error) as raised:
        dba.execute("INSERT INTO accounts (currency, balance) VALUES ('USD', 50)")
    assert raised.value.sqlstate == "WL005"
    assert _balance(dba, account_id) == 100


@pytest.mark.parametrize(
    ("kind", "amount", "sqlstate"),
    [
        ("debit", 0, errors.CheckViolation.sqlstate),
        ("top_up", -5, errors.CheckViolation.sqlstate),
        ("top_up", 10**15 + 1, errors.CheckViolation.sqlstate),
        ("refund", 5, errors.CheckViolation.sqlstate),
    ],
)
def test_invalid_rows_are_refused(dba: Conn, kind: str, amount: int, sqlstate: str) -> None:
    account_id = _account(dba, balance=100)
    with pytest.raises(psycopg.Error) as raised:
        dba.execute(
            "INSERT INTO transactions (account_id, kind, amount) VALUES (%s, %s, %s)",
            [account_id, kind, amount],
        )
    assert raised.value.sqlstate == sqlstate
    assert _balance(dba, account_id) == 100


def test_currency_mismatch_is_refused(dba: Conn) -> None:
    account_id = _account(dba, "EUR", balance=100)
    with pytest.raises(psycopg.Error) as raised:
        dba.execute(
            "INSERT INTO transactions (account_id, kind, amount, currency) VALUES (%s, 'top_up', 5, 'USD')",
            [account_id],
        )
    assert raised.value.sqlstate == "WL003"


def test_balance_cannot_overflow(dba: Conn) -> None:
    account_id = _account(dba)
    # Fill the balance close to the bigint ceiling one legal top-up at a time.
    dba.execute(
        "INSERT INTO transactions (account_id, kind, amount) "
        "SELECT %s, 'top_up', 1000000000000000 FROM generate_series(1, 9223)",
        [account_id],
    )
    with pytest.raises(psycopg.Error) as raised:
        dba.execute(
            "INSERT INTO transactions (account_id, kind, amount) VALUES (%s, 'top_up', 1000000000000000)",
            [account_id],
        )
    assert raised.value.sqlstate == "WL006"
    assert _balance(dba, account_id) == 9223 * 10**15


def test_idempotency_key_is_unique_per_account(dba: Conn) -> None:
    first = _account(dba, balance=100)
    second = _account(dba, balance=100)
    insert = (
        "INSERT INTO transactions (account_id, kind, amount, idempotency_key) "
        "VALUES (%s, 'debit', 10, 'key-1')"
    )
    dba.execute(insert, [first])
    dba.execute(insert, [second])  # the same key on another account is fine
    with pytest.raises(errors.UniqueViolation):
        dba.execute(insert, [first])
    assert _balance(dba, first) == 90


async def test_concurrent_debits_never_overdraw(database_url: str) -> None:
    """200 debits of 1 from 20 connections against a balance of 100."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as setup:
        cursor = await setup.execute("INSERT INTO accounts (currency) VALUES ('USD') RETURNING id")
        row = await cursor.fetchone()
        assert row is not None
        account_id = row[0]
        await setup.execute(
            "INSERT INTO transactions (account_id, kind, amount) VALUES (%s, 'top_up', 100)",
            [account_id],
        )

    async def writer() -> tuple[int, int]:
        succeeded = refused = 0
        refusals: list[str | None] = []
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            for _ in range(10):
                try:
                    await conn.execute(
                        "INSERT INTO transactions (account_id, kind, amount) VALUES (%s, 'debit', 1)",
                        [account_id],
                    )
                    succeeded += 1
                except psycopg.Error as exc:
                    refusals.append(exc.sqlstate)
                    refused += 1
        assert set(refusals) <= {"WL001"}
        return succeeded, refused

    results = await asyncio.gather(*(writer() for _ in range(20)))

    assert sum(s for s, _ in results) == 100
    assert sum(r for _, r in results) == 100
    async with await psycopg.AsyncConnection.connect(database_url) as check:
        cursor = await check.execute(
            "SELECT (SELECT balance FROM accounts WHERE id = %(a)s),"
            " (SELECT count(*) FROM transactions WHERE account_id = %(a)s AND kind = 'debit'),"
            " (SELECT count(*) FROM notifier.events),"
            " (SELECT min(balance_after) FROM transactions WHERE account_id = %(a)s)",
            {"a": account_id},
        )
        balance, debits, events, lowest = await cursor.fetchone() or (None, None, None, None)
    assert balance == 0
    assert debits == 100
    assert events == 101  # the top-up and the 100 debits
    assert lowest == 0
