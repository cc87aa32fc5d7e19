"""The RabbitMQ sink against the shared RabbitMQ, through real daemons: the message
contract end to end, connections cut for 10 s, unroutable messages, a missing exchange."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from notifier.devtools.daemon_process import wait_until
from notifier.devtools.receiver import Receiver
from notifier.ops.operator import Operations
from notifier.subscriptions.store import SubscriptionStore
from tests.brokers.rabbitmq_support import (
    Names,
    Relay,
    connections_of,
    cut_connections_of,
    declare_exchange,
    names_of_its_own,
)
from tests.brokers.support import consuming, webhook_bodies
from tests.support import (
    Daemon,
    listening,
    outcomes,
    settled,
    start,
    statuses,
    write_events,
)

pytestmark = pytest.mark.slow

OUTAGE_SCHEDULE = "0.5,1,1,2,2,2,2,2,2,2,2,2"  # about 20 s: outlasts the 10 s outage


@pytest.fixture
async def rabbitmq() -> AsyncIterator[Names]:
    """An exchange name and a queue of this test's own on the shared RabbitMQ."""
    async with names_of_its_own() as names:
        yield names


async def test_2000_events_arrive_once_each_with_the_webhook_body_and_cloudevents(
    database_url: str,
    pool: asyncpg.Pool,
    receiver: Receiver,
    rabbitmq: Names,
    daemons: list[Daemon],
    tmp_path: Path,
) -> None:
    await declare_exchange(rabbitmq)
    url = rabbitmq.url(f"exchange={rabbitmq.exchange}&routing_key=wallet.{{type}}")
    store = SubscriptionStore(pool, allow_private_targets=True)
    await store.create(url)
    await store.create(receiver.url("/hook"))
    async with consuming(url) as collected:
        start(daemons, database_url, tmp_path)
        began = time.monotonic()
        await write_events(database_url, 2000, chunk=500, pause=0)
        await wait_until(
            lambda: len(collected.messages) >= 2000, seconds=40, what="2000 messages on RabbitMQ"
        )
        took = time.monotonic() - began
        await wait_until(lambda: settled(pool, 4000), seconds=30, what="all deliveries settled")
        await asyncio.sleep(0.5)  # a duplicate would arrive by now
    print(f"\nRabbitMQ: 2000 events published and consumed in {took:.2f} s")

    assert await statuses(pool) == {"succeeded": 4000}
    by_id = collected.by_event_id()
    assert len(by_id) == 2000
    assert {len(copies) for copies in by_id.values()} == {1}
    webhook = webhook_bodies(receiver)
    assert webhook.keys() == by_id.keys()
    for event_id, (message,) in by_id.items():
        assert message.body == webhook[event_id]
        body = message.as_json()["body"]
        assert message.metadata == {
            "message_id": event_id,
            "type": "transaction.created",
            "content_type": "application/json",
            "app_id": "notifier",
            "delivery_mode": "2",
            "timestamp": message.metadata["timestamp"],
            "exchange": rabbitmq.exchange,
            "routing_key": "wallet.transaction.created",
            "cloudEvents_id": event_id,
            "cloudEvents_type": "transaction.created",
            "cloudEvents_source": "notifier",
            "cloudEvents_time": body["timestamp"],
            "cloudEvents_specversion": "1.0",
        }
        captured = datetime.fromisoformat(body["timestamp"])
        sent = datetime.fromisoformat(message.metadata["timestamp"])
        assert sent.replace(tzinfo=captured.tzinfo) == captured.replace(microsecond=0)


