"""Row-value filters: parsed and validated in Python, evaluated by the database."""

from __future__ import annotations

import json

import asyncpg
import pytest

from notifier.subscriptions.filters import Condition, InvalidFilter, condition, from_stored, parse


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("amount >= 100000", Condition("amount", ">=", 100000)),
        ("kind = debit", Condition("kind", "=", "debit")),
        ('kind != "top_up"', Condition("kind", "!=", "top_up")),
        ("account_id in [1, 2, 3]", Condition("account_id", "in", [1, 2, 3])),
        ("kind not in [debit]", Condition("kind", "not in", ["debit"])),
        ("metadata.tier = gold", Condition("metadata.tier", "=", "gold")),
        ("metadata.vip = true", Condition("metadata.vip", "=", True)),
    ],
)
def test_parse(text: str, expected: Condition) -> None:
    assert parse(text) == expected


@pytest.mark.parametrize(
    "text",
    ["amount", "amount >> 5", "amount >= [1]", "1abc = 2", "kind in debit", "amount > true"],
)
def test_parse_refuses_nonsense(text: str) -> None:
    with pytest.raises(InvalidFilter):
        parse(text)


def test_condition_refuses_bad_parts() -> None:
    with pytest.raises(InvalidFilter, match="operator"):
        condition("amount", "~", 1)
    with pytest.raises(InvalidFilter, match="non-empty list"):
        condition("amount", "in", [])
    with pytest.raises(InvalidFilter, match="field"):
        condition("a b", "=", 1)


async def _matches(pool: asyncpg.Pool, row: dict[str, object], *texts: str) -> bool:
    stored = [parse(text).as_stored() for text in texts]
    assert from_stored(stored) == [parse(text) for text in texts]
    result = await pool.fetchval(
        "SELECT notifier.row_matches($1::jsonb, $2::jsonb)", json.dumps(row), json.dumps(stored)
    )
    assert isinstance(result, bool)
    return result


async def test_sql_evaluation(pool: asyncpg.Pool) -> None:
    row = {
        "id": 7,
        "account_id": 3,
        "kind": "debit",
        "amount": 150000,
        "metadata": {"tier": "gold"},
    }
    assert await _matches(pool, row)  # no conditions: everything matches
    assert await _matches(pool, row, "amount >= 100000", "kind = debit")
    assert not await _matches(pool, row, "amount >= 100000", "kind = top_up")
    assert await _matches(pool, row, "amount > 149999.5")
    assert not await _matches(pool, row, "amount < 150000")
    assert await _matches(pool, row, "account_id in [1, 3]")
    assert not await _matches(pool, row, "account_id not in [1, 3]")
    assert await _matches(pool, row, "metadata.tier = gold")
    assert not await _matches(pool, row, "metadata.missing = gold")
    assert not await _matches(pool, row, "amount >= abc")  # a string never orders a number
    assert await _matches(pool, row, "kind != top_up")


async def test_fan_out_honours_the_filter(pool: asyncpg.Pool) -> None:
    from notifier.engine.store import Outbox
    from notifier.subscriptions.store import SubscriptionStore

    store = SubscriptionStore(pool, allow_private_targets=True)
    big = await store.create("http://example.com/big", filter=[parse("amount >= 100")])
    every = await store.create("http://example.com/all")
    account = await pool.fetchval("INSERT INTO accounts (currency) VALUES ('USD') RETURNING id")
    await pool.execute(
        "INSERT INTO transactions (account_id, kind, amount) VALUES ($1, 'top_up', 50), "
        "($1, 'top_up', 150)",
        account,
    )
    result = await Outbox(pool, 30).claim(events=10, due=10, room={}, default_room=10)
    assert result.fanned_events == 3  # events taken, summed over subscriptions
    claimed = [(c.subscription_id, json.loads(c.data)["amount"]) for c in result.claimed]
    assert sorted(claimed) == [
        (big.id, 150),
        (every.id, 50),
        (every.id, 150),
    ]
