"""Destination kinds in a real daemon: a webhook's own headers and the CloudEvents
format, and a broker whose client library is not installed."""

from __future__ import annotations

import json
from pathlib import Path

import asyncpg
import psycopg
from standardwebhooks.webhooks import Webhook

from notifier.devtools.daemon_process import wait_until
from notifier.devtools.receiver import Receiver
from notifier.subscriptions.store import SubscriptionStore
from tests.support import ATTEMPT_OUTCOMES, Daemon, start, statuses
from tests.test_daemon import account, top_ups

Conn = psycopg.Connection[tuple[object, ...]]


async def test_cloudevents_format_and_own_headers_reach_the_receiver(
    database_url: str,
    dba: Conn,
    pool: asyncpg.Pool,
    receiver: Receiver,
    daemons: list[Daemon],
    tmp_path: Path,
) -> None:
    store = SubscriptionStore(pool, allow_private_targets=True)
    plain = await store.create(receiver.url("/plain"))
    cloud = await store.create(
        receiver.url("/cloud"),
        headers={"Authorization": "Bearer for-the-receiver", "X-Tenant": "wallet"},
        format="cloudevents",
    )
    start(daemons, database_url, tmp_path, NOTIFIER_EVENT_SOURCE="/ledger/test")
    top_ups(dba, account(dba), 3)
    await wait_until(lambda: len(receiver.received) == 6, what="six deliveries")

    plain_bodies = {r.event["id"]: r.body for r in receiver.by_path()["/plain"]}
    for request in receiver.by_path()["/cloud"]:
        assert request.headers["Content-Type"] == "application/cloudevents+json"
        assert request.headers["Authorization"] == "Bearer for-the-receiver"
        assert request.headers["X-Tenant"] == "wallet"
        event = request.event
        assert list(event) == [
            "specversion", "id", "source", "type", "time", "datacontenttype", "data"
        ]  # fmt: skip
        assert (event["specversion"], event["source"], event["type"]) == (
            "1.0",
            "/ledger/test",
            "transaction.created",
        )
        assert event["datacontenttype"] == "application/json"
        # The data is the webhook body, byte for byte, as the plain subscription got it.
        webhook_body = plain_bodies[event["id"]]
        assert request.body.endswith(b',"data":' + webhook_body + b"}")
        assert event["time"] == json.loads(webhook_body)["timestamp"]
        # Signed like any delivery, over the body as sent.
        assert Webhook(cloud.secret).verify(request.body, request.headers) == event
    for request in receiver.by_path()["/plain"]:
        assert request.headers["Content-Type"] == "application/json"
        assert "Authorization" not in request.headers
        assert Webhook(plain.secret).verify(request.body, request.headers) == request.event


async def test_a_missing_extra_fails_its_attempts_naming_it_and_nothing_else(
    database_url: str,
    dba: Conn,
    pool: asyncpg.Pool,
    receiver: Receiver,
    daemons: list[Daemon],
    tmp_path: Path,
) -> None:
    # A daemon whose Python cannot import aio_pika, as without notifier[rabbitmq].
    shadow = tmp_path / "shadow" / "aio_pika"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('No module named aio_pika')\n")
    store = SubscriptionStore(pool, allow_private_targets=True)
    rabbit = await store.create("amqp://guest:guest@127.0.0.1:5672/?exchange=amq.topic")
    await store.create(receiver.url("/hook"))
    daemon = start(
        daemons,
        database_url,
        tmp_path,
        PYTHONPATH=str(tmp_path / "shadow"),
        NOTIFIER_RETRY_SCHEDULE="0.2,0.2",
    )
    top_ups(dba, account(dba), 2)
    await wait_until(lambda: len(receiver.received) == 2, what="the webhook deliveries")

    async def dead() -> bool:
        return await statuses(pool, rabbit.id) == {"dead": 2}

    await wait_until(dead, what="the rabbitmq deliveries to die")
    attempts = await pool.fetch(ATTEMPT_OUTCOMES, rabbit.id)
    assert len(attempts) == 6
    assert {a["outcome"] for a in attempts} == {"missing_extra"}
    assert {a["error"] for a in attempts} == {
        "missing_extra: amqp:// and amqps:// destinations need the rabbitmq extra: "
        "pip install 'notifier[rabbitmq]'"
    }
    unavailable = [line for line in daemon.logs() if line["event"] == "sink_unavailable"]
    assert len(unavailable) == 1  # said once, not once per event
    assert "guest:guest" not in daemon.log_path.read_text()
