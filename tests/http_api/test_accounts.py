"""Accounts, top-ups, debits and history through the real app on a real database."""

from __future__ import annotations

import re
from typing import Any

import psycopg
import pytest
from aiohttp.test_utils import TestClient

from api.models import METADATA_MAX_BYTES
from tests.http_api.conftest import new_account, top_up

Client = TestClient[Any, Any]
PROBLEM = "application/problem+json"
TIMESTAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z"


async def problem(response: Any, status: int) -> dict[str, Any]:
    """The problem body of a response, after checking its status and media type."""
    assert response.status == status, await response.text()
    assert response.content_type == PROBLEM
    body: dict[str, Any] = await response.json()
    assert body["status"] == status
    assert {"type", "title", "detail"} <= body.keys()
    return body


async def test_create_and_get_account(client: Client) -> None:
    response = await client.post("/accounts", json={"currency": "EUR"})
    assert response.status == 201
    created = await response.json()
    assert response.headers["Location"] == f"/accounts/{created['id']}"
    assert created["currency"] == "EUR"
    assert created["balance"] == 0
    assert created["created_at"].endswith("Z")

    response = await client.get(f"/accounts/{created['id']}")
    assert response.status == 200
    assert await response.json() == created


async def test_a_transaction_has_every_key_with_the_contracts_formats(client: Client) -> None:
    account_id = await new_account(client)
    body = await top_up(client, account_id, 500)
    assert list(body) == [
        "id",
        "account_id",
        "kind",
        "amount",
        "currency",
        "balance_after",
        "idempotency_key",
        "metadata",
        "created_at",
    ]
    assert (body["account_id"], body["amount"], body["balance_after"]) == (account_id, 500, 500)
    assert body["idempotency_key"] is None
    assert re.fullmatch(TIMESTAMP, body["created_at"])
    account = await (await client.get(f"/accounts/{account_id}")).json()
    assert re.fullmatch(TIMESTAMP, account["updated_at"])


async def test_a_problem_carries_only_the_members_it_has(client: Client) -> None:
    body = await problem(await client.get("/accounts/999999"), 404)
    assert set(body) == {"type", "title", "status", "detail"}


@pytest.mark.parametrize("currency", ["usd", "ABC", "US", "EURO", 840, None, ""])
async def test_create_account_refuses_a_non_iso_currency(client: Client, currency: object) -> None:
    body = await problem(await client.post("/accounts", json={"currency": currency}), 422)
    assert [error["field"] for error in body["errors"]] == ["currency"]


async def test_create_account_refuses_unknown_fields_and_missing_currency(client: Client) -> None:
    body = await problem(await client.post("/accounts", json={"currancy": "USD"}), 422)
    assert sorted(error["field"] for error in body["errors"]) == ["currancy", "currency"]


@pytest.mark.parametrize(
    "path", ["/accounts/999999", "/accounts/abc", "/accounts/0", f"/accounts/{2**63}"]
)
async def test_unknown_account_is_404(client: Client, path: str) -> None:
    await problem(await client.get(path), 404)
    await problem(await client.post(f"{path}/top-ups", json={"amount": 1}), 404)
    await problem(await client.post(f"{path}/debits", json={"amount": 1}), 404)
    await problem(await client.get(f"{path}/transactions"), 404)


async def test_top_up_then_debit_moves_the_balance(client: Client) -> None:
    account_id = await new_account(client)
    response = await client.post(
        f"/accounts/{account_id}/top-ups", json={"amount": 500, "metadata": {"order": "o-1"}}
    )
    assert response.status == 201
    credit = await response.json()
    assert credit == {
        "id": credit["id"],
        "account_id": account_id,
        "kind": "top_up",
        "amount": 500,
        "currency": "USD",
        "balance_after": 500,
        "idempotency_key": None,
        "metadata": {"order": "o-1"},
        "created_at": credit["created_at"],
    }
    response = await client.post(f"/accounts/{account_id}/debits", json={"amount": 120})
    assert response.status == 201
    debit = await response.json()
    assert (debit["kind"], debit["balance_after"], debit["metadata"]) == ("debit", 380, {})
    assert (await (await client.get(f"/accounts/{account_id}")).json())["balance"] == 380


async def test_debit_beyond_the_balance_is_409_with_balance_and_amount(
    client: Client, dba: psycopg.Connection[Any]
) -> None:
    account_id = await new_account(client)
    await top_up(client, account_id, 70)
    body = await problem(
        await client.post(f"/accounts/{account_id}/debits", json={"amount": 71}), 409
    )
    assert body["type"].endswith("insufficient-funds")
    assert (body["account_id"], body["balance"], body["amount"]) == (account_id, 70, 71)
    assert (
        body["detail"]
        == f"insufficient funds: account {account_id} has balance 70, debit of 71 refused"
    )
    row = dba.execute("SELECT balance FROM accounts WHERE id = %s", (account_id,)).fetchone()
    assert row == (70,)
    assert dba.execute("SELECT count(*) FROM transactions WHERE kind = 'debit'").fetchone() == (0,)


async def test_a_given_currency_must_be_the_accounts(client: Client) -> None:
    account_id = await new_account(client, "JPY")
    ok = await client.post(f"/accounts/{account_id}/top-ups", json={"amount": 5, "currency": "JPY"})
    assert ok.status == 201
    body = await problem(
        await client.post(f"/accounts/{account_id}/top-ups", json={"amount": 5, "currency": "USD"}),
        409,
    )
    assert body["type"].endswith("currency-mismatch")


