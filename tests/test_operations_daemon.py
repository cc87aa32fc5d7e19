"""Operating a running daemon: recovery after an outage, 410 then re-enable, endpoint
health, stall detection and the SSRF guard at delivery time. Real `notifier run`
processes, real receivers, the API over real HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from api.app import create_app
from notifier.devtools.daemon_process import wait_until
from notifier.devtools.receiver import Receiver, always
from notifier.settings import Settings
from notifier.subscriptions.store import SubscriptionStore
from tests.support import Daemon, start, statuses, write_events

pytestmark = pytest.mark.slow

TOKEN = "ops-token"
Client = TestClient[Any, Any]


@pytest.fixture
async def api(database_url: str) -> AsyncIterator[Client]:
    settings = Settings(
        database_url=database_url, api_token=SecretStr(TOKEN), allow_private_targets=True
    )
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with TestClient(TestServer(create_app(settings)), headers=headers) as client:
        yield client


async def _since_start(pool: asyncpg.Pool) -> str:
    moment = await pool.fetchval("SELECT min(created_at) FROM notifier.events")
    return str(moment.isoformat())


async def test_receiver_down_then_up_one_recover_delivers_each_missed_event_once(
    database_url: str,
    pool: asyncpg.Pool,
    receiver: Receiver,
    daemons: list[Daemon],
    tmp_path: Path,
    api: Client,
) -> None:
    down = True
    receiver.behaviours["/down"] = lambda _n: 500 if down else 204
    sub = await SubscriptionStore(pool, allow_private_targets=True).create(receiver.url("/down"))
    start(daemons, database_url, tmp_path)
    await write_events(database_url, 30, chunk=10, pause=0)
    await wait_until(lambda: _all(pool, "dead", 30), seconds=30, what="every delivery to be dead")
    assert all(n == 4 for n in receiver.ok_event_ids("/down").values())  # 4 attempts each

    down = False
    before = len(receiver.received)
    response = await api.post(
        f"/subscriptions/{sub.id}/recover", json={"since": await _since_start(pool)}
    )
    assert response.status == 202, await response.text()
    assert (await response.json())["reset"] == 30
    await wait_until(lambda: _all(pool, "succeeded", 30), what="every delivery to succeed")
    await asyncio.sleep(0.5)  # nothing more arrives
    after = receiver.received[before:]
    ids = [r.headers["webhook-id"] for r in after]
    assert len(ids) == len(set(ids)) == 30
    assert set(ids) == {str(r["uid"]) for r in await pool.fetch("SELECT uid FROM notifier.events")}


async def _all(pool: asyncpg.Pool, status: str, count: int) -> bool:
    return await statuses(pool) == {status: count}


async def test_gone_subscription_gets_nothing_until_enabled_then_recovers(
    database_url: str,
    pool: asyncpg.Pool,
    receiver: Receiver,
    daemons: list[Daemon],
    tmp_path: Path,
    api: Client,
) -> None:
    gone = True
    receiver.behaviours["/gone"] = lambda _n: 410 if gone else 204
    sub = await SubscriptionStore(pool, allow_private_targets=True).create(receiver.url("/gone"))
    start(daemons, database_url, tmp_path)
    await write_events(database_url, 3, chunk=3, pause=0)
    await wait_until(lambda: _enabled_is(pool, sub.id, False), what="the 410 to disable it")
    shown = await (await api.get(f"/subscriptions/{sub.id}")).json()
    assert shown["disabled_reason"] == "the endpoint answered 410 Gone"
    answered_410 = len(receiver.received)

    await write_events(database_url, 5, chunk=5, pause=0)  # captured while disabled
    await asyncio.sleep(1.0)
    assert len(receiver.received) == answered_410  # nothing is sent while disabled

    gone = False
    response = await api.patch(f"/subscriptions/{sub.id}", json={"enabled": True})
    assert (await response.json())["enabled"] is True
    response = await api.post(
        f"/subscriptions/{sub.id}/recover", json={"since": await _since_start(pool)}
    )
    body = await response.json()
    assert body["created"] == 5, body  # the events missed while disabled
    await wait_until(lambda: _all(pool, "succeeded", 8), what="all 8 events delivered")
    delivered = {r.headers["webhook-id"] for r in receiver.received[answered_410:]}
    assert delivered == {str(r["uid"]) for r in await pool.fetch("SELECT uid FROM notifier.events")}


async def _enabled_is(pool: asyncpg.Pool, subscription_id: int, enabled: bool) -> bool:
    value = await pool.fetchval(
        "SELECT enabled FROM notifier.subscriptions WHERE id = $1", subscription_id
    )
    return bool(value) is enabled


async def test_an_endpoint_failing_too_long_is_disabled_with_a_reason(
    database_url: str,
    pool: asyncpg.Pool,
    receiver: Receiver,
    daemons: list[Daemon],
    tmp_path: Path,
) -> None:
    receiver.behaviours["/failing"] = always(500)
    store = SubscriptionStore(pool, allow_private_targets=True)
    failing = await store.create(receiver.url("/failing"))
    healthy = await store.create(receiver.url("/healthy"))
    daemon = start(
        daemons,
        database_url,
        tmp_path,
        NOTIFIER_RETRY_SCHEDULE="0.3," * 20 + "0.3",
        NOTIFIER_DISABLE_AFTER_FAILING="2s",
        NOTIFIER_HEALTH_CHECK_INTERVAL_SECONDS="0.2",
    )
    await write_events(database_url, 2, chunk=2, pause=0)
    await wait_until(lambda: _enabled_is(pool, failing.id, False), what="it to be disabled")
    sub = await store.get(failing.id)
    assert sub is not None
    assert sub.disabled_reason is not None
    assert sub.disabled_reason.startswith("failing with no success since ")
    assert (await store.get(healthy.id)).enabled  # type: ignore[union-attr]
    metric = 'notifier_subscriptions_disabled_total{reason="failing"}'
    assert await daemon.metric(metric) == 1.0
    assert await daemon.terminate() == 0
    warnings = [line for line in daemon.logs() if line.get("event") == "subscription_disabled"]
    assert [(w["level"], w["subscription_id"]) for w in warnings] == [("warning", failing.id)]


async def test_a_stuck_pipeline_makes_the_daemon_not_ready(
    database_url: str,
    pool: asyncpg.Pool,
    receiver: Receiver,
    daemons: list[Daemon],
    tmp_path: Path,
) -> None:
    receiver.behaviours["/stuck"] = always(None)  # hangs
    await SubscriptionStore(pool, allow_private_targets=True).create(
        receiver.url("/stuck"), max_in_flight=1
    )
    daemon = start(
        daemons,
        database_url,
        tmp_path,
        NOTIFIER_BATCH_SIZE="1",
        NOTIFIER_REQUEST_TIMEOUT_SECONDS="4",
        NOTIFIER_STALL_THRESHOLD_SECONDS="1",
        NOTIFIER_RETRY_SCHEDULE="0",
    )
    readyz = f"http://127.0.0.1:{daemon.port}/readyz"
    async with aiohttp.ClientSession() as http:
        await wait_until(lambda: _status(http, readyz, 200), what="ready at first")
        await write_events(database_url, 6, chunk=6, pause=0)

        # Waited for by its reason: on a busy machine a slow readiness ping can also
        # answer 503 for a moment, with "database": false.
        await wait_until(lambda: _stalled(http, readyz), what="a stall to be reported")
        assert await daemon.metric("notifier_stalled") == 1.0
        age = await daemon.metric("notifier_oldest_deliverable_age_seconds")
        assert age is not None
        assert age > 1
        receiver.behaviours["/stuck"] = always(204)
        await wait_until(lambda: _status(http, readyz, 200), seconds=30, what="ready again")


async def _stalled(http: aiohttp.ClientSession, url: str) -> bool:
    try:
        async with http.get(url) as response:
            body = await response.json()
            return response.status == 503 and body["checks"]["not_stalled"] is False
    except aiohttp.ClientError:
        return False


async def _status(http: aiohttp.ClientSession, url: str, status: int) -> bool:
    try:
        async with http.get(url) as response:
            return response.status == status
    except aiohttp.ClientError:
        return False


async def test_the_daemon_refuses_private_addresses_at_delivery_time(
    database_url: str,
    pool: asyncpg.Pool,
    receiver: Receiver,
    daemons: list[Daemon],
    tmp_path: Path,
) -> None:
    # Created while private targets were allowed (or DNS pointed elsewhere then).
    store = SubscriptionStore(pool, allow_private_targets=True)
    await store.create(receiver.url("/literal"))
    await store.create(f"http://localhost:{receiver.port}/name")
    daemon = start(daemons, database_url, tmp_path, NOTIFIER_ALLOW_PRIVATE_TARGETS="false")
    await write_events(database_url, 2, chunk=2, pause=0)
    await wait_until(lambda: _all(pool, "dead", 4), what="every delivery refused to death")
    assert receiver.received == []
    errors = await pool.fetch("SELECT DISTINCT error FROM notifier.delivery_attempts")
    assert {e["error"].split(":")[0] for e in errors} == {"refused_target"}
    assert any("169.254" in e["error"] or "127.0.0.1" in e["error"] for e in errors)
    assert await daemon.terminate() == 0
    failed = [
        line for line in daemon.logs() if line.get("event") in ("delivery_failed", "delivery_dead")
    ]
    assert len(failed) == await pool.fetchval("SELECT count(*) FROM notifier.delivery_attempts")
