"""Per-key ordered delivery under real faults: two daemons (one killed with kill -9), a
receiver that fails on purpose, a key held back by a failing head, a head that dies."""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from notifier.devtools.daemon_process import wait_until
from notifier.devtools.receiver import Received, Receiver
from notifier.engine.store import Outbox, Settlement
from notifier.ops.operator import Operations
from notifier.subscriptions.store import SubscriptionStore
from tests.support import (
    Daemon,
    arrivals_by_account,
    ledger_order,
    listening,
    open_accounts,
    settled,
    start,
    statuses,
    what_holds_back,
)

pytestmark = pytest.mark.slow

ACCOUNTS = 50
WRITERS = 8
# Rows of the kill -9 test. The suite runs 4,000, beside other tests on two cores;
# NOTIFIER_TEST_ORDERED_ROWS=10000 runs the 10,000 the contract speaks of.
ROWS = int(os.environ.get("NOTIFIER_TEST_ORDERED_ROWS", "4000"))
# How long one account's receiver fails in the held-back test (the suite keeps it short;
# NOTIFIER_TEST_HOLD_SECONDS=60 runs it for the minute the contract speaks of).
HOLD_SECONDS = float(os.environ.get("NOTIFIER_TEST_HOLD_SECONDS", "15"))
FAST_RETRIES = ",".join(["0.05"] * 20)


async def _writer(database_url: str, accounts: list[int], rows: int, seed: int) -> None:
    """``rows`` single-row commits, top-ups and debits, on random accounts."""
    chance = random.Random(seed)
    conn = await asyncpg.connect(database_url)
    try:
        for _ in range(rows):
            kind = chance.choice(["top_up", "debit"])
            await conn.execute(
                "INSERT INTO transactions (account_id, kind, amount) VALUES ($1, $2, $3)",
                chance.choice(accounts),
                kind,
                chance.randint(1, 100),
            )
    finally:
        await conn.close()


