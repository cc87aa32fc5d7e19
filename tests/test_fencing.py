"""An outcome applies only to the claim it answers.

A claim commits without waiting for its WAL to reach disk, so a server crash can lose the
last claims: the positions they moved are back where they were, and the ids of the
batches and deliveries they made are given out again, to other work. A daemon that held
a lost claim may still record its outcomes once the server is back. These tests leave
the database as such a crash does (the lost claim's rows gone, its position and id
sequence back), and show the late outcomes touch nothing: every event is still sent.
"""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg

from notifier.engine.store import Claimed, Outbox, Settlement
from notifier.subscriptions.store import SubscriptionStore
from tests.support import open_accounts

LEASE_SECONDS = 30.0


def _succeeded(claimed: list[Claimed]) -> list[Settlement]:
    now = datetime.now(UTC)
    return [
        Settlement(
            c.delivery_id, c.batch_id, c.batch_claimed_at, c.event_id, c.subscription_id,
            c.attempt, "succeeded", 0.0, "http_204", None, now, 1.0, "",
        )
        for c in claimed
    ]  # fmt: skip


async def _top_ups(pool: asyncpg.Pool, account_id: int, count: int) -> None:
    for _ in range(count):
        await pool.execute(
            "INSERT INTO transactions (account_id, kind, amount) VALUES ($1, 'top_up', 1)",
            account_id,
        )


async def _claim(outbox: Outbox) -> list[Claimed]:
    result = await outbox.claim(events=100, due=100, room={}, default_room=100)
    return result.claimed


async def test_a_lost_batch_claims_late_outcome_leaves_the_batch_that_took_its_id(
    pool: asyncpg.Pool,
) -> None:
    store = SubscriptionStore(pool, allow_private_targets=True)
    subscription = await store.create("http://127.0.0.1:9/hook")
    (account_id,) = await open_accounts(pool, 1)
    outbox = Outbox(pool, LEASE_SECONDS)
    before = await pool.fetchrow(
        "SELECT * FROM notifier.positions WHERE subscription_id = $1", subscription.id
    )
    await _top_ups(pool, account_id, 3)

    lost = await _claim(outbox)
    assert len(lost) == 3
    assert len({c.batch_id for c in lost}) == 1
    # What a crash leaves of it: no batch, the position as before, the id to be given again.
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("DELETE FROM notifier.batches WHERE id = $1", lost[0].batch_id)
        await conn.execute(
            "UPDATE notifier.positions SET since = $2, upto = $3, after_id = $4, last_id = $5"
            " WHERE subscription_id = $1",
            *before.values(),
        )
        await conn.execute(
            "SELECT setval(pg_get_serial_sequence('notifier.batches', 'id'), $1, false)",
            lost[0].batch_id,
        )
    await _top_ups(pool, account_id, 2)

    taken = await _claim(outbox)
    assert taken[0].batch_id == lost[0].batch_id  # the same id, now for five events
    assert {c.event_id for c in lost} < {c.event_id for c in taken}
    assert len(taken) == 5

    await outbox.settle(_succeeded(lost))
    unfinished = await pool.fetchval(
        "SELECT finished_at IS NULL FROM notifier.batches WHERE id = $1", taken[0].batch_id
    )
    assert unfinished, "a lost claim's outcome recorded the batch that took its id"

    await outbox.settle(_succeeded(taken))
    row = await pool.fetchrow(
        "SELECT finished_at IS NOT NULL AS finished, succeeded FROM notifier.batches WHERE id = $1",
        taken[0].batch_id,
    )
    assert dict(row) == {"finished": True, "succeeded": 5}


async def test_a_lost_delivery_claims_late_outcome_leaves_the_delivery_that_took_its_id(
    pool: asyncpg.Pool,
) -> None:
    store = SubscriptionStore(pool, allow_private_targets=True)
    first = await store.create(
        "http://127.0.0.1:9/first", event_types=["transaction.created"], ordering="key"
    )
    second = await store.create(
        "http://127.0.0.1:9/second", event_types=["transaction.created"], ordering="key"
    )
    (account_id,) = await open_accounts(pool, 1)
    outbox = Outbox(pool, LEASE_SECONDS)
    positions = await pool.fetch("SELECT * FROM notifier.positions ORDER BY subscription_id")
    await _top_ups(pool, account_id, 1)

    lost = await _claim(outbox)
    assert {c.subscription_id for c in lost} == {first.id, second.id}
    # A crash loses the claim: its deliveries, the key heads it set, its positions.
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "DELETE FROM notifier.deliveries WHERE id = ANY ($1::bigint[])",
            [c.delivery_id for c in lost],
        )
        await conn.execute("UPDATE notifier.ordering_keys SET head = NULL, waiting = 0")
        for position in positions:
            await conn.execute(
                "UPDATE notifier.positions SET since = $2, upto = $3, after_id = $4,"
                " last_id = $5 WHERE subscription_id = $1",
                *position.values(),
            )
        await conn.execute(
            "SELECT setval(pg_get_serial_sequence('notifier.deliveries', 'id'), $1, false)",
            min(c.delivery_id or 0 for c in lost),
        )
    # The lowest id is given out again, to the other subscription's delivery of the event.
    low = min(lost, key=lambda c: c.delivery_id or 0)
    await pool.execute(
        "UPDATE notifier.subscriptions SET enabled = false WHERE id = $1", low.subscription_id
    )
    (taken,) = await _claim(outbox)
    assert taken.delivery_id == low.delivery_id
    assert taken.subscription_id != low.subscription_id
    assert taken.event_id == low.event_id

    await outbox.settle(_succeeded(lost))
    status = await pool.fetchval(
        "SELECT status FROM notifier.deliveries WHERE id = $1", taken.delivery_id
    )
    assert status == "in_flight", "a lost claim's outcome recorded a delivery it never made"
    await outbox.settle(_succeeded([taken]))
    status = await pool.fetchval(
        "SELECT status FROM notifier.deliveries WHERE id = $1", taken.delivery_id
    )
    assert status == "succeeded"
