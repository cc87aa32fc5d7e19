"""The Kafka sink against a real broker (Tansu, started by each test) and real daemons:
end to end, a broker outage mid-stream, and kill -9 of the daemon mid-stream."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import asyncpg
import pytest

from notifier.devtools.consume import Message
from notifier.devtools.consumers.kafka import consume
from notifier.devtools.daemon_process import wait_until
from notifier.devtools.receiver import Receiver
from notifier.subscriptions.store import SubscriptionStore
from tests.brokers.kafka_server import Tansu, running_tansu
from tests.brokers.support import Collected, consuming, webhook_bodies
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

SOURCE = "urn:notifier:kafka-test"
# Outlasts a 10 s outage: about 20 s of attempts before a delivery would be dead.
LONG_RETRIES = "0.5,1,1,2,2,2,2,2,2,2,2,2"


@pytest.fixture
async def tansu(tmp_path: Path) -> AsyncIterator[Tansu]:
    async with running_tansu(tmp_path / "tansu.log") as broker:
        yield broker


async def read_topic(url: str, until: int, seconds: float = 20) -> Collected:
    """Everything on ``url``'s topic from its first offset, once ``until`` distinct events
    (or the time is up)."""
    collected = Collected()
    ready, stop = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(
        consume(url, collected.messages.append, ready, stop, from_beginning=True)
    )
    try:
        await wait_until(
            lambda: task.done() or len(collected.by_event_id()) >= until,
            seconds=seconds,
            what=f"{until} events on the topic",
        )
    finally:
        stop.set()
        async with asyncio.timeout(10):
            await task
    return collected


def check_message(message: Message, body: bytes) -> None:
    """The message contract: the webhook body, byte for byte, and the binding's headers."""
    assert message.body == body
    event = message.as_json()["body"]
    assert message.metadata == {
        "ce_id": event["id"],
        "ce_type": "transaction.created",
        "ce_source": SOURCE,
        "ce_time": event["timestamp"],
        "ce_specversion": "1.0",
        "content-type": "application/json",
        "key": event["id"],
    }


async def test_end_to_end_each_event_once_with_the_webhook_body(
    database_url: str,
    pool: asyncpg.Pool,
    receiver: Receiver,
    daemons: list[Daemon],
    tmp_path: Path,
    tansu: Tansu,
) -> None:
    url = tansu.url(await tansu.create_topic(partitions=3))
    store = SubscriptionStore(pool, allow_private_targets=True)
    kafka = await store.create(url)
    await store.create(receiver.url("/hook"))
    async with consuming(url) as collected:
        start(daemons, database_url, tmp_path, NOTIFIER_EVENT_SOURCE=SOURCE)
        began = time.monotonic()
        await write_events(database_url, 2000, chunk=2000, pause=0)
        await wait_until(lambda: len(collected.messages) >= 2000, seconds=30, what="2000 messages")
        took = time.monotonic() - began
        await wait_until(lambda: settled(pool, 4000), what="all deliveries settled")
        await asyncio.sleep(0.5)  # a duplicate would have arrived by now

    by_id = collected.by_event_id()
    webhook = webhook_bodies(receiver)
    print(f"\nkafka: 2000 events on a 3-partition topic in {took:.2f} s")
    assert len(by_id) == 2000
    assert {len(copies) for copies in by_id.values()} == {1}
    assert by_id.keys() == webhook.keys()
    for event_id, (message,) in by_id.items():
        check_message(message, webhook[event_id])
    assert await statuses(pool, kafka.id) == {"succeeded": 2000}
    assert await outcomes(pool, kafka.id) == {"kafka_ack": 2000}


async def test_a_topic_template_names_the_topic_and_consume_refuses_one(
    database_url: str,
    pool: asyncpg.Pool,
    daemons: list[Daemon],
    tmp_path: Path,
    tansu: Tansu,
) -> None:
    topic = await tansu.create_topic(suffix="-transaction")
    template = tansu.url(topic.removesuffix("-transaction") + "-{topic}")
    await SubscriptionStore(pool, allow_private_targets=True).create(template)
    with pytest.raises(ValueError, match="not a template"):
        async with consuming(template):
            pass
    async with consuming(tansu.url(topic)) as collected:
        start(daemons, database_url, tmp_path)
        await write_events(database_url, 5, chunk=5, pause=0)
        await wait_until(lambda: len(collected.messages) >= 5, what="5 messages")
    assert {m.metadata["ce_type"] for m in collected.messages} == {"transaction.created"}


