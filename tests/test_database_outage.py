"""The database going away: terminated backends, a stopped server, a crash, a late start.

These tests run a PostgreSQL server of their own (initdb'd into a temporary directory,
on a free port) so that they can stop and crash it under the product without touching
the server the rest of the suite uses. The daemon and the API are real processes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from notifier.db.errors import RETRYABLE_ERRORS
from notifier.db.migrate import migrate
from notifier.devtools.daemon_process import wait_until
from notifier.devtools.embedded_pg import EmbeddedPostgres, ShutdownMode
from notifier.devtools.receiver import Receiver
from notifier.subscriptions.store import SubscriptionStore
from tests.pg import embedded_server
from tests.support import Daemon

pytestmark = pytest.mark.slow
TOKEN = "outage-test-token"
WRITERS = 4


@pytest.fixture
def server() -> Iterator[EmbeddedPostgres]:
    """A PostgreSQL server of this test's own, not yet started."""
    with embedded_server() as pg:
        yield pg


async def _prepare(pg: EmbeddedPostgres, receiver: Receiver) -> int:
    """Migrate, subscribe the receiver, open one account; return its id."""
    conn = await asyncpg.connect(pg.url())
    try:
        await migrate(conn)
        await SubscriptionStore(conn, allow_private_targets=True).create(receiver.url("/all"))
        return int(
            await conn.fetchval("INSERT INTO accounts (currency) VALUES ('USD') RETURNING id")
        )
    finally:
        await conn.close()


async def _write(url: str, account_id: int, stop: asyncio.Event) -> None:
    """Insert top-ups until stopped, reconnecting whenever the database goes away."""
    conn: asyncpg.Connection | None = None
    while not stop.is_set():
        try:
            if conn is None or conn.is_closed():
                conn = await asyncpg.connect(url, timeout=2)
            await conn.execute(
                "INSERT INTO transactions (account_id, kind, amount) VALUES ($1, 'top_up', 1)",
                account_id,
            )
            await asyncio.sleep(0.02)
        except RETRYABLE_ERRORS:
            if conn is not None:
                conn.terminate()
            conn = None
            await asyncio.sleep(0.05)
    if conn is not None:
        await conn.close()


@pytest.fixture
async def writers_stop() -> AsyncIterator[asyncio.Event]:
    stop = asyncio.Event()
    yield stop
    stop.set()


async def _status(url: str) -> tuple[int, str, str]:
    """(status, content type, body) of a GET, or (0, '', reason) when the request failed."""
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(url, headers={"Authorization": f"Bearer {TOKEN}"}) as response,
        ):
            return response.status, response.content_type, await response.text()
    except aiohttp.ClientError as exc:
        return 0, "", repr(exc)


async def _alive(process: Daemon) -> bool:
    return (await _status(f"http://127.0.0.1:{process.port}/healthz"))[0] == 200


async def _ready(process: Daemon) -> bool:
    return (await _status(f"http://127.0.0.1:{process.port}/readyz"))[0] == 200


async def _all_delivered(pg: EmbeddedPostgres, receiver: Receiver) -> bool:
    conn = await asyncpg.connect(pg.url())
    try:
        uids = {str(u) for u in await conn.fetchval("SELECT array_agg(uid) FROM notifier.events")}
    finally:
        await conn.close()
    return uids <= set(receiver.ok_event_ids("/all"))


async def _attempts_logged_once(pg: EmbeddedPostgres) -> None:
    """Each attempt is logged once, and each success has its attempt logged: in the
    attempt log of its delivery, or (a first attempt) in its place in its batch."""
    conn = await asyncpg.connect(pg.url())
    try:
        repeated = await conn.fetch(
            "SELECT delivery_id, attempt, count(*) FROM notifier.delivery_attempts "
            "GROUP BY 1, 2 HAVING count(*) > 1"
        )
        # An event's delivery is recorded in one place: a row of its own, or one batch.
        recorded_twice = await conn.fetch(
            "SELECT event_id, subscription_id, count(*) FROM notifier.delivery_states "
            "GROUP BY 1, 2 HAVING count(*) > 1"
        )
        unlogged = await conn.fetchval(
            "SELECT count(*) FROM notifier.deliveries d WHERE d.status = 'succeeded' "
            "AND NOT EXISTS (SELECT 1 FROM notifier.delivery_attempts a "
            "WHERE a.delivery_id = d.id AND a.attempt = d.attempts)"
        )
        unlogged_in_batches = await conn.fetchval(
            "SELECT count(*) FROM notifier.batches b "
            "CROSS JOIN LATERAL unnest(b.outcomes, b.sent_at, b.durations_ms) "
            "AS o (outcome, sent_at, duration_ms) "
            "WHERE b.finished_at IS NOT NULL AND o.outcome IS NOT NULL "
            "AND (o.sent_at IS NULL OR o.duration_ms IS NULL)"
        )
        succeeded_in_batches = await conn.fetchval(
            "SELECT count(*) FROM notifier.delivery_states "
            "WHERE batch_id IS NOT NULL AND status = 'succeeded'"
        )
    finally:
        await conn.close()
    assert repeated == []
    assert recorded_twice == []
    assert unlogged == 0
    assert unlogged_in_batches == 0
    assert succeeded_in_batches > 0  # first attempts are recorded per batch


def _start(pg: EmbeddedPostgres, tmp_path: Path, command: str, started: list[Daemon]) -> Daemon:
    process = Daemon(
        pg.url(), tmp_path / f"{command}-{len(started)}.log", command, NOTIFIER_API_TOKEN=TOKEN
    )
    started.append(process)
    return process


