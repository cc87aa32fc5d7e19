"""The doorbell alone brings every event, whatever the pace: no event waits for the poll.

The daemon here polls once in ten minutes, so an event whose commit did not wake it
would show as a wait of minutes. Writers go one commit at a time (the doorbell stays
armed between them), then eight at once (the daemon disarms it and claims without it),
then one at a time again (it has to arm it again, and a commit that read it just before
must still be seen). And while events come one at a time, the claims that take new
events alone leave due retries to the full claim, which must still come on time.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from pathlib import Path

import asyncpg

from notifier.devtools.daemon_process import wait_until
from notifier.devtools.receiver import Receiver
from notifier.subscriptions.store import SubscriptionStore
from tests.support import Daemon, listening, start, write_events

SINGLES = 30
WRITERS, ROWS = 8, 150
# Far beyond how long any event here may take; a missed ring costs a whole poll.
PROMPT_SECONDS = 5.0


def _waits(receiver: Receiver) -> list[float]:
    """Seconds from each event's capture to its arrival."""
    return [
        r.at - datetime.fromisoformat(r.event["timestamp"]).timestamp() for r in receiver.received
    ]


async def _singles(database_url: str, receiver: Receiver, count: int) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        account_id = await conn.fetchval(
            "INSERT INTO accounts (currency) VALUES ('USD') RETURNING id"
        )
        for n in range(count):
            expected = len(receiver.received) + 1
            await conn.execute(
                "INSERT INTO transactions (account_id, kind, amount) VALUES ($1, 'top_up', 1)",
                account_id,
            )
            await wait_until(
                lambda expected=expected: len(receiver.received) >= expected,
                PROMPT_SECONDS,
                what=f"single commit {n + 1} of {count}",
            )
            await asyncio.sleep(0.02)
    finally:
        await conn.close()


async def test_every_pace_is_woken_by_the_doorbell_alone(
    database_url: str,
    pool: asyncpg.Pool,
    receiver: Receiver,
    daemons: list[Daemon],
    tmp_path: Path,
) -> None:
    await SubscriptionStore(pool, allow_private_targets=True).create(receiver.url("/"))
    start(daemons, database_url, tmp_path, NOTIFIER_POLL_INTERVAL_SECONDS="600")
    await wait_until(lambda: listening(pool), what="the daemon to listen")
    # Parked: from here on, a commit rings unless the daemon disarmed the doorbell.
    await wait_until(
        lambda: pool.fetchval("SELECT armed FROM notifier.doorbell"), what="the doorbell armed"
    )
    rings: list[str] = []
    listener = await asyncpg.connect(database_url)
    await listener.add_listener("notifier", lambda *args: rings.append(args[3]))
    try:
        await _singles(database_url, receiver, SINGLES)
        single_rings = len(rings)

        await asyncio.gather(
            *(write_events(database_url, ROWS, chunk=1, pause=0) for _ in range(WRITERS))
        )
        total = SINGLES + WRITERS * ROWS
        await wait_until(lambda: len(receiver.received) >= total, 60, what="the burst")
        burst_rings = len(rings) - single_rings

        await _singles(database_url, receiver, SINGLES)
        await wait_until(
            lambda: pool.fetchval("SELECT armed FROM notifier.doorbell"),
            what="the doorbell armed again once idle",
        )
    finally:
        await listener.close()

    waits = _waits(receiver)
    print(
        f"\ndoorbell: {single_rings} rings for {SINGLES} single commits, {burst_rings} for a "
        f"burst of {WRITERS * ROWS} from {WRITERS} writers; longest wait {max(waits):.3f} s"
    )
    assert len(receiver.received) == 2 * SINGLES + WRITERS * ROWS
    assert max(waits) < PROMPT_SECONDS
    # One at a time, each commit rings; in a burst, the daemon claims without the bell.
    assert single_rings == SINGLES
    assert burst_rings < WRITERS * ROWS / 2


async def test_a_retry_falls_due_while_new_events_keep_the_daemon_busy(
    database_url: str,
    pool: asyncpg.Pool,
    receiver: Receiver,
    daemons: list[Daemon],
    tmp_path: Path,
) -> None:
    # While events come one at a time, the daemon claims new events alone and parks after
    # each; the retry of the one that failed is taken by a full claim, which must come
    # on time however often the doorbell rings.
    receiver.behaviours["/"] = lambda n: 500 if n == 0 else 204
    await SubscriptionStore(pool, allow_private_targets=True).create(receiver.url("/"))
    start(
        daemons,
        database_url,
        tmp_path,
        NOTIFIER_POLL_INTERVAL_SECONDS="600",
        NOTIFIER_RETRY_SCHEDULE="0.5",
    )
    await wait_until(lambda: listening(pool), what="the daemon to listen")
    conn = await asyncpg.connect(database_url)
    try:
        account_id = await conn.fetchval(
            "INSERT INTO accounts (currency) VALUES ('USD') RETURNING id"
        )
        # Commits one at a time until the failed event comes again (or 15 s: a retry
        # left to the poll, ten minutes away, would never come while they go on).
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not _sent_twice(receiver):
            await conn.execute(
                "INSERT INTO transactions (account_id, kind, amount) VALUES ($1, 'top_up', 1)",
                account_id,
            )
            await asyncio.sleep(0.01)
        streamed = len(receiver.received)
    finally:
        await conn.close()
    assert _sent_twice(receiver), f"the failed event was not sent again in {streamed} requests"
    first = receiver.received[0]  # answered 500
    again = [
        r.at
        for r in receiver.received[1:]
        if r.headers["webhook-id"] == first.headers["webhook-id"]
    ]
    print(f"\nretry: sent again {again[0] - first.at:.2f} s after its failure (schedule 0.5 s)")
    # Due 0.5 s after the failure, and taken then, as single commits kept coming.
    assert again[0] - first.at < 3.0


def _sent_twice(receiver: Receiver) -> bool:
    """Whether the first request's event (answered 500) has come again."""
    if not receiver.received:
        return False
    return receiver.ok_event_ids("/")[receiver.received[0].headers["webhook-id"]] >= 2