async def test_broker_down_for_10_s_then_everything_arrives_and_webhooks_keep_up(
    database_url: str,
    pool: asyncpg.Pool,
    receiver: Receiver,
    rabbitmq: Names,
    daemons: list[Daemon],
    tmp_path: Path,
) -> None:
    # The daemon reaches the broker through a relay: the outage is the broker closing the
    # daemon's connections (rabbitmqctl close_connection, the daemon's alone) while the
    # relay refuses every reconnect, for 10 s. Other clients of the shared broker, the
    # consumer included, see nothing.
    relay = Relay()
    await relay.accept()
    store = SubscriptionStore(pool, allow_private_targets=True)
    amqp = await store.create(relay.url(f"routing_key={rabbitmq.queue}"))
    await store.create(receiver.url("/live"))
    daemon = start(daemons, database_url, tmp_path, NOTIFIER_RETRY_SCHEDULE=OUTAGE_SCHEDULE)
    pid = daemon.process.pid
    await wait_until(lambda: listening(pool), what="the daemon to listen")
    try:
        async with consuming(rabbitmq.url(f"routing_key={rabbitmq.queue}")) as collected:
            writer = asyncio.create_task(write_events(database_url, 600, chunk=5, pause=0.1))
            try:
                await wait_until(lambda: len(collected.messages) >= 50, what="50 messages")
                assert len(await connections_of(pid)) == 1  # one connection per broker
                relay.refuse()
                began = time.time()
                cut = await cut_connections_of(pid)
                while time.time() - began < 10:
                    cut += await cut_connections_of(pid)  # none: reconnects are refused
                    await asyncio.sleep(0.5)
                await relay.accept()
                ended = time.time()
            finally:
                await writer
            await wait_until(lambda: settled(pool, 1200), seconds=40, what="all deliveries settled")
            drained = time.time() - ended
            await asyncio.sleep(0.5)
    finally:
        await relay.close()

    assert cut == 1
    assert await statuses(pool) == {"succeeded": 1200}
    event_ids = {r["uid"] for r in await pool.fetch("SELECT uid::text FROM notifier.events")}
    copies = Counter(message.metadata["message_id"] for message in collected.messages)
    assert copies.keys() == event_ids
    attempts = await outcomes(pool, amqp.id)
    failed = {outcome: n for outcome, n in attempts.items() if outcome != "amqp_ack"}
    assert failed.keys() == {"connection_error"}
    latencies = [
        (r.at, r.at - datetime.fromisoformat(r.event["timestamp"]).timestamp())
        for r in receiver.by_path()["/live"]
    ]
    assert len(latencies) == 600
    # From the outage on: the start of the stream also pays for the daemon's first use of
    # the RabbitMQ sink (importing aio-pika, connecting), which is not what is measured.
    during = [latency for at, latency in latencies if began <= at <= ended]
    since = [latency for at, latency in latencies if at >= began]
    print(
        f"\nRabbitMQ down 10 s: failed attempts {failed}; "
        f"{sum(n - 1 for n in copies.values())} of 600 events published twice; "
        f"all settled {drained:.1f} s after it came back; webhook latency during the outage "
        f"({len(during)} events) median {statistics.median(during) * 1000:.0f} ms, "
        f"max {max(during) * 1000:.0f} ms; max from the outage on {max(since) * 1000:.0f} ms, "
        f"overall {max(latency for _, latency in latencies) * 1000:.0f} ms"
    )
    assert max(since) < 1.0, sorted(since)[-5:]


