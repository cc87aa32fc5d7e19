"""Receivers that answer with anything at all cannot stall the daemon.

Each hostile receiver is a raw TCP server writing the bytes it likes: NUL bytes and
invalid UTF-8 in bodies and headers, absurd Retry-After values, odd status codes and
broken status lines. A healthy subscription beside them keeps receiving everything,
every hostile delivery gets its outcome recorded, and SIGTERM still stops the daemon.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import psycopg
import pytest
import structlog

from notifier.devtools.daemon_process import wait_until
from notifier.devtools.receiver import Receiver
from notifier.engine.dispatcher import Dispatcher
from notifier.engine.retry import RetryPolicy
from notifier.engine.store import Outbox
from notifier.sinks import http as delivery
from notifier.sinks.http import WebhookSink
from notifier.sinks.registry import SinkOptions
from notifier.subscriptions.store import SubscriptionStore
from tests.support import Daemon, start

Conn = psycopg.Connection[tuple[object, ...]]
ROUNDS = 5

RESPONSES: dict[str, bytes] = {
    "nul-body-200": b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n\x00",
    "nul-and-invalid-utf8-500": b"HTTP/1.1 500 Oops\r\nContent-Length: 6\r\n\r\n\x00\xff\xfe\xc3a\x00",
    "only-invalid-utf8-400": b"HTTP/1.1 400 Bad\r\nContent-Length: 4\r\n\r\n\xed\xa0\x80\xff",
    "nul-in-header": b"HTTP/1.1 503 Busy\r\nRetry-After: 1\x00\r\nContent-Length: 0\r\n\r\n",
    "invalid-utf8-header": b"HTTP/1.1 429 Slow\r\nRetry-After: \xff\xfe\r\nX-A: \xc3\r\nContent-Length: 0\r\n\r\n",
    "superscript-retry-after": "HTTP/1.1 503 Busy\r\nRetry-After: \u00b2\r\nContent-Length: 0\r\n\r\n".encode(),
    "huge-retry-after": b"HTTP/1.1 429 Slow\r\nRetry-After: "
    + b"9" * 5000
    + b"\r\nContent-Length: 0\r\n\r\n",
    "negative-retry-after": b"HTTP/1.1 503 Busy\r\nRetry-After: -5\r\nContent-Length: 0\r\n\r\n",
    "year-99999-retry-after": b"HTTP/1.1 503 Busy\r\nRetry-After: Mon, 01 Jan 99999 00:00:00 GMT\r\nContent-Length: 0\r\n\r\n",
    "status-999": b"HTTP/1.1 999 Whatever\r\nContent-Length: 0\r\n\r\n",
    "status-000": b"HTTP/1.1 000 Zero\r\nContent-Length: 0\r\n\r\n",
    "status-1xx-then-close": b"HTTP/1.1 102 Processing\r\n\r\n",
    "garbage-status-line": b"\x00\xff NOT HTTP AT ALL\r\n\r\n",
    "no-reason-phrase": b"HTTP/1.1 201\r\nContent-Length: 0\r\n\r\n",
    "lying-content-length": b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort",
    "bad-chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n\x00\r\n",
    "close-at-once": b"",
}


async def _answer(raw: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        await reader.readuntil(b"\r\n\r\n")  # the request line and headers; the body is ignored
        writer.write(raw)
        await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


@asynccontextmanager
async def hostile_servers() -> AsyncIterator[dict[str, str]]:
    """One raw TCP server per hostile response; yields their URLs by name."""
    servers: list[asyncio.Server] = []
    urls: dict[str, str] = {}
    try:
        for name, raw in RESPONSES.items():
            server = await asyncio.start_server(
                lambda r, w, raw=raw: _answer(raw, r, w), "127.0.0.1", 0
            )
            servers.append(server)
            urls[name] = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/{name}"
        yield urls
    finally:
        for server in servers:
            server.close()


async def test_hostile_receivers_never_hold_up_the_others_nor_shutdown(
    database_url: str,
    dba: Conn,
    pool: asyncpg.Pool,
    receiver: Receiver,
    daemons: list[Daemon],
    tmp_path: Path,
) -> None:
    store = SubscriptionStore(pool, allow_private_targets=True)
    async with hostile_servers() as urls:
        hostile = {(await store.create(url)).id: name for name, url in urls.items()}
        await store.create(receiver.url("/healthy"))
        daemon = start(daemons, database_url, tmp_path, NOTIFIER_RETRY_AFTER_MAX_SECONDS="1")
        account = dba.execute("INSERT INTO accounts (currency) VALUES ('USD') RETURNING id")
        account_id = account.fetchone()[0]  # type: ignore[index]
        for round_ in range(1, ROUNDS + 1):
            dba.execute(
                "INSERT INTO transactions (account_id, kind, amount) "
                "SELECT %s, 'top_up', n FROM generate_series(1, 20) n",
                [account_id],
            )
            await wait_until(
                lambda round_=round_: len(receiver.by_path()["/healthy"]) >= 20 * round_,
                what=f"round {round_} at the healthy receiver",
            )

        def attempts_by_subscription() -> dict[int, int]:
            # Events with an attempt recorded: in the attempt log of their delivery (a
            # failed first attempt and its retries), or as a success of their batch.
            rows = dba.execute(
                "SELECT subscription_id, count(DISTINCT event_id) FROM ("
                "  SELECT d.subscription_id, d.event_id FROM notifier.deliveries d"
                "    JOIN notifier.delivery_attempts a ON a.delivery_id = d.id"
                "  UNION ALL"
                "  SELECT b.subscription_id, o.event_id FROM notifier.batches b"
                "   CROSS JOIN LATERAL unnest(b.event_ids, b.outcomes) AS o (event_id, outcome)"
                "   WHERE o.outcome IS NOT NULL"
                ") AS attempted GROUP BY subscription_id"
            ).fetchall()
            return {int(str(sub)): int(str(n)) for sub, n in rows}

        # Every hostile delivery's first attempt is recorded, whatever came back.
        await wait_until(
            lambda: all(attempts_by_subscription().get(sub, 0) >= 20 * ROUNDS for sub in hostile),
            seconds=30,
            what="a recorded attempt for every delivery of every hostile subscription",
        )
        assert await daemon.terminate(seconds=15) == 0

    statuses = dict(
        dba.execute(
            "SELECT s.url, array_agg(DISTINCT d.status) FROM notifier.delivery_states d "
            "JOIN notifier.subscriptions s ON s.id = d.subscription_id GROUP BY s.url"
        ).fetchall()
    )
    assert statuses[urls["nul-body-200"]] == ["succeeded"]
    assert statuses[urls["no-reason-phrase"]] == ["succeeded"]
    assert statuses[receiver.url("/healthy")] == ["succeeded"]
    snippet = dba.execute(
        "SELECT a.detail FROM notifier.delivery_attempts a "
        "JOIN notifier.deliveries d ON d.id = a.delivery_id "
        "JOIN notifier.subscriptions s ON s.id = d.subscription_id "
        "WHERE s.url = %s LIMIT 1",
        [urls["nul-and-invalid-utf8-500"]],
    ).fetchone()
    assert snippet is not None
    assert "\x00" not in str(snippet[0])
    assert "a" in str(snippet[0])  # what could be kept of the body was kept
    crashed = [line for line in daemon.logs() if line.get("event") == "attempt_crashed"]
    assert crashed == []  # every hostile answer was classified, none was a surprise


async def test_a_settlement_the_database_refuses_holds_up_nothing(
    dba: Conn, pool: asyncpg.Pool, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Should any receiver text ever reach the settle batch unsanitised, the database's
    refusal of it costs that one attempt its text, never the batch its outcomes."""
    monkeypatch.setattr(delivery, "snippet_text", lambda raw: raw.decode("utf-8", "replace"))
    store = SubscriptionStore(pool, allow_private_targets=True)
    async with hostile_servers() as urls:
        poisoned = await store.create(urls["nul-body-200"])
        healthy = await store.create(receiver.url("/healthy"))
        account = dba.execute("INSERT INTO accounts (currency) VALUES ('USD') RETURNING id")
        dba.execute(
            "INSERT INTO transactions (account_id, kind, amount) "
            "SELECT %s, 'top_up', n FROM generate_series(1, 10) n",
            [account.fetchone()[0]],  # type: ignore[index]
        )
        outbox = Outbox(pool, lease_seconds=30)
        sink = WebhookSink(SinkOptions(timeout_seconds=2, max_connections=8, allow_private=True))
        try:
            dispatcher = Dispatcher(
                outbox,
                sink,
                RetryPolicy((1.0,), retry_after_max=1),
                max_in_flight=8,
                max_in_flight_per_subscription=8,
                held_per_subscription=100,
            )
            with structlog.testing.capture_logs() as logs:
                settler = asyncio.create_task(dispatcher.run_settler())
                claim = await outbox.claim(events=100, due=100, room={}, default_room=100)
                assert len(claim.claimed) == 20
                dispatcher.dispatch(claim.claimed)
                await wait_until(lambda: dispatcher.busiest() == 0, what="every outcome settled")
                await dispatcher.shutdown(1, settler)
        finally:
            await sink.close()

    # First attempts, one batch per subscription: every success is recorded in its batch.
    batches = {
        sub: batch
        for sub, batch in dba.execute("SELECT subscription_id, id FROM notifier.batches").fetchall()
    }
    assert batches.keys() == {healthy.id, poisoned.id}
    rows = dba.execute(
        "SELECT subscription_id, batch_id, status, last_outcome FROM notifier.delivery_states"
    ).fetchall()
    assert sorted(rows) == sorted(
        [(healthy.id, batches[healthy.id], "succeeded", "http_204")] * 10
        + [(poisoned.id, batches[poisoned.id], "succeeded", "http_200")] * 10
    )
    # The database refused the poisoned batch as it was, and that batch alone: it was
    # recorded without its text; the healthy one went through as it was.
    refused = [line for line in logs if line["event"] == "settle_refused"]
    assert refused
    assert [line["batch_id"] for line in refused if "batch_id" in line] == [batches[poisoned.id]]