async def test_an_ordered_subscription_keys_each_record_by_its_account(
    database_url: str,
    pool: asyncpg.Pool,
    daemons: list[Daemon],
    tmp_path: Path,
    tansu: Tansu,
) -> None:
    topic = await tansu.create_topic(partitions=3)
    url = tansu.url(topic)
    await SubscriptionStore(pool, allow_private_targets=True).create(
        url, event_types=["transaction.*"], ordering="key"
    )
    accounts = [
        row["id"]
        for row in await pool.fetch(
            "INSERT INTO accounts (currency) SELECT 'USD' FROM generate_series(1, 3) RETURNING id"
        )
    ]
    async with consuming(url) as collected:
        start(daemons, database_url, tmp_path)
        for _ in range(10):
            await pool.execute(
                "INSERT INTO transactions (account_id, kind, amount) "
                "SELECT id, 'top_up', 1 FROM unnest($1::bigint[]) AS id",
                accounts,
            )
        await wait_until(lambda: len(collected.messages) >= 30, what="30 messages")
    # The key is the account: each account's records share one partition, in order.
    for message in collected.messages:
        body = message.as_json()["body"]
        assert message.metadata["key"] == str(body["data"]["account_id"])
    for account in accounts:
        ids = [
            m.as_json()["body"]["data"]["id"]
            for m in collected.messages
            if m.metadata["key"] == str(account)
        ]
        assert ids == sorted(ids)
        assert len(ids) == 10


async def test_broker_down_10_s_mid_stream_then_everything_arrives(
    database_url: str,
    pool: asyncpg.Pool,
    receiver: Receiver,
    daemons: list[Daemon],
    tmp_path: Path,
    tansu: Tansu,
) -> None:
    url = tansu.url(await tansu.create_topic())
    store = SubscriptionStore(pool, allow_private_targets=True)
    kafka = await store.create(url)
    await store.create(receiver.url("/live"))
    start(daemons, database_url, tmp_path, NOTIFIER_RETRY_SCHEDULE=LONG_RETRIES)
    await wait_until(lambda: listening(pool), what="the daemon to listen")

    # Tansu keeps topics in memory, and a restart empties it: what arrived before the
    # stop is read then, what arrives after the start is read from the new topic.
    async with consuming(url) as before:
        await write_events(database_url, 300, chunk=10, pause=0.01)
        await wait_until(lambda: len(before.by_event_id()) >= 300, what="300 events before")
    tansu.stop()
    stopped, down_since = time.monotonic(), time.time()
    # The stream goes on through the outage: 500 more events over about 10 s.
    await write_events(database_url, 500, chunk=5, pause=0.1)
    await asyncio.sleep(max(0.0, 10 - (time.monotonic() - stopped)))
    failed = await outcomes(pool, kafka.id)
    down_until = time.time()
    await tansu.start()
    restarted = time.monotonic()
    await wait_until(lambda: settled(pool, 1600), seconds=40, what="all deliveries settled")
    drained = time.monotonic() - restarted
    after = await read_topic(url, 500)

    arrived = before.by_event_id().keys() | after.by_event_id().keys()
    twice = before.by_event_id().keys() & after.by_event_id().keys()
    extra = sum(len(m) - 1 for m in [*before.by_event_id().values(), *after.by_event_id().values()])
    # The webhook's events captured while the broker was down: each one's latency.
    latencies = [
        r.at - captured
        for r in receiver.by_path()["/live"]
        if down_since < (captured := datetime.fromisoformat(r.event["timestamp"]).timestamp())
        and captured < down_until
    ]
    errors = {outcome: n for outcome, n in failed.items() if outcome != "kafka_ack"}
    median, worst = statistics.median(latencies) * 1000, max(latencies) * 1000
    print(
        f"\nkafka outage 10 s: failed attempts while down {errors}; drained "
        f"{drained:.2f} s after the restart; duplicates {len(twice) + extra}; latency of "
        f"the {len(latencies)} webhook events meanwhile: median {median:.0f} ms, "
        f"max {worst:.0f} ms"
    )
    webhook_ids = {r.headers["webhook-id"] for r in receiver.by_path()["/live"]}
    assert len(webhook_ids) == 800
    assert arrived == webhook_ids
    assert await statuses(pool, kafka.id) == {"succeeded": 800}
    assert errors.keys() <= {"connection_error", "timeout"}, errors
    assert errors.get("connection_error", 0) > 0
    assert len(latencies) >= 400
    assert max(latencies) < 1.0, max(latencies)


async def test_kill_9_mid_stream_then_restart_delivers_everything(
    database_url: str,
    pool: asyncpg.Pool,
    daemons: list[Daemon],
    tmp_path: Path,
    tansu: Tansu,
) -> None:
    url = tansu.url(await tansu.create_topic(partitions=2))
    kafka = await SubscriptionStore(pool, allow_private_targets=True).create(url)
    async with consuming(url) as collected:
        first = start(daemons, database_url, tmp_path)
        writer = asyncio.create_task(write_events(database_url, 2000, chunk=20, pause=0.005))
        await wait_until(lambda: len(collected.messages) >= 600, what="600 messages")
        first.kill()
        killed_at = len(collected.messages)
        await writer
        start(daemons, database_url, tmp_path)
        await wait_until(
            lambda: len(collected.by_event_id()) == 2000, seconds=40, what="2000 events"
        )
        await wait_until(lambda: settled(pool, 2000), what="all deliveries settled")
        await asyncio.sleep(0.5)  # a duplicate would have arrived by now

    copies = collected.by_event_id()
    twice = sum(1 for messages in copies.values() if len(messages) > 1)
    print(f"\nkafka kill -9 after {killed_at} messages: {twice} of 2000 events arrived twice")
    assert len(copies) == 2000
    assert max(len(messages) for messages in copies.values()) <= 2
    assert await statuses(pool, kafka.id) == {"succeeded": 2000}