@pytest.mark.timeout(300)
async def test_each_account_in_ledger_order_through_failures_and_a_kill_9(
    database_url: str, pool: asyncpg.Pool, receiver: Receiver, tmp_path: Path
) -> None:
    chance = random.Random(15)
    receiver.behaviours["/ordered"] = lambda _n: 500 if chance.random() < 0.2 else 204
    receiver.delays["/ordered"] = lambda: chance.uniform(0, 0.05)
    accounts = await open_accounts(pool, ACCOUNTS)
    subscription = await SubscriptionStore(pool, allow_private_targets=True).create(
        receiver.url("/ordered"),
        event_types=["transaction.created"],
        ordering="key",
        max_in_flight=64,
    )
    assert subscription.ordering_key == "account_id"
    await pool.execute(
        "INSERT INTO transactions (account_id, kind, amount) SELECT id, 'top_up', 1000000 "
        "FROM unnest($1::bigint[]) AS id",
        accounts,
    )
    daemons: list[Daemon] = []
    settings = {"NOTIFIER_RETRY_SCHEDULE": FAST_RETRIES}
    try:
        start(daemons, database_url, tmp_path, **settings)
        victim = start(daemons, database_url, tmp_path, **settings)
        await wait_until(lambda: listening(pool), what="the daemons to listen")
        writers = [
            asyncio.create_task(_writer(database_url, accounts, ROWS // WRITERS, seed))
            for seed in range(WRITERS)
        ]
        total = ROWS + ACCOUNTS
        await wait_until(
            lambda: sum(1 for s in receiver.statuses["/ordered"] if s < 300) >= total // 2,
            seconds=60,
            what="half the events accepted",
        )
        victim.process.send_signal(signal.SIGKILL)
        victim.process.wait()
        start(daemons, database_url, tmp_path, **settings)
        await asyncio.gather(*writers)
        try:
            await wait_until(lambda: settled(pool, total), seconds=180, what="every delivery")
        except TimeoutError:
            print(await what_holds_back(pool))
            raise
    finally:
        for daemon in daemons:
            daemon.ensure_stopped()

    assert await statuses(pool) == {"succeeded": total}
    ledger = await ledger_order(pool, accounts)
    every, accepted = arrivals_by_account(receiver, "/ordered")
    assert accepted == ledger  # each account's events, first accepted in ledger order
    for account, arrived in every.items():
        # An older event never arrives after a newer one: a copy is only ever a copy of
        # the latest event of its account (a retry, or the head in flight at the kill).
        assert arrived == sorted(arrived), f"account {account} out of order"
    answers = receiver.statuses["/ordered"]
    accepted_ids = [
        r.event["data"]["id"]
        for r, status in zip(receiver.by_path()["/ordered"], answers, strict=True)
        if status < 300
    ]
    twice = len(accepted_ids) - len(set(accepted_ids))
    print(
        f"\nordered, 20 % failures, kill -9: {total} events, {len(answers)} requests, "
        f"{answers.count(500)} answered 500, {twice} accepted twice"
    )


async def test_a_failing_head_holds_back_only_its_own_key(
    database_url: str, pool: asyncpg.Pool, receiver: Receiver, daemons: list[Daemon], tmp_path: Path
) -> None:
    accounts = await open_accounts(pool, ACCOUNTS)
    held = accounts[0]
    until = asyncio.get_running_loop().time() + 1e9  # set when the stream starts

    def judge(request: Received) -> int:
        failing = asyncio.get_running_loop().time() < until
        return 500 if failing and request.event["data"]["account_id"] == held else 204

    receiver.judges["/ordered"] = judge
    subscription = await SubscriptionStore(pool, allow_private_targets=True).create(
        receiver.url("/ordered"), event_types=["transaction.*"], ordering="key", max_in_flight=64
    )
    start(daemons, database_url, tmp_path, NOTIFIER_RETRY_SCHEDULE=",".join(["0.5"] * 200))
    await wait_until(lambda: listening(pool), what="the daemon to listen")
    loop = asyncio.get_running_loop()
    began = loop.time()
    until = began + HOLD_SECONDS
    stats, held_waiting = None, 0
    conn = await asyncpg.connect(database_url)
    try:
        while loop.time() < until:
            for account in accounts:
                await conn.execute(
                    "INSERT INTO transactions (account_id, kind, amount) VALUES ($1, 'top_up', 1)",
                    account,
                )
            await asyncio.sleep(0.2)
            if stats is None and loop.time() > began + HOLD_SECONDS / 2:
                stats = await Operations(pool).stats(subscription.id)
                held_waiting = await pool.fetchval(
                    "SELECT waiting FROM notifier.ordering_keys WHERE key = $1", str(held)
                )
    finally:
        await conn.close()
    rows = await pool.fetchval("SELECT count(*) FROM transactions")
    await wait_until(lambda: settled(pool, rows), seconds=60, what="the held key to catch up")

    assert stats is not None
    # The failing key, and maybe a healthy one caught with an event behind its head.
    assert stats["keys_held_back"] >= 1
    assert stats["waiting"] >= held_waiting > 0
    latencies: list[float] = []
    for request, status in zip(
        receiver.by_path()["/ordered"], receiver.statuses["/ordered"], strict=True
    ):
        event = request.event
        if event["data"]["account_id"] != held and status < 300:
            latencies.append(request.at - datetime.fromisoformat(event["timestamp"]).timestamp())
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99)]
    print(
        f"\none key failing {HOLD_SECONDS:g} s: the other {ACCOUNTS - 1} keys, "
        f"{len(latencies)} events, p50 {latencies[len(latencies) // 2] * 1000:.1f} ms, "
        f"p99 {p99 * 1000:.1f} ms, max {latencies[-1] * 1000:.1f} ms"
    )
    # Held back with it, they would have waited out its whole hold; they did not (measured
    # alone: p99 20-30 ms; beside the rest of the suite, up to 2 s on two cores).
    assert p99 < HOLD_SECONDS / 3
    _every, accepted = arrivals_by_account(receiver, "/ordered")
    assert accepted == await ledger_order(pool, accounts)


