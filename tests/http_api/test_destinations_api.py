"""Broker destinations and the webhook extras through the API: what is accepted, what is
refused (422 naming the field and saying why), and that no credential is ever shown."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from aiohttp.test_utils import TestClient

Client = TestClient[Any, Any]

BROKER_URLS = [
    "amqp://notifier:s3cret-pw@rabbit.internal:5672/%2F?exchange=wallet&routing_key=wallet.{type}",
    "amqps://notifier:s3cret-pw@rabbit.internal/prod?routing_key=ledger-events",
    "kafka://k1.internal:9092,k2.internal:9092/wallet-{topic}",
    "nats://notifier:s3cret-pw@nats.internal:4222/wallet.{type}",
    "nats://s3cret-pw@nats.internal/wallet.events",
]


@pytest.mark.parametrize("url", BROKER_URLS)
async def test_a_broker_url_is_accepted_and_never_shown_with_its_credentials(
    client: Client, dba: psycopg.Connection[Any], url: str
) -> None:
    response = await client.post("/subscriptions", json={"url": url})
    assert response.status == 201, await response.text()
    created = await response.json()
    stored = dba.execute("SELECT url FROM notifier.subscriptions").fetchone()
    assert stored == (url,)  # the daemon needs the credentials
    shown = [
        await response.text(),
        await (await client.get(f"/subscriptions/{created['id']}")).text(),
        await (await client.get("/subscriptions")).text(),
        await (await client.patch(f"/subscriptions/{created['id']}", json={})).text(),
    ]
    for text in shown:
        assert "s3cret-pw" not in text
    if "s3cret-pw" in url:
        assert "***@" in created["url"]
    assert created["headers"] == {}
    assert created["format"] == "standard-webhooks"


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("ftp://example.com/", "must start with one of"),
        ("amqp://rabbit.internal", "give ?exchange=NAME or ?routing_key=QUEUE"),
        ("amqp://rabbit.internal/?exchange=x&durable=1", "not durable"),
        ("amqp://rabbit.internal/?routing_key={type}&routing_key=x", "a repeated one"),
        ("amqp://rabbit.internal:port/?exchange=x", "a port must be a number"),
        ("kafka://k1.internal:9092", "must name a topic"),
        ("kafka://k1.internal:9092/wallet events", "whitespace"),
        ("kafka://k1.internal:9092/wallet/events", "the topic may hold"),
        ("kafka://k1.internal:99999/wallet", "no valid port"),
        ("kafka://user:pw@k1.internal:9092/wallet", "take no credentials"),
        ("nats://nats.internal:4222/wallet.*", "without wildcards"),
        ("nats://nats.internal:4222/wallet..x", "tokens joined by '.'"),
        ("nats://nats.internal:4222/{account}.x", "not {account}"),
        ("nats://nats.internal:4222", "must name a subject"),
    ],
)
async def test_a_bad_broker_url_is_422_saying_what_is_wrong(
    client: Client, dba: psycopg.Connection[Any], url: str, says: str
) -> None:
    response = await client.post("/subscriptions", json={"url": url})
    assert response.status == 422, await response.text()
    problem = await response.json()
    assert response.content_type == "application/problem+json"
    assert [e["field"] for e in problem["errors"]] == ["url"]
    assert says in problem["errors"][0]["message"]
    assert dba.execute("SELECT count(*) FROM notifier.subscriptions").fetchone() == (0,)


async def test_a_bad_url_with_a_password_is_refused_without_quoting_it(client: Client) -> None:
    response = await client.post(
        "/subscriptions", json={"url": "amqp://u:s3cret-pw@rabbit.internal/?bogus=1"}
    )
    assert response.status == 422
    assert "s3cret-pw" not in await response.text()


async def test_webhook_headers_are_kept_and_shown_masked(
    client: Client, dba: psycopg.Connection[Any]
) -> None:
    headers = {"Authorization": "Bearer s3cret-token", "X-Tenant": "wallet"}
    response = await client.post(
        "/subscriptions",
        json={"url": "https://example.com/hook", "headers": headers, "format": "cloudevents"},
    )
    assert response.status == 201, await response.text()
    created = await response.json()
    assert created["headers"] == {"Authorization": "***", "X-Tenant": "***"}
    assert created["format"] == "cloudevents"
    listed = await (await client.get("/subscriptions")).text()
    assert "s3cret-token" not in listed
    stored = dba.execute("SELECT headers, format FROM notifier.subscriptions").fetchone()
    assert stored == (headers, "cloudevents")

    cleared = await client.patch(
        f"/subscriptions/{created['id']}", json={"headers": {}, "format": "standard-webhooks"}
    )
    assert (await cleared.json())["headers"] == {}
    stored = dba.execute("SELECT headers, format FROM notifier.subscriptions").fetchone()
    assert stored == ({}, "standard-webhooks")


@pytest.mark.parametrize(
    ("body", "field", "says"),
    [
        ({"headers": {"webhook-signature": "v1,x"}}, "headers", "set by the notifier itself"),
        ({"headers": {"Content-Type": "text/plain"}}, "headers", "set by the notifier itself"),
        ({"headers": {"Bad Name": "x"}}, "headers", ""),
        ({"headers": {"X-Key": "line\r\nInjected: 1"}}, "headers", "printable ASCII"),
        ({"headers": {"X-Key": ""}}, "headers", "printable ASCII"),
        ({"headers": {"X-Key": 5}}, "headers", ""),
        ({"headers": {f"X-{n}": "v" for n in range(21)}}, "headers", ""),
        ({"format": "xml"}, "format", ""),
        ({"headers": {"traceparent": "00-x"}}, "headers", "set by the notifier itself"),
        (
            {"url": "https://hook:pw@example.com/", "headers": {"authorization": "Basic x"}},
            "headers",
            "cannot both be given",
        ),
        (
            {"url": "kafka://k1.internal:9092/wallet", "headers": {"X-Key": "v"}},
            "headers",
            "http(s):// subscriptions only",
        ),
        (
            {"url": "kafka://k1.internal:9092/wallet", "format": "cloudevents"},
            "format",
            "http(s):// subscriptions only",
        ),
    ],
)
async def test_bad_extras_are_422(
    client: Client, dba: psycopg.Connection[Any], body: dict[str, Any], field: str, says: str
) -> None:
    response = await client.post("/subscriptions", json={"url": "https://example.com/", **body})
    assert response.status == 422, await response.text()
    errors = (await response.json())["errors"]
    assert errors[0]["field"].split(".")[0] == field
    assert says in errors[0]["message"]
    assert "Injected" not in await response.text()  # a header value is never quoted back
    assert dba.execute("SELECT count(*) FROM notifier.subscriptions").fetchone() == (0,)


async def test_moving_a_webhook_with_extras_to_a_broker_is_422_until_they_are_cleared(
    client: Client,
) -> None:
    response = await client.post(
        "/subscriptions",
        json={"url": "https://example.com/", "headers": {"X-Key": "v"}},
    )
    created = await response.json()
    moved = await client.patch(
        f"/subscriptions/{created['id']}", json={"url": "nats://nats.internal/wallet.events"}
    )
    assert moved.status == 422
    error = (await moved.json())["errors"][0]
    assert error["field"] == "url"
    assert "clear them" in error["message"]
    moved = await client.patch(
        f"/subscriptions/{created['id']}",
        json={"url": "nats://nats.internal/wallet.events", "headers": {}},
    )
    assert moved.status == 200, await moved.text()
    assert (await moved.json())["url"] == "nats://nats.internal/wallet.events"


async def test_credentials_in_the_url_and_an_authorization_header_never_meet(
    client: Client,
) -> None:
    """An attempt with both could not be sent: each change that would bring them
    together is refused, whichever side it changes."""
    response = await client.post("/subscriptions", json={"url": "https://hook:pw@example.com/"})
    with_url = await response.json()
    response = await client.post(
        "/subscriptions",
        json={"url": "https://example.com/", "headers": {"Authorization": "Bearer t"}},
    )
    with_header = await response.json()
    for subscription_id, change in [
        (with_url["id"], {"headers": {"Authorization": "Bearer t"}}),
        (with_header["id"], {"url": "https://hook:pw@example.com/"}),
    ]:
        refused = await client.patch(f"/subscriptions/{subscription_id}", json=change)
        assert refused.status == 422, await refused.text()
        assert "cannot both be given" in (await refused.json())["errors"][0]["message"]
    moved = await client.patch(
        f"/subscriptions/{with_header['id']}",
        json={"url": "https://hook:pw@example.com/", "headers": {}},
    )
    assert moved.status == 200, await moved.text()


async def test_ordering_by_account_is_the_default_key_for_transaction_events(
    client: Client,
) -> None:
    response = await client.post(
        "/subscriptions",
        json={"url": "https://example.com/", "event_types": ["transaction.*"], "ordering": "key"},
    )
    assert response.status == 201, await response.text()
    created = await response.json()
    assert (created["ordering"], created["ordering_key"]) == ("key", "account_id")
    listed = await (await client.get(f"/subscriptions/{created['id']}")).json()
    assert (listed["ordering"], listed["ordering_key"]) == ("key", "account_id")
    off = await client.patch(f"/subscriptions/{created['id']}", json={"ordering": "none"})
    assert (await off.json())["ordering_key"] is None


@pytest.mark.parametrize(
    ("body", "field", "says"),
    [
        ({"ordering": "key"}, "ordering_key", "is required unless every event type"),
        (
            {"ordering": "key", "event_types": ["transaction.*"], "ordering_key": "tenant"},
            "ordering_key",
            "tenant is not a field of the transaction rows",
        ),
        (
            {"ordering": "key", "ordering_key": "account-id", "event_types": ["transaction.*"]},
            "ordering_key",
            "",
        ),
        ({"ordering_key": "account_id"}, "ordering_key", "applies only with ordering 'key'"),
        ({"ordering": "sorted"}, "ordering", ""),
    ],
)
async def test_bad_ordering_is_422(
    client: Client, dba: psycopg.Connection[Any], body: dict[str, Any], field: str, says: str
) -> None:
    response = await client.post("/subscriptions", json={"url": "https://example.com/", **body})
    assert response.status == 422, await response.text()
    errors = (await response.json())["errors"]
    assert errors[0]["field"] == field
    assert says in errors[0]["message"]
    assert dba.execute("SELECT count(*) FROM notifier.subscriptions").fetchone() == (0,)


async def test_ordering_by_another_field_of_a_watched_table(
    client: Client, dba: psycopg.Connection[Any]
) -> None:
    dba.execute("CREATE TABLE orders (id bigint PRIMARY KEY, customer text)")
    dba.execute("SELECT notifier.watch('orders', 'order')")
    ok = await client.post(
        "/subscriptions",
        json={
            "url": "https://example.com/",
            "event_types": ["order.*"],
            "ordering": "key",
            "ordering_key": "customer",
        },
    )
    assert ok.status == 201, await ok.text()
    bad = await client.post(
        "/subscriptions",
        json={
            "url": "https://example.com/",
            "event_types": ["order.*", "transaction.created"],
            "ordering": "key",
            "ordering_key": "customer",
        },
    )
    assert bad.status == 422
    assert "customer is not a field of the transaction rows" in await bad.text()
