"""The AWS sink (SQS, SNS, EventBridge) against moto's server over HTTP, with real
daemons: each test makes queues, topics and buses of its own on one moto server."""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiobotocore.session import get_session

from notifier.devtools.consume import Message
from notifier.devtools.daemon_process import wait_until
from notifier.devtools.receiver import Receiver
from notifier.envelope import Envelope
from notifier.ops.operator import Operations
from notifier.sinks.aws import group_id, make
from notifier.sinks.base import Destination, Result
from notifier.sinks.registry import SinkOptions
from notifier.sinks.targets import InvalidTarget, parse_eventbridge, parse_sns, parse_sqs
from notifier.subscriptions.store import SubscriptionStore
from tests.brokers.moto_server import ACCOUNT, REGION, Moto, moto_server
from tests.brokers.support import Collected, consuming, webhook_bodies
from tests.support import (
    ATTEMPT_OUTCOMES,
    Daemon,
    listening,
    settled,
    start,
    statuses,
    write_events,
)


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Moto]:
    with moto_server(tmp_path_factory.mktemp("moto") / "moto.log") as server:
        yield server


@pytest.fixture(autouse=True)
def aws_environment(moto: Moto, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The standard AWS environment, pointing at moto: for this process (the test's own
    clients and consumers) and, passed to ``start``, for the daemons."""
    environment = moto.environment(tmp_path)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    return environment


@asynccontextmanager
async def aws(service: str) -> AsyncIterator[Any]:
    async with get_session().create_client(service) as client:
        yield client


@asynccontextmanager
async def reading(url: str, readers: int = 4) -> AsyncIterator[list[Collected]]:
    """Several consumers of one queue at once. Moto's SQS spends time on each message in
    proportion to the messages queued (a send, a receive: each scans the queue), so a
    queue is read as fast as it fills, as a real consumer would."""
    async with AsyncExitStack() as stack:
        yield [await stack.enter_async_context(consuming(url)) for _ in range(readers)]


def merged(parts: list[Collected]) -> Collected:
    together = Collected()
    together.messages = [message for part in parts for message in part.messages]
    return together


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


async def create_queue(name: str) -> str:
    """A new queue (FIFO if ``name`` ends with .fifo); its ARN."""
    attributes = {"FifoQueue": "true"} if name.endswith(".fifo") else {}
    async with aws("sqs") as sqs:
        await sqs.create_queue(QueueName=name, Attributes=attributes)
    return f"arn:aws:sqs:{REGION}:{ACCOUNT}:{name}"


async def queued(name: str) -> int:
    async with aws("sqs") as sqs:
        queue_url = (await sqs.get_queue_url(QueueName=name))["QueueUrl"]
        found = await sqs.get_queue_attributes(
            QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages"]
        )
    return int(found["Attributes"]["ApproximateNumberOfMessages"])


def once_each(collected: Collected) -> dict[str, Message]:
    by_id = collected.by_event_id()
    assert {len(copies) for copies in by_id.values()} <= {1}, "a message arrived twice"
    return {event_id: copies[0] for event_id, copies in by_id.items()}


async def drain_seconds(pool: asyncpg.Pool, subscription_id: int) -> float:
    """From the first attempt's start to the last attempt's end, for one subscription."""
    seconds = await pool.fetchval(
        "SELECT extract(epoch FROM max(a.started_at + a.duration_ms * interval '1 ms') "
        "- min(a.started_at)) FROM ("
        "  SELECT a.started_at, a.duration_ms FROM notifier.delivery_attempts a"
        "    JOIN notifier.deliveries d ON d.id = a.delivery_id WHERE d.subscription_id = $1"
        "  UNION ALL"
        "  SELECT o.sent_at, o.duration_ms FROM notifier.batches b"
        "   CROSS JOIN LATERAL unnest(b.sent_at, b.durations_ms) AS o (sent_at, duration_ms)"
        "   WHERE b.subscription_id = $1 AND o.sent_at IS NOT NULL"
        ") AS a",
        subscription_id,
    )
    return float(seconds)


# Moto is slow, and slower beside other tests on two cores: these wait minutes, not seconds.
@pytest.mark.timeout(300)
async def test_2000_rows_arrive_in_sqs_as_the_webhook_body_with_cloudevents_attributes(
    database_url: str,
    pool: asyncpg.Pool,
    receiver: Receiver,
    daemons: list[Daemon],
    tmp_path: Path,
    aws_environment: dict[str, str],
) -> None:
    name = unique("standard")
    await create_queue(name)
    url = f"sqs://{name}"
    store = SubscriptionStore(pool, allow_private_targets=True)
    subscription = await store.create(url)
    await store.create(receiver.url("/hook"))
    # Moto, beside other tests on two cores, can take seconds to answer a batch: the
    # attempts get the time, so that each event is sent once (asserted below).
    settings = {**aws_environment, "NOTIFIER_REQUEST_TIMEOUT_SECONDS": "60"}
    start(daemons, database_url, tmp_path, **settings)
    await wait_until(lambda: listening(pool), what="the daemon to listen")
    async with reading(url) as parts:
        began = time.monotonic()
        await write_events(database_url, 2000, chunk=500, pause=0)
        await wait_until(
            lambda: len(merged(parts).messages) >= 2000, seconds=150, what="2000 messages"
        )
        took = time.monotonic() - began
        await wait_until(lambda: settled(pool, 4000), what="all deliveries settled")
        await asyncio.sleep(0.3)  # a late duplicate would show by now
    collected = merged(parts)

    drained = await drain_seconds(pool, subscription.id)
    print(
        f"\nSQS (moto, not AWS): 2000 events captured, sent and consumed in {took:.2f} s; "
        f"the attempts to the queue took {drained:.2f} s from first to last "
        f"({2000 / drained:.0f} events/s, 8 in flight, beside a webhook subscription)"
    )
    assert await statuses(pool) == {"succeeded": 4000}
    # A standard queue delivers at least once: moto's, read by four consumers at once,
    # now and then hands one message to two of them. Each event was sent once (below).
    by_id = collected.by_event_id()
    print(f"read twice (standard queue, four readers): {len(collected.messages) - len(by_id)}")
    messages = {event_id: copies[0] for event_id, copies in by_id.items()}
    assert all(copy.body == copies[0].body for copies in by_id.values() for copy in copies)
    bodies = webhook_bodies(receiver, "/hook")
    assert set(messages) == set(bodies)
    for event_id, message in messages.items():
        assert message.body == bodies[event_id]
        body = message.as_json()["body"]
        assert message.metadata == {
            "ce_id": event_id,
            "ce_type": "transaction.created",
            "ce_source": "notifier",
            "ce_time": body["timestamp"],
            "ce_specversion": "1.0",
            "content-type": "application/json",
        }
    attempts = await pool.fetch(ATTEMPT_OUTCOMES, subscription.id)
    assert len(attempts) == 2000  # one attempt per event, each answered
    assert {row["outcome"] for row in attempts} == {"sqs_ok"}
    # Each event's first attempt succeeded, in a batch claimed once: a batch claimed again
    # (its lease lost) would have sent its events again, and logged only one attempt each.
    states = await pool.fetch(
        "SELECT event_id, batch_id, status, attempts FROM notifier.delivery_states "
        "WHERE subscription_id = $1",
        subscription.id,
    )
    assert len({row["event_id"] for row in states}) == len(states) == 2000
    assert all(row["batch_id"] is not None for row in states)
    assert {(row["status"], row["attempts"]) for row in states} == {("succeeded", 1)}


async def _ordered_writer(database_url: str, accounts: list[int], rows: int, seed: int) -> None:
    chance = random.Random(seed)
    conn = await asyncpg.connect(database_url)
    try:
        for _ in range(rows):
            await conn.execute(
                "INSERT INTO transactions (account_id, kind, amount) VALUES ($1, 'top_up', $2)",
                chance.choice(accounts),
                chance.randint(1, 100),
            )
    finally:
        await conn.close()


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_a_fifo_queue_gets_each_account_in_order_once_through_a_kill_9(
    database_url: str,
    pool: asyncpg.Pool,
    daemons: list[Daemon],
    tmp_path: Path,
    aws_environment: dict[str, str],
) -> None:
    name = unique("ordered") + ".fifo"
    await create_queue(name)
    url = f"sqs://{name}"
    rows = await pool.fetch(
        "INSERT INTO accounts (currency) SELECT 'USD' FROM generate_series(1, 12) RETURNING id"
    )
    accounts = [row["id"] for row in rows]
    subscription = await SubscriptionStore(pool, allow_private_targets=True).create(
        url, event_types=["transaction.*"], ordering="key", max_in_flight=64
    )
    total = 300  # moto's FIFO queue slows with each message it holds
    # Moto answers a FIFO batch in up to a second here: attempts get the time.
    settings = {**aws_environment, "NOTIFIER_REQUEST_TIMEOUT_SECONDS": "10"}
    victim = start(daemons, database_url, tmp_path, **settings)
    await wait_until(lambda: listening(pool), what="the daemon to listen")
    writers = [
        asyncio.create_task(_ordered_writer(database_url, accounts, total // 4, seed))
        for seed in range(4)
    ]
    await wait_until(lambda: _at_least(name, total // 3), seconds=60, what="a third queued")
    victim.kill()
    in_queue_at_kill = await queued(name)
    recorded_at_kill = (await statuses(pool, subscription.id)).get("succeeded", 0)
    start(daemons, database_url, tmp_path, **settings)
    await asyncio.gather(*writers)
    await wait_until(lambda: settled(pool, total), seconds=120, what="every delivery")
    in_queue = await queued(name)
    async with consuming(url) as collected:
        await wait_until(lambda: len(collected.messages) >= total, seconds=60, what="the queue")
        await asyncio.sleep(0.3)

    ledger: dict[int, list[int]] = defaultdict(list)
    for row in await pool.fetch("SELECT id, account_id FROM transactions ORDER BY id"):
        ledger[row["account_id"]].append(row["id"])
    arrived: dict[int, list[int]] = defaultdict(list)
    for message in collected.messages:
        data = message.as_json()["body"]["data"]
        assert message.metadata["MessageGroupId"] == str(data["account_id"])
        assert message.metadata["MessageDeduplicationId"] == message.metadata["ce_id"]
        arrived[data["account_id"]].append(data["id"])
    copies = Counter(message.metadata["ce_id"] for message in collected.messages)
    print(
        f"\nSQS FIFO (moto), ordered by account, kill -9: {total} events; at the kill "
        f"{in_queue_at_kill} in the queue but {recorded_at_kill} recorded as sent, so "
        f"{in_queue_at_kill - recorded_at_kill} sent again after the restart and dropped by "
        f"the de-duplication id; {in_queue} in the queue at the end, "
        f"{sum(n - 1 for n in copies.values())} duplicates read"
    )
    assert await statuses(pool) == {"succeeded": total}
    assert in_queue == total
    assert len(collected.messages) == total
    assert set(copies.values()) == {1}
    assert arrived == ledger  # each account's events in ledger order, each once


async def _at_least(queue_name: str, count: int) -> bool:
    return await queued(queue_name) >= count


async def test_an_sns_topic_and_an_eventbridge_bus_carry_the_webhook_body_to_their_queues(
    database_url: str,
    pool: asyncpg.Pool,
    receiver: Receiver,
    daemons: list[Daemon],
    tmp_path: Path,
    aws_environment: dict[str, str],
) -> None:
    from_topic, from_bus = unique("from-topic"), unique("from-bus")
    topic_queue, bus_queue = await create_queue(from_topic), await create_queue(from_bus)
    bus = unique("bus")
    async with aws("sns") as sns, aws("events") as events:
        topic = (await sns.create_topic(Name=unique("topic")))["TopicArn"]
        await sns.subscribe(
            TopicArn=topic,
            Protocol="sqs",
            Endpoint=topic_queue,
            Attributes={"RawMessageDelivery": "true"},
        )
        await events.create_event_bus(Name=bus)
        pattern = {"source": ["wallet.test"], "detail-type": [{"prefix": "transaction."}]}
        await events.put_rule(Name="all", EventBusName=bus, EventPattern=json.dumps(pattern))
        await events.put_targets(
            Rule="all", EventBusName=bus, Targets=[{"Id": "queue", "Arn": bus_queue}]
        )
    store = SubscriptionStore(pool, allow_private_targets=True)
    await store.create(f"sns://{topic}")
    await store.create(f"eventbridge://{bus}?source=wallet.test")
    await store.create(receiver.url("/hook"))
    # Moto's first request to a service loads it, beyond the tests' 1 s attempts: a timed-out
    # attempt is sent again, and EventBridge, which has no de-duplication, has it twice.
    settings = {**aws_environment, "NOTIFIER_REQUEST_TIMEOUT_SECONDS": "10"}
    start(daemons, database_url, tmp_path, **settings)
    async with (
        consuming(f"sqs://{from_topic}") as via_sns,
        consuming(f"sqs://{from_bus}") as via_bus,
    ):
        await write_events(database_url, 100, chunk=10, pause=0)
        await wait_until(lambda: settled(pool, 300), what="all deliveries settled")
        await wait_until(lambda: len(via_sns.messages) >= 100, what="100 through SNS")
        await wait_until(lambda: len(via_bus.messages) >= 100, what="100 through EventBridge")
        await asyncio.sleep(0.3)

    assert await statuses(pool) == {"succeeded": 300}
    bodies = webhook_bodies(receiver, "/hook")
    sent = once_each(via_sns)
    assert set(sent) == set(bodies)
    for event_id, message in sent.items():
        assert message.body == bodies[event_id]  # raw delivery: the same bytes
        assert message.metadata["ce_id"] == event_id
    from_eventbridge = [json.loads(message.body) for message in via_bus.messages]
    details = {event["detail"]["id"]: event for event in from_eventbridge}
    assert len(details) == len(from_eventbridge) == 100
    assert set(details) == set(bodies)
    for event_id, event in details.items():
        # EventBridge re-serializes the detail: the same JSON, not the same bytes.
        assert event["detail"] == json.loads(bodies[event_id])
        assert (event["source"], event["detail-type"]) == ("wallet.test", "transaction.created")


async def test_a_missing_queue_fails_naming_it_goes_dead_and_is_recovered_once_it_exists(
    database_url: str,
    pool: asyncpg.Pool,
    daemons: list[Daemon],
    tmp_path: Path,
    aws_environment: dict[str, str],
) -> None:
    name = unique("later")
    url = f"sqs://{name}"
    subscription = await SubscriptionStore(pool, allow_private_targets=True).create(url)
    since = datetime.now(UTC) - timedelta(minutes=1)
    start(daemons, database_url, tmp_path, **aws_environment)
    await write_events(database_url, 5, chunk=5, pause=0)
    await wait_until(lambda: settled(pool, 5), what="the deliveries to die")
    assert await statuses(pool) == {"dead": 5}
    errors = await pool.fetch(
        f"SELECT DISTINCT outcome, error FROM ({ATTEMPT_OUTCOMES}) AS a", subscription.id
    )
    assert [(row["outcome"], row["error"]) for row in errors] == [
        ("sqs_queue_not_found", f"sqs_queue_not_found: no queue {name} in region {REGION}")
    ]
    # The subscription's stats say why it fails.
    stats = await Operations(pool).stats(subscription.id)
    assert stats is not None
    assert stats["last_error"] == f"sqs_queue_not_found: no queue {name} in region {REGION}"

    await create_queue(name)
    scheduled = await Operations(pool).recover(subscription.id, since)
    async with consuming(url) as collected:
        await wait_until(lambda: len(collected.messages) >= 5, what="the recovered events")
        await wait_until(
            lambda: _statuses_are(pool, {"succeeded": 5}), what="the deliveries to succeed"
        )
        await asyncio.sleep(0.3)
    print(f"\nrecover after creating the queue: {scheduled}")
    assert len(once_each(collected)) == 5


async def _statuses_are(pool: asyncpg.Pool, expected: dict[str, int]) -> bool:
    return await statuses(pool) == expected


async def test_a_partly_failed_batch_fails_only_its_failed_entry(
    aws_environment: dict[str, str],
) -> None:
    bus = unique("bus")
    async with aws("events") as events:
        await events.create_event_bus(Name=bus)
    sink = make(SinkOptions(timeout_seconds=5, max_connections=10))
    now = datetime.now(UTC)
    good = [Envelope.of(uuid.uuid4(), "transaction.created", now, "{}", None) for _ in range(9)]
    bad = Envelope(uuid.uuid4(), "transaction.created", now, b"not json")
    target = Destination(f"eventbridge://{bus}")
    try:
        # Ten at once: one PutEvents request, whose answer has one failed entry.
        outcomes = await asyncio.gather(*(sink.deliver(target, e) for e in [*good, bad]))
        missing = await sink.deliver(Destination(f"eventbridge://{unique('no-bus')}"), good[0])
    finally:
        await sink.close()

    assert [o.code for o in outcomes] == ["eventbridge_ok"] * 9 + ["eventbridge_malformed_detail"]
    assert outcomes[-1].result is Result.REJECTED
    assert all(o.detail.startswith("event ") for o in outcomes[:9])
    assert (missing.result, missing.code) == (Result.REJECTED, "eventbridge_bus_not_found")


def test_aws_urls_are_read_and_checked() -> None:
    arn = f"arn:aws:sns:eu-west-1:{ACCOUNT}:orders.fifo"
    assert parse_sqs("sqs://orders.fifo?region=eu-west-1").fifo
    assert parse_sqs("sqs://orders").region is None
    assert parse_sns(f"sns://{arn}").region == "eu-west-1"
    assert parse_sns(f"sns://{arn}").fifo
    bus = parse_eventbridge("eventbridge://default?source=wallet")
    assert (bus.service, bus.name, bus.source, bus.fifo) == ("events", "default", "wallet", False)
    for wrong in [
        "sqs://",
        "sqs://a/b",
        "sqs://key:secret@queue",
        "sqs://q?region=EU",
        "sqs://q?colour=red",
        f"sqs://{'q' * 81}",
        "sns://topic-name",
        f"sns://{arn}?region=us-east-1",
        "eventbridge://bus?source=aws.events",
        "eventbridge://bus#x",
    ]:
        scheme = wrong.partition("://")[0]
        parse = {"sqs": parse_sqs, "sns": parse_sns, "eventbridge": parse_eventbridge}[scheme]
        with pytest.raises(InvalidTarget):
            parse(wrong)
    assert group_id(None, 7) == "notifier-subscription-7"
    assert group_id("42", 7) == "42"
    assert group_id("clé", 7).startswith("sha256-")
