"""Subscriptions over HTTP: the secret is shown once, rotation keeps the old one a while."""

from __future__ import annotations

import re
from typing import Any

import psycopg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from api.app import create_app
from notifier.settings import Settings
from notifier.subscriptions.store import generate_secret, validate_secret
from tests.http_api.conftest import AUTH
from tests.support import IPV6_FORMS_OF_PRIVATE_TARGETS

Client = TestClient[Any, Any]


async def _create(client: Client, **fields: Any) -> dict[str, Any]:
    response = await client.post(
        "/subscriptions", json={"url": "https://example.com/hook", **fields}
    )
    assert response.status == 201, await response.text()
    body: dict[str, Any] = await response.json()
    assert response.headers["Location"] == f"/subscriptions/{body['id']}"
    return body


async def test_timestamps_have_the_contract_form_like_every_other_answer(
    client: Client, dba: psycopg.Connection[Any]
) -> None:
    created = await _create(client)
    dba.execute("UPDATE notifier.subscriptions SET created_at = '2026-11-21 22:00:00+02'")
    response = await client.get(f"/subscriptions/{created['id']}")
    shown = await response.json()
    # UTC, microseconds even when they are zero, Z: as events, deliveries and the ledger.
    assert shown["created_at"] == "2026-11-21T20:00:00.000000Z"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", created["updated_at"])


async def test_create_returns_the_generated_secret_once(client: Client) -> None:
    created = await _create(client, event_types=["transaction.*"], description="ads")
    assert validate_secret(created["secret"]) == created["secret"]
    assert (created["event_types"], created["description"], created["enabled"]) == (
        ["transaction.*"],
        "ads",
        True,
    )
    fetched = await (await client.get(f"/subscriptions/{created['id']}")).json()
    assert "secret" not in fetched
    assert fetched == {k: v for k, v in created.items() if k != "secret"}
    listed = await (await client.get("/subscriptions")).json()
    assert all("secret" not in item for item in listed["items"])


async def test_create_with_a_given_secret_disabled(
    client: Client, dba: psycopg.Connection[Any]
) -> None:
    secret = generate_secret()
    created = await _create(client, secret=secret, enabled=False)
    assert created["secret"] == secret
    assert created["enabled"] is False
    assert created["disabled_reason"]
    stored = dba.execute(
        "SELECT secret, enabled FROM notifier.subscriptions WHERE id = %s", (created["id"],)
    ).fetchone()
    assert stored == (secret, False)


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"url": "ftp://example.com"}, ["url"]),
        ({"url": "https://exa mple.com"}, ["url"]),
        ({"url": "https://example.com", "event_types": ["transaction.moved"]}, ["event_types.0"]),
        ({"url": "https://example.com", "event_types": []}, ["event_types"]),
        ({"url": "https://example.com", "secret": "whsec_c2hvcnQ="}, ["secret"]),
        ({"url": "https://example.com", "enabled": "yes"}, ["enabled"]),
        ({"event_types": ["*"]}, ["url"]),
        (
            {"url": 5, "description": "a\u0000b", "max_in_flight": 0},
            ["url", "description", "max_in_flight"],
        ),
    ],
)
async def test_invalid_subscriptions_are_422_naming_the_fields(
    client: Client, dba: psycopg.Connection[Any], body: dict[str, Any], fields: list[str]
) -> None:
    response = await client.post("/subscriptions", json=body)
    assert response.status == 422
    problem = await response.json()
    assert sorted(error["field"] for error in problem["errors"]) == sorted(fields)
    assert dba.execute("SELECT count(*) FROM notifier.subscriptions").fetchone() == (0,)


async def test_list_is_cursor_paged(client: Client) -> None:
    ids = [(await _create(client))["id"] for _ in range(5)]
    first = await (await client.get("/subscriptions", params={"limit": 2})).json()
    assert [item["id"] for item in first["items"]] == ids[:2]
    second = await (
        await client.get("/subscriptions", params={"limit": 3, "after": first["next_after"]})
    ).json()
    assert [item["id"] for item in second["items"]] == ids[2:]
    assert second["next_after"] is None
    response = await client.get("/subscriptions", params={"limit": 1000})
    assert response.status == 422