async def test_top_up_that_would_overflow_the_balance_is_409(
    client: Client, dba: psycopg.Connection[Any]
) -> None:
    account_id = await new_account(client)
    max_amount = 10**15
    # Reaching near 2^63 through the API takes thousands of calls; a batch job does it here.
    dba.execute(
        "INSERT INTO transactions (account_id, kind, amount) "
        "SELECT %s, 'top_up', %s FROM generate_series(1, 9223)",
        (account_id, max_amount),
    )
    body = await problem(
        await client.post(f"/accounts/{account_id}/top-ups", json={"amount": max_amount}), 409
    )
    assert body["type"].endswith("balance-overflow")


@pytest.mark.parametrize(
    "amount",
    [0, -1, 10**15 + 1, 1.0, 2.5, "10", True, False, None, [1], {"v": 1}],
    ids=repr,
)
async def test_amount_must_be_an_integer_in_range(client: Client, amount: object) -> None:
    account_id = await new_account(client)
    body = await problem(
        await client.post(f"/accounts/{account_id}/top-ups", json={"amount": amount}), 422
    )
    assert [error["field"] for error in body["errors"]] == ["amount"]


async def test_largest_amount_is_accepted(client: Client) -> None:
    account_id = await new_account(client)
    assert (await top_up(client, account_id, 10**15))["balance_after"] == 10**15


@pytest.mark.parametrize(
    ("metadata", "field"),
    [
        ([1, 2], "metadata"),
        ("note", "metadata"),
        ({"note": "x" * METADATA_MAX_BYTES}, "metadata"),
        ({"note": "nul\u0000byte"}, "metadata"),
    ],
)
async def test_metadata_must_be_a_small_json_object(
    client: Client, metadata: object, field: str
) -> None:
    account_id = await new_account(client)
    body = await problem(
        await client.post(
            f"/accounts/{account_id}/top-ups", json={"amount": 1, "metadata": metadata}
        ),
        422,
    )
    assert [error["field"] for error in body["errors"]] == [field]


async def test_every_bad_field_is_listed(client: Client) -> None:
    account_id = await new_account(client)
    body = await problem(
        await client.post(
            f"/accounts/{account_id}/debits",
            json={"amount": "5", "currency": "usd", "metadata": [], "extra": 1},
        ),
        422,
    )
    assert sorted(error["field"] for error in body["errors"]) == [
        "amount",
        "currency",
        "extra",
        "metadata",
    ]


@pytest.mark.parametrize(
    "raw",
    [b"{", b"", b"{'amount': 1}", b'{"amount": NaN}', b"\xff\xfe", b"[" * 5000, b"1" * 5000],
    ids=["truncated", "empty", "single-quotes", "nan", "not-utf8", "deep", "huge-number"],
)
async def test_malformed_json_is_400(client: Client, raw: bytes) -> None:
    account_id = await new_account(client)
    response = await client.post(
        f"/accounts/{account_id}/top-ups",
        data=raw,
        headers={"Content-Type": "application/json"},
    )
    body = await problem(response, 400)
    assert body["type"].endswith("malformed-json")


async def test_json_that_is_not_an_object_is_422(client: Client) -> None:
    body = await problem(await client.post("/accounts", json=["USD"]), 422)
    assert body["errors"][0]["field"] == "body"


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
async def test_wrong_content_type_is_415(client: Client, content_type: str | None) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = await client.post("/accounts", data=b'{"currency": "USD"}', headers=headers)
    await problem(response, 415)


async def test_body_over_the_limit_is_413(client: Client) -> None:
    account_id = await new_account(client)
    raw = b'{"amount": 1, "metadata": {"pad": "' + b"x" * 70_000 + b'"}}'
    response = await client.post(
        f"/accounts/{account_id}/top-ups", data=raw, headers={"Content-Type": "application/json"}
    )
    body = await problem(response, 413)
    assert "65536" in body["detail"]


async def test_body_over_the_limit_is_413_without_content_length(client: Client) -> None:
    async def chunks() -> Any:
        for _ in range(10):
            yield b"x" * 10_000

    response = await client.post(
        "/accounts", data=chunks(), headers={"Content-Type": "application/json"}
    )
    await problem(response, 413)


async def test_history_is_newest_first_and_cursor_paged(
    client: Client, dba: psycopg.Connection[Any]
) -> None:
    account_id = await new_account(client)
    other = await new_account(client)
    for amount in range(1, 6):
        await top_up(client, account_id, amount)
    await top_up(client, other, 99)
    # A row a DBA writes directly is part of the same history.
    dba.execute(
        "INSERT INTO transactions (account_id, kind, amount) VALUES (%s, 'debit', 6)",
        (account_id,),
    )

    response = await client.get(f"/accounts/{account_id}/transactions", params={"limit": 4})
    assert response.status == 200
    first = await response.json()
    assert [t["amount"] for t in first["items"]] == [6, 5, 4, 3]
    assert first["items"][0]["kind"] == "debit"
    assert first["next_before"] == first["items"][-1]["id"]

    response = await client.get(
        f"/accounts/{account_id}/transactions", params={"limit": 4, "before": first["next_before"]}
    )
    second = await response.json()
    assert [t["amount"] for t in second["items"]] == [2, 1]
    assert second["next_before"] is None


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "101"}, "limit"),
        ({"limit": "x"}, "limit"),
        ({"before": "-3"}, "before"),
        ({"before": "1.5"}, "before"),
    ],
)
async def test_history_query_is_validated(
    client: Client, params: dict[str, str], field: str
) -> None:
    account_id = await new_account(client)
    body = await problem(
        await client.get(f"/accounts/{account_id}/transactions", params=params), 422
    )
    assert [error["field"] for error in body["errors"]] == [field]