async def test_a_dead_head_lets_its_key_move_on_and_recover_sends_it(
    database_url: str, pool: asyncpg.Pool, receiver: Receiver, daemons: list[Daemon], tmp_path: Path
) -> None:
    (account,) = await open_accounts(pool, 1)
    first = await pool.fetchval(
        "INSERT INTO transactions (account_id, kind, amount) VALUES ($1, 'top_up', 7) RETURNING id",
        account,
    )
    doomed = {"dead": True}
    receiver.judges["/ordered"] = lambda r: (
        500 if doomed["dead"] and r.event["data"]["amount"] == 13 else 204
    )
    subscription = await SubscriptionStore(pool, allow_private_targets=True).create(
        receiver.url("/ordered"), event_types=["transaction.*"], ordering="key"
    )
    start(daemons, database_url, tmp_path, NOTIFIER_RETRY_SCHEDULE="0.1,0.1")
    await wait_until(lambda: listening(pool), what="the daemon to listen")
    async with pool.acquire() as conn:
        for amount in (11, 13, 17, 19):
            await conn.execute(
                "INSERT INTO transactions (account_id, kind, amount) VALUES ($1, 'top_up', $2)",
                account,
                amount,
            )
    await wait_until(lambda: settled(pool, 4), what="the key to move past its dead head")
    assert await statuses(pool) == {"succeeded": 3, "dead": 1}
    accepted = [r.event["data"]["amount"] for r in receiver.by_path()["/ordered"]]
    assert accepted == [11, 13, 13, 13, 17, 19]  # 13 tried three times, then the key moved on

    operations = Operations(pool)
    (dead,) = await operations.deliveries(status="dead", subscription_id=subscription.id)
    assert dead["last_outcome"] == "http_500"
    doomed["dead"] = False
    scheduled = await operations.recover(subscription.id, datetime.now(UTC) - timedelta(hours=1))
    assert scheduled.as_dict()["scheduled"] == 1
    await wait_until(lambda: len(receiver.received) == 7, what="the recovered event")
    assert receiver.by_path()["/ordered"][-1].event["data"]["amount"] == 13

    async def all_succeeded() -> bool:
        return await statuses(pool) == {"succeeded": 4}

    await wait_until(all_succeeded, what="the recovered delivery recorded")
    assert first not in {r.event["data"]["id"] for r in receiver.received}


async def test_replay_to_an_ordered_subscription_keeps_each_key_in_order(
    database_url: str, pool: asyncpg.Pool, receiver: Receiver, daemons: list[Daemon], tmp_path: Path
) -> None:
    accounts = await open_accounts(pool, 5)
    for _ in range(20):
        await pool.execute(
            "INSERT INTO transactions (account_id, kind, amount) "
            "SELECT id, 'top_up', 1 FROM unnest($1::bigint[]) AS id",
            accounts,
        )
    chance = random.Random(16)
    receiver.behaviours["/replayed"] = lambda _n: 500 if chance.random() < 0.3 else 204
    subscription = await SubscriptionStore(pool, allow_private_targets=True).create(
        receiver.url("/replayed"), event_types=["transaction.*"], ordering="key", max_in_flight=64
    )
    start(daemons, database_url, tmp_path, NOTIFIER_RETRY_SCHEDULE=FAST_RETRIES)
    scheduled = await Operations(pool).replay(
        subscription.id, datetime.now(UTC) - timedelta(hours=1), None, again=False
    )
    assert scheduled.as_dict()["scheduled"] == 100
    await wait_until(lambda: settled(pool, 100), what="the replayed events")
    _every, accepted = arrivals_by_account(receiver, "/replayed")
    assert accepted == await ledger_order(pool, accounts)


async def test_a_key_too_long_for_an_index_is_keyed_by_its_digest(
    database_url: str, pool: asyncpg.Pool, receiver: Receiver, daemons: list[Daemon], tmp_path: Path
) -> None:
    # A text key of about 10,000 random characters (no compression shrinks it): as it is,
    # its index entry would be over PostgreSQL's limit and fail every claim.
    await pool.execute("CREATE TABLE notes (id bigint PRIMARY KEY, author text)")
    await pool.execute("SELECT notifier.watch('notes', 'note')")
    await SubscriptionStore(pool, allow_private_targets=True).create(
        receiver.url("/notes"), event_types=["note.*"], ordering="key", ordering_key="author"
    )
    start(daemons, database_url, tmp_path)
    long_author = secrets.token_urlsafe(7500)
    await pool.execute("INSERT INTO notes VALUES (1, $1), (2, 'ada'), (3, $1)", long_author)
    await wait_until(lambda: settled(pool, 3), what="the three notes")
    assert await statuses(pool) == {"succeeded": 3}
    keys = {
        row["ordering_key"]
        for row in await pool.fetch("SELECT ordering_key FROM notifier.deliveries")
    }
    assert "ada" in keys
    assert len(keys) == 2
    assert max(len(key) for key in keys) < 100
    arrived = [r.event["data"]["id"] for r in receiver.by_path()["/notes"]]
    assert [n for n in arrived if n != 2] == [1, 3]