@pytest.fixture
def processes() -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for process in started:
        process.ensure_stopped()


def _duplicates(receiver: Receiver) -> int:
    return sum(n - 1 for n in receiver.ok_event_ids("/all").values())


async def test_every_backend_terminated_twice_while_writers_insert(
    server: EmbeddedPostgres,
    receiver: Receiver,
    processes: list[Daemon],
    writers_stop: asyncio.Event,
    tmp_path: Path,
) -> None:
    server.start()
    account_id = await _prepare(server, receiver)
    daemon = _start(server, tmp_path, "run", processes)
    await wait_until(lambda: _ready(daemon), what="the daemon ready")
    writers = [
        asyncio.create_task(_write(server.url(), account_id, writers_stop)) for _ in range(WRITERS)
    ]
    admin = await asyncpg.connect(server.url())
    try:
        for _ in range(2):
            await asyncio.sleep(1.0)
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        await asyncio.sleep(1.0)
    finally:
        await admin.close()
    writers_stop.set()
    await asyncio.gather(*writers)

    await wait_until(lambda: _all_delivered(server, receiver), seconds=30, what="every event")
    await wait_until(lambda: _ready(daemon), seconds=10, what="the daemon ready again")
    assert daemon.process.poll() is None
    await _attempts_logged_once(server)
    print(f"\nterminated backends twice: {_duplicates(receiver)} duplicate deliveries")
    assert await daemon.terminate() == 0


@pytest.mark.parametrize("mode", ["fast", "immediate"])
async def test_server_stopped_for_ten_seconds(
    server: EmbeddedPostgres,
    receiver: Receiver,
    processes: list[Daemon],
    writers_stop: asyncio.Event,
    tmp_path: Path,
    mode: ShutdownMode,
) -> None:
    server.start()
    account_id = await _prepare(server, receiver)
    daemon = _start(server, tmp_path, "run", processes)
    api = _start(server, tmp_path, "api", processes)
    await wait_until(lambda: _ready(daemon), what="the daemon ready")
    await wait_until(lambda: _ready(api), what="the API ready")
    writers = [
        asyncio.create_task(_write(server.url(), account_id, writers_stop)) for _ in range(WRITERS)
    ]
    await asyncio.sleep(1.5)

    receiver.delays["/all"] = 0.3  # attempts are in flight when the server goes
    await asyncio.sleep(0.1)
    server.stop(mode)
    down_until = time.monotonic() + 10
    answers: list[tuple[int, str, str]] = []
    daemon_ready_while_down = []
    while time.monotonic() < down_until:
        answers.append(await _status(f"http://127.0.0.1:{api.port}/accounts/{account_id}"))
        daemon_ready_while_down.append(await _ready(daemon))
        await asyncio.sleep(0.5)
    receiver.delays["/all"] = 0
    server.start()
    up_at = time.monotonic()
    arrived_before = len(receiver.received)

    await wait_until(lambda: _ready(daemon), seconds=5, what="the daemon ready after the restart")
    daemon_ready_after = time.monotonic() - up_at
    await wait_until(lambda: _ready(api), seconds=5, what="the API ready after the restart")
    await wait_until(lambda: len(receiver.received) > arrived_before, seconds=5, what="a delivery")
    first_delivery_after = time.monotonic() - up_at
    await asyncio.sleep(1.0)  # writers write after the restart too
    writers_stop.set()
    await asyncio.gather(*writers)
    await wait_until(lambda: _all_delivered(server, receiver), seconds=30, what="every event")
    await _attempts_logged_once(server)

    assert {status for status, _, _ in answers} == {503}, answers
    assert {content_type for _, content_type, _ in answers} == {"application/problem+json"}
    assert not any(daemon_ready_while_down)
    assert daemon.process.poll() is None
    assert api.process.poll() is None
    print(
        f"\nserver stopped ({mode}) for 10 s: ready {daemon_ready_after:.2f} s and first "
        f"delivery {first_delivery_after:.2f} s after it was up; "
        f"{_duplicates(receiver)} duplicate deliveries"
    )
    assert await daemon.terminate() == 0


async def test_daemon_and_api_started_before_their_database(
    server: EmbeddedPostgres,
    receiver: Receiver,
    processes: list[Daemon],
    tmp_path: Path,
) -> None:
    server.start()
    account_id = await _prepare(server, receiver)
    server.stop("fast")
    daemon = _start(server, tmp_path, "run", processes)
    api = _start(server, tmp_path, "api", processes)
    for process in (daemon, api):
        await wait_until(lambda process=process: _alive(process), what="alive")
    await asyncio.sleep(2)
    for process in (daemon, api):
        assert (await _status(f"http://127.0.0.1:{process.port}/healthz"))[0] == 200
        status, _content_type, _body = await _status(f"http://127.0.0.1:{process.port}/readyz")
        assert status == 503
        assert process.process.poll() is None
    readiness = await _status(f"http://127.0.0.1:{daemon.port}/readyz")
    assert '"database": false' in readiness[2]

    server.start()
    up_at = time.monotonic()
    await wait_until(lambda: _ready(daemon), seconds=5, what="the daemon ready")
    await wait_until(lambda: _ready(api), seconds=5, what="the API ready")
    print(f"\nstarted before the database: ready {time.monotonic() - up_at:.2f} s after it")
    conn = await asyncpg.connect(server.url())
    try:
        await conn.execute(
            "INSERT INTO transactions (account_id, kind, amount) VALUES ($1, 'top_up', 5)",
            account_id,
        )
    finally:
        await conn.close()
    await wait_until(lambda: _all_delivered(server, receiver), seconds=10, what="the event")
    assert await daemon.terminate() == 0