async def test_an_unroutable_message_is_a_failed_attempt(
    database_url: str,
    pool: asyncpg.Pool,
    rabbitmq: Names,
    daemons: list[Daemon],
    tmp_path: Path,
) -> None:
    await declare_exchange(rabbitmq)  # and no queue bound to it
    url = rabbitmq.url(f"exchange={rabbitmq.exchange}&routing_key=wallet.{{type}}")
    subscription = await SubscriptionStore(pool, allow_private_targets=True).create(url)
    start(daemons, database_url, tmp_path, NOTIFIER_RETRY_SCHEDULE="0.2,0.2")
    await write_events(database_url, 2, chunk=2, pause=0)
    await wait_until(lambda: settled(pool, 2), what="both deliveries settled")

    assert await statuses(pool) == {"dead": 2}
    assert await outcomes(pool, subscription.id) == {"amqp_unroutable": 6}
    errors = await pool.fetch("SELECT DISTINCT error FROM notifier.delivery_attempts")
    assert [row["error"] for row in errors] == ["amqp_unroutable: NO_ROUTE"]

    # The operator's tools work as for a webhook: stats show the dead letters, and once
    # a queue is bound, recover sends them again.
    operations = Operations(pool)
    stats = await operations.stats(subscription.id)
    assert stats is not None
    assert stats["deliveries"]["dead"] == 2
    queue = await rabbitmq.channel.get_queue(rabbitmq.queue)
    await queue.bind(rabbitmq.exchange, "wallet.#")
    async with consuming(rabbitmq.url(f"routing_key={rabbitmq.queue}")) as collected:
        scheduled = await operations.recover(
            subscription.id, datetime.now(UTC) - timedelta(hours=1)
        )
        assert scheduled.as_dict()["scheduled"] == 2
        await wait_until(lambda: len(collected.messages) == 2, what="the recovered events")
    # A message reaches the queue a moment before its publisher confirm is settled.
    await wait_until(
        lambda: _equals(statuses(pool), {"succeeded": 2}), what="the recovered deliveries settled"
    )


async def test_a_missing_exchange_fails_alone_until_it_is_created(
    database_url: str,
    pool: asyncpg.Pool,
    rabbitmq: Names,
    daemons: list[Daemon],
    tmp_path: Path,
) -> None:
    missing = rabbitmq.url(f"exchange={rabbitmq.exchange}&routing_key=wallet.{{type}}")
    # Another subscription on the same broker (the same connection): it must not suffer.
    other = rabbitmq.url(f"routing_key={rabbitmq.queue}")
    store = SubscriptionStore(pool, allow_private_targets=True)
    subscription = await store.create(missing)
    neighbour = await store.create(other)
    start(daemons, database_url, tmp_path, NOTIFIER_RETRY_SCHEDULE=",".join(["0.3"] * 30))
    async with consuming(other) as collected:
        await write_events(database_url, 20, chunk=20, pause=0)
        await wait_until(lambda: len(collected.messages) >= 20, what="the other subscription")
        await wait_until(
            lambda: _has(outcomes(pool, subscription.id), "amqp_not_found"),
            what="an amqp_not_found attempt",
        )
        errors = {
            row["error"]
            for row in await pool.fetch(
                "SELECT DISTINCT error FROM notifier.delivery_attempts WHERE outcome <> 'amqp_ack'"
            )
        }
        assert errors == {
            f"amqp_not_found: NOT_FOUND - no exchange '{rabbitmq.exchange}' in vhost '/'"
        }
        # Now create it, bound to the queue the other subscription fills.
        exchange = await declare_exchange(rabbitmq)
        await (await rabbitmq.channel.get_queue(rabbitmq.queue)).bind(exchange, "#")
        await wait_until(lambda: settled(pool, 40), what="all deliveries settled")
        await wait_until(lambda: len(collected.messages) >= 40, what="the retried events")

    assert await statuses(pool) == {"succeeded": 40}
    attempts = await outcomes(pool, subscription.id)
    print(f"\nRabbitMQ missing exchange: attempts {dict(attempts)}")
    assert attempts["amqp_ack"] == 20
    # Nothing but the missing exchange's own publishes failed: the connection stayed up.
    assert set(attempts) <= {"amqp_ack", "amqp_not_found", "amqp_unroutable"}
    assert set(await outcomes(pool, neighbour.id)) == {"amqp_ack"}
    assert len(collected.by_event_id()) == 20
    assert {len(copies) for copies in collected.by_event_id().values()} == {2}


async def _has(counted: asyncio.Future[Counter[str]] | object, outcome: str) -> bool:
    assert asyncio.iscoroutine(counted)
    found: Counter[str] = await counted
    return found[outcome] > 0


async def _equals(counted: Awaitable[dict[str, int]], expected: dict[str, int]) -> bool:
    return await counted == expected
