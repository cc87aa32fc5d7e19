"""Idempotency-Key: the first response is stored and replayed, never applied twice."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest
from aiohttp.test_utils import TestClient

from api.idempotency import purge_expired
from tests.http_api.conftest import new_account, top_up

Client = TestClient[Any, Any]


def _count(dba: psycopg.Connection[Any], sql: str, *params: object) -> int:
    row = dba.execute(sql, params).fetchone()
    assert row is not None
    return int(row[0])


async def _post(
    client: Client, path: str, body: dict[str, Any], key: str
) -> tuple[int, dict[str, Any], str | None]:
    response = await client.post(path, json=body, headers={"Idempotency-Key": key})
    return response.status, await response.json(), response.headers.get("Idempotent-Replayed")


async def test_same_key_same_body_replays_the_first_response(
    client: Client, dba: psycopg.Connection[Any]
) -> None:
    account_id = await new_account(client)
    path = f"/accounts/{account_id}/top-ups"
    body = {"amount": 250, "metadata": {"b": 1, "a": [1, 2]}}
    first = await _post(client, path, body, "order-17")
    # Same request, keys in another order: the same request.
    again = await _post(
        client, path, {"metadata": {"a": [1, 2], "b": 1}, "amount": 250}, "order-17"
    )

    assert first[0] == again[0] == 201
    assert first[1] == again[1]
    assert (first[2], again[2]) == (None, "true")
    assert first[1]["idempotency_key"] == "order-17"
    assert _count(dba, "SELECT count(*) FROM transactions") == 1
    assert _count(dba, "SELECT balance FROM accounts WHERE id = %s", account_id) == 250
    row = dba.execute("SELECT idempotency_key FROM transactions").fetchone()
    assert row == ("order-17",)
    # Byte for byte the first response, not merely an equal JSON value.
    replayed = await client.post(path, json=body, headers={"Idempotency-Key": "order-17"})
    raw = await replayed.read()
    assert raw.index(b'"account_id"') < raw.index(b'"kind"') < raw.index(b'"amount"')


async def test_same_key_different_body_is_422(client: Client, dba: psycopg.Connection[Any]) -> None:
    account_id = await new_account(client)
    path = f"/accounts/{account_id}/top-ups"
    assert (await _post(client, path, {"amount": 1}, "k"))[0] == 201
    status, body, _ = await _post(client, path, {"amount": 2}, "k")
    assert status == 422
    assert body["type"].endswith("idempotency-key-reused")
    # Another operation with the key is another request too.
    assert (await _post(client, f"/accounts/{account_id}/debits", {"amount": 1}, "k"))[0] == 422
    assert _count(dba, "SELECT count(*) FROM transactions") == 1


async def test_keys_are_scoped_per_account(client: Client, dba: psycopg.Connection[Any]) -> None:
    first, second = await new_account(client), await new_account(client)
    for account_id in (first, second):
        status, body, replayed = await _post(
            client, f"/accounts/{account_id}/top-ups", {"amount": 5}, "shared-key"
        )
        assert (status, body["account_id"], replayed) == (201, account_id, None)
    assert _count(dba, "SELECT count(*) FROM transactions") == 2


async def test_a_refused_debit_is_replayed_even_after_funds_arrive(
    client: Client, dba: psycopg.Connection[Any]
) -> None:
    account_id = await new_account(client)
    path = f"/accounts/{account_id}/debits"
    status, refused, _ = await _post(client, path, {"amount": 10}, "pay-1")
    assert (status, refused["balance"], refused["amount"]) == (409, 0, 10)
    await top_up(client, account_id, 100)
    response = await client.post(path, json={"amount": 10}, headers={"Idempotency-Key": "pay-1"})
    assert response.status == 409
    assert response.content_type == "application/problem+json"
    assert response.headers["Idempotent-Replayed"] == "true"
    assert await response.json() == refused
    assert _count(dba, "SELECT balance FROM accounts WHERE id = %s", account_id) == 100


async def test_nothing_is_stored_for_an_unknown_account_or_an_invalid_body(
    client: Client, dba: psycopg.Connection[Any]
) -> None:
    assert (await _post(client, "/accounts/4242/top-ups", {"amount": 1}, "k1"))[0] == 404
    account_id = await new_account(client)
    path = f"/accounts/{account_id}/top-ups"
    assert (await _post(client, path, {"amount": 0}, "k2"))[0] == 422
    assert _count(dba, "SELECT count(*) FROM notifier.idempotency_keys") == 0
    # The key was not used up by the invalid request.
    assert (await _post(client, path, {"amount": 3}, "k2"))[0] == 201


@pytest.mark.parametrize("key", ["", "x" * 256, "with space", "é-accent"])
async def test_a_malformed_key_is_400(client: Client, key: str) -> None:
    account_id = await new_account(client)
    response = await client.post(
        f"/accounts/{account_id}/top-ups",
        json={"amount": 1},
        headers={"Idempotency-Key": key.encode("utf-8").decode("latin-1")},
    )
    assert response.status == 400
    assert (await response.json())["type"].endswith("invalid-header")


async def test_after_the_ttl_the_ledger_row_still_answers_for_its_key(
    client: Client, dba: psycopg.Connection[Any]
) -> None:
    account_id = await new_account(client)
    path = f"/accounts/{account_id}/top-ups"
    first = await _post(client, path, {"amount": 40}, "old-key")
    dba.execute("UPDATE notifier.idempotency_keys SET expires_at = now() - interval '1 second'")

    again = await _post(client, path, {"amount": 40}, "old-key")
    assert (again[0], again[1]) == (201, first[1])
    different = await _post(client, path, {"amount": 41}, "old-key")
    assert different[0] == 422
    assert _count(dba, "SELECT count(*) FROM transactions") == 1


async def test_keys_are_kept_for_the_ttl_and_purged_after(
    client: Client, dba: psycopg.Connection[Any], pool: Any
) -> None:
    account_id = await new_account(client)
    await _post(client, f"/accounts/{account_id}/top-ups", {"amount": 1}, "a")
    await _post(client, f"/accounts/{account_id}/top-ups", {"amount": 1}, "b")
    kept = dba.execute(
        "SELECT min(expires_at - created_at) FROM notifier.idempotency_keys"
    ).fetchone()
    assert kept is not None
    assert kept[0].total_seconds() >= 24 * 3600
    dba.execute("UPDATE notifier.idempotency_keys SET expires_at = now() WHERE key = 'a'")

    purge = asyncio.create_task(purge_expired(pool, interval_seconds=3600))
    try:
        for _ in range(100):
            if _count(dba, "SELECT count(*) FROM notifier.idempotency_keys") == 1:
                break
            await asyncio.sleep(0.02)
    finally:
        purge.cancel()
    rows = dba.execute("SELECT key FROM notifier.idempotency_keys").fetchall()
    assert rows == [("b",)]