async def test_a_key_freed_while_a_claim_waits_gets_its_next_waiting_delivery_as_head(
    database_url: str, pool: asyncpg.Pool
) -> None:
    """A claim reads the waiting deliveries as they are when it gets to them, not as its
    snapshot saw them: a key freed, promoted, sent and freed again by another daemon
    meanwhile gets its next waiting delivery as head, never the one already sent (which
    would hold the key for ever)."""
    held, other = await open_accounts(pool, 2)
    subscription = await SubscriptionStore(pool, allow_private_targets=True).create(
        "http://127.0.0.1:9/", event_types=["transaction.*"], ordering="key"
    )
    await pool.execute("UPDATE notifier.subscriptions SET created_at = now() - interval '1 minute'")
    for account in (held, held, other):
        await pool.execute(
            "INSERT INTO transactions (account_id, kind, amount) VALUES ($1, 'top_up', 1)", account
        )
    pools = [await asyncpg.create_pool(database_url, min_size=1, max_size=1) for _ in range(2)]
    first, second = (Outbox(p, 30) for p in pools)
    blocker = await asyncpg.connect(database_url)
    try:
        # Fanned out with no room: each key's first event is its head, the rest wait.
        await first.claim(events=10, due=0, room={subscription.id: 0}, default_room=0)
        # The held key's head finished: it is freed with its two events waiting.
        await pool.execute(
            "UPDATE notifier.deliveries SET next_attempt_at = 'infinity' WHERE ordering_key = $1",
            str(held),
        )
        await pool.execute(
            "UPDATE notifier.ordering_keys SET head = NULL, waiting = 2 WHERE key = $1", str(held)
        )
        waiting = await pool.fetch(
            "SELECT id, event_id FROM notifier.deliveries WHERE ordering_key = $1 ORDER BY event_id",
            str(held),
        )
        # A claim that fans out an event of the other key waits on that key's row...
        await pool.execute(
            "INSERT INTO transactions (account_id, kind, amount) VALUES ($1, 'top_up', 1)", other
        )
        await blocker.execute("BEGIN")
        await blocker.execute(
            "SELECT 1 FROM notifier.ordering_keys WHERE key = $1 FOR UPDATE", str(other)
        )
        late = asyncio.create_task(second.claim(events=10, due=10, room={}, default_room=10))
        await wait_until(
            lambda: pool.fetchval(
                "SELECT count(*) = 1 FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock' AND query LIKE '%One round trip per round%'"
            ),
            what="the second claim to wait",
        )
        # ...while another daemon promotes the held key's first waiting event, sends it,
        # and records it: the key is free again, with one event waiting.
        claimed = await first.claim(events=0, due=10, room={}, default_room=10)
        (promoted,) = [c for c in claimed.claimed if c.delivery_id == waiting[0]["id"]]
        await first.settle(
            [
                Settlement(
                    promoted.delivery_id, None, None, promoted.event_id,
                    promoted.subscription_id, 1, "succeeded", 0.0, "http_204", None,
                    datetime.now(UTC), 1.0, "",
                )
            ]
        )  # fmt: skip
        await blocker.execute("ROLLBACK")
        result = await late
    finally:
        await blocker.close()
        for p in pools:
            await p.close()
    assert waiting[1]["id"] in {c.delivery_id for c in result.claimed}
    key = await pool.fetchrow(
        "SELECT head, waiting FROM notifier.ordering_keys WHERE key = $1", str(held)
    )
    assert dict(key) == {"head": waiting[1]["event_id"], "waiting": 0}