async def test_patch_changes_fields_and_enabled(client: Client) -> None:
    created = await _create(client)
    response = await client.patch(
        f"/subscriptions/{created['id']}",
        json={
            "url": "http://receiver.internal/in",
            "event_types": ["transaction.created"],
            "enabled": False,
        },
    )
    assert response.status == 200
    patched = await response.json()
    assert "secret" not in patched
    assert patched["url"] == "http://receiver.internal/in"
    assert patched["event_types"] == ["transaction.created"]
    assert (patched["enabled"], patched["disabled_reason"]) == (False, "disabled by an operator")

    enabled = await (
        await client.patch(
            f"/subscriptions/{created['id']}", json={"enabled": True, "max_in_flight": 3}
        )
    ).json()
    assert (enabled["enabled"], enabled["disabled_reason"], enabled["max_in_flight"]) == (
        True,
        None,
        3,
    )
    cleared = await (
        await client.patch(f"/subscriptions/{created['id']}", json={"max_in_flight": None})
    ).json()
    assert cleared["max_in_flight"] is None


async def test_patch_rotates_the_secret_keeping_the_old_for_the_overlap(
    client: Client, dba: psycopg.Connection[Any], api_settings: Any
) -> None:
    created = await _create(client)
    response = await client.patch(f"/subscriptions/{created['id']}", json={"rotate_secret": True})
    assert response.status == 200
    rotated = await response.json()
    assert rotated["secret"] != created["secret"]
    assert validate_secret(rotated["secret"]) == rotated["secret"]
    row = dba.execute(
        "SELECT secret, previous_secret, "
        "extract(epoch FROM previous_secret_expires_at - updated_at) "
        "FROM notifier.subscriptions WHERE id = %s",
        (created["id"],),
    ).fetchone()
    assert row is not None
    assert row[:2] == (rotated["secret"], created["secret"])
    assert float(row[2]) == api_settings.secret_rotation_overlap_seconds

    given = generate_secret()
    again = await (
        await client.patch(f"/subscriptions/{created['id']}", json={"secret": given})
    ).json()
    assert again["secret"] == given
    fetched = await (await client.get(f"/subscriptions/{created['id']}")).json()
    assert "secret" not in fetched


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"secret": "not-a-secret"}, "secret"),
        ({"url": "mailto:someone@example.com"}, "url"),
        ({"rotate_secret": "yes"}, "rotate_secret"),
        ({"id": 9}, "id"),
    ],
)
async def test_patch_refuses_invalid_fields(
    client: Client, body: dict[str, Any], field: str
) -> None:
    created = await _create(client)
    response = await client.patch(f"/subscriptions/{created['id']}", json=body)
    assert response.status == 422
    assert [error["field"] for error in (await response.json())["errors"]] == [field]
    unchanged = await (await client.get(f"/subscriptions/{created['id']}")).json()
    assert unchanged == {k: v for k, v in created.items() if k != "secret"}


async def test_delete_then_gone(client: Client) -> None:
    created = await _create(client)
    response = await client.delete(f"/subscriptions/{created['id']}")
    assert response.status == 204
    assert (await client.get(f"/subscriptions/{created['id']}")).status == 404
    assert (await client.delete(f"/subscriptions/{created['id']}")).status == 404


@pytest.mark.parametrize(
    "path", ["/subscriptions/77", "/subscriptions/x", f"/subscriptions/{2**64}"]
)
async def test_unknown_subscription_is_404(client: Client, path: str) -> None:
    for response in (
        await client.get(path),
        await client.patch(path, json={"enabled": False}),
        await client.delete(path),
    ):
        assert response.status == 404
        assert response.content_type == "application/problem+json"


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8082/",
        "http://169.254.169.254/latest/meta-data",
        "https://10.1.2.3/hook",
        "http://[::1]/hook",
        *IPV6_FORMS_OF_PRIVATE_TARGETS,
    ],
)
async def test_private_targets_are_refused_unless_allowed(
    api_settings: Settings, dba: psycopg.Connection[Any], url: str
) -> None:
    strict = api_settings.model_copy(update={"allow_private_targets": False})
    async with TestClient(TestServer(create_app(strict)), headers=AUTH) as client:
        created = await client.post("/subscriptions", json={"url": url})
        public = await _create(client, url="https://93.184.216.34/hook")
        patched = await client.patch(f"/subscriptions/{public['id']}", json={"url": url})
        for response in (created, patched):
            assert response.status == 422
            assert response.content_type == "application/problem+json"
            [error] = (await response.json())["errors"]
            assert error["field"] == "url"
            assert "not a public address" in error["message"]
    stored = dba.execute("SELECT url FROM notifier.subscriptions").fetchall()
    assert stored == [("https://93.184.216.34/hook",)]


@pytest.mark.parametrize("url", ["http://127.0.0.1:8082/", "http://169.254.169.254/latest"])
async def test_private_targets_are_accepted_with_the_override(client: Client, url: str) -> None:
    # The client fixture runs with NOTIFIER_ALLOW_PRIVATE_TARGETS=true.
    created = await _create(client, url=url)
    assert created["url"] == url
