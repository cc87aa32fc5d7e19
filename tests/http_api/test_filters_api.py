"""Row-value filters over HTTP: accepted as text or objects, shown, validated, replaced."""

from __future__ import annotations

import re
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from notifier.subscriptions.filters import OPERATORS

Client = TestClient[Any, Any]


async def test_filter_is_stored_and_shown(client: Client) -> None:
    response = await client.post(
        "/subscriptions",
        json={
            "url": "https://example.com/hook",
            "filter": ["amount >= 100000", {"field": "account_id", "op": "in", "value": [1, 2]}],
        },
    )
    assert response.status == 201, await response.text()
    created = await response.json()
    expected = [
        {"field": "amount", "op": ">=", "value": 100000},
        {"field": "account_id", "op": "in", "value": [1, 2]},
    ]
    assert created["filter"] == expected
    fetched = await (await client.get(f"/subscriptions/{created['id']}")).json()
    assert fetched["filter"] == expected
    patched = await client.patch(
        f"/subscriptions/{created['id']}", json={"filter": ["metadata.tier = gold"]}
    )
    assert (await patched.json())["filter"] == [
        {"field": "metadata.tier", "op": "=", "value": "gold"}
    ]
    cleared = await client.patch(f"/subscriptions/{created['id']}", json={"filter": []})
    assert (await cleared.json())["filter"] == []


@pytest.mark.parametrize(
    ("condition", "message"),
    [
        ("amount >> 5", "is not a value"),
        ("kind in debit", "non-empty list"),
        ({"field": "amount", "op": "~", "value": 1}, "operator '~'"),
        ({"field": "a b", "op": "=", "value": 1}, "field 'a b'"),
        ("amount > 1e400", "finite"),
        ({"field": "note", "op": "=", "value": "a\u0000b"}, "NUL"),
    ],
)
async def test_invalid_conditions_are_422_naming_them(
    client: Client, condition: Any, message: str
) -> None:
    response = await client.post(
        "/subscriptions", json={"url": "https://example.com/hook", "filter": [condition]}
    )
    assert response.status == 422, await response.text()
    problem = await response.json()
    assert problem["errors"][0]["field"].startswith("filter.0")
    assert message in problem["errors"][0]["message"]


@pytest.mark.parametrize(
    "field", ["", "amount", "metadata.tier", "_x.y_2", "a b", "1abc", "a.", ".a", "a..b", "a-b"]
)
async def test_the_document_says_which_filter_fields_the_server_takes(
    client: Client, field: str
) -> None:
    document = await (await client.get("/openapi.json")).json()
    schema = document["components"]["schemas"]["FilterObject"]["properties"]
    documented = re.search(schema["field"]["pattern"], field) is not None
    response = await client.post(
        "/subscriptions",
        json={
            "url": "https://example.com/hook",
            "filter": [{"field": field, "op": "=", "value": 1}],
        },
    )
    assert response.status == (201 if documented else 422), await response.text()
    assert schema["op"]["enum"] == list(OPERATORS)


async def test_a_field_with_a_trailing_newline_is_refused(client: Client) -> None:
    response = await client.post(
        "/subscriptions",
        json={
            "url": "https://example.com/hook",
            "filter": [{"field": "amount\n", "op": "=", "value": 1}],
        },
    )
    assert response.status == 422, await response.text()
