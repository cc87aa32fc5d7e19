"""Races through HTTP: the database serialises them, the API reports them truthfully."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import psycopg
from aiohttp.test_utils import TestClient

from tests.http_api.conftest import new_account, top_up

Client = TestClient[Any, Any]


async def test_100_concurrent_debits_of_1_against_a_balance_of_50(
    client: Client, dba: psycopg.Connection[Any]
) -> None:
    account_id = await new_account(client)
    await top_up(client, account_id, 50)

    async def debit() -> int:
        response = await client.post(f"/accounts/{account_id}/debits", json={"amount": 1})
        await response.read()
        return response.status

    statuses = await asyncio.gather(*(debit() for _ in range(100)))

    assert Counter(statuses) == {201: 50, 409: 50}
    assert dba.execute("SELECT balance FROM accounts WHERE id = %s", (account_id,)).fetchone() == (
        0,
    )
    assert dba.execute("SELECT count(*) FROM transactions WHERE kind = 'debit'").fetchone() == (50,)


async def test_20_concurrent_identical_requests_with_one_key_apply_once(
    client: Client, dba: psycopg.Connection[Any]
) -> None:
    account_id = await new_account(client)
    await top_up(client, account_id, 1000)

    async def debit() -> tuple[int, dict[str, Any], str | None]:
        response = await client.post(
            f"/accounts/{account_id}/debits",
            json={"amount": 300, "metadata": {"invoice": "inv-9"}},
            headers={"Idempotency-Key": "inv-9"},
        )
        return response.status, await response.json(), response.headers.get("Idempotent-Replayed")

    results = await asyncio.gather(*(debit() for _ in range(20)))

    assert {status for status, _, _ in results} == {201}
    assert len({body["id"] for _, body, _ in results}) == 1
    assert [replayed for _, _, replayed in results].count("true") == 19
    assert dba.execute(
        "SELECT count(*) FROM transactions WHERE idempotency_key = 'inv-9'"
    ).fetchone() == (1,)
    assert dba.execute("SELECT balance FROM accounts WHERE id = %s", (account_id,)).fetchone() == (
        700,
    )
