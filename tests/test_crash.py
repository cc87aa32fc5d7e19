"""SIGKILL at random points: two daemons sharing an unordered and an ordered subscription,
killed one at a time and replaced while writers keep capturing thousands of events and
the receiver fails some requests. Every event arrives, and no key goes out of order."""

from __future__ import annotations

import asyncio
import itertools
import os
import random
from collections import Counter
from pathlib import Path

import asyncpg
import pytest

from notifier.devtools.daemon_process import wait_until
from notifier.devtools.receiver import Received, Receiver
from notifier.subscriptions.store import SubscriptionStore
from tests.support import (
    Daemon,
    arrivals_by_account,
    caught_up,
    ledger_order,
    listening,
    open_accounts,
    start,
    statuses,
    what_holds_back,
)

pytestmark = pytest.mark.slow

# A fixed seed, so that a failure names the kill schedule, the writes and the receiver's
# delays that led to it; NOTIFIER_TEST_CRASH_SEED=N runs another. (Timing still varies
# from run to run: the seed fixes what is done, not when each request happens to be.)
SEED = int(os.environ.get("NOTIFIER_TEST_CRASH_SEED", "20240519"))
ACCOUNTS = 20
WRITERS = 4  # each owns ACCOUNTS // WRITERS accounts
ROWS = 3000  # transactions, besides each account's opening top-up
KILLS = 10
EVERY_NTH_FAILS = 7  # each path answers 500 to every 7th request...
OUTAGE_SECONDS = 1.5  # ...and to every request for a while, once
# 41 attempts over about 10 s: an event dies only if it fails through an outage, kills
# and many unlucky requests, so a dead letter here means something is wrong.
RETRIES = ",".join(["0.1"] * 10 + ["0.3"] * 30)
SETTINGS = {"NOTIFIER_RETRY_SCHEDULE": RETRIES, "NOTIFIER_LEASE_SECONDS": "2"}
PATHS = ("/unordered", "/ordered")


async def _writer(
    database_url: str, accounts: list[int], rows: int, seconds: float, seed: int
) -> None:
    """``rows`` transactions on ``accounts`` (its own: no other writer touches them, so an
    account's transaction ids ascend in commit order, the order it is captured in), one
    to three rows per commit, spread over about ``seconds``."""
    chance = random.Random(seed)
    loop = asyncio.get_running_loop()
    began = loop.time()
    conn = await asyncpg.connect(database_url)
    try:
        written = 0
        while written < rows:
            n = min(rows - written, chance.randint(1, 3))
            # Accounts in ascending order within a commit, as a careful writer locks them.
            batch = sorted(chance.choice(accounts) for _ in range(n))
            await conn.executemany(
                "INSERT INTO transactions (account_id, kind, amount) VALUES ($1, $2, $3)",
                [(a, chance.choice(["top_up", "debit"]), chance.randint(1, 100)) for a in batch],
            )
            written += n
            await asyncio.sleep(began + seconds * written / rows - loop.time())
    finally:
        await conn.close()


def _judge(receiver: Receiver, outage: dict[str, tuple[float, float]]) -> None:
    """Each path fails every Nth request, and all of them in its outage window."""
    loop = asyncio.get_running_loop()

    def judge(request: Received) -> int:
        began, ended = outage[request.path]
        if began <= loop.time() < ended:
            return 500
        return 500 if receiver.counts[request.path] % EVERY_NTH_FAILS == 0 else 204

    for path in PATHS:
        receiver.judges[path] = judge


async def _state(pool: asyncpg.Pool) -> str:
    """The engine's tables, for a failure message."""
    parts = [
        "delivery_states: "
        + str(
            [
                dict(r)
                for r in await pool.fetch(
                    "SELECT subscription_id, status, count(*) FROM notifier.delivery_states"
                    " GROUP BY 1, 2 ORDER BY 1, 2"
                )
            ]
        ),
        "positions: "
        + str([dict(r) for r in await pool.fetch("SELECT * FROM notifier.positions")]),
        "unfinished batches: "
        + str(
            [
                dict(r)
                for r in await pool.fetch(
                    "SELECT id, subscription_id, attempt, cardinality(event_ids) AS events,"
                    " event_ids[1] AS first, claimed_at, lease_expires_at, now() AS now"
                    " FROM notifier.batches WHERE finished_at IS NULL ORDER BY id LIMIT 20"
                )
            ]
        ),
        "deliveries not succeeded: "
        + str(
            [
                dict(r)
                for r in await pool.fetch(
                    "SELECT id, event_id, subscription_id, ordering_key, status, attempts,"
                    " next_attempt_at, last_outcome FROM notifier.deliveries"
                    " WHERE status <> 'succeeded' ORDER BY event_id LIMIT 20"
                )
            ]
        ),
        "ordered keys: " + await what_holds_back(pool),
    ]
    return "\n".join(parts)


async def _whereabouts(pool: asyncpg.Pool, uids: set[str]) -> str:
    """Where some events' deliveries stand, for a failure message."""
    rows = await pool.fetch(
        "SELECT e.id, e.data ->> 'account_id' AS account, s.*"
        "  FROM notifier.events e LEFT JOIN notifier.delivery_states s ON s.event_id = e.id"
        " WHERE e.uid::text = ANY($1) ORDER BY e.id LIMIT 20",
        sorted(uids),
    )
    return "\n".join(str(dict(row)) for row in rows)


def _trouble(daemons: list[Daemon]) -> list[str]:
    """Log lines of any daemon at error level or with a traceback."""
    found = []
    for daemon in daemons:
        text = daemon.log_path.read_text()
        if "Traceback" in text:
            found.append(f"{daemon.log_path.name}: a traceback\n{text[-3000:]}")
        found.extend(
            f"{daemon.log_path.name}: {line}"
            for line in daemon.logs()
            if line.get("level") in ("error", "critical") or "exception" in line
        )
    return found


@pytest.mark.timeout(240)
async def test_sigkill_at_random_points_loses_nothing_and_keeps_each_key_in_order(
    database_url: str,
    pool: asyncpg.Pool,
    receiver: Receiver,
    daemons: list[Daemon],
    tmp_path: Path,
) -> None:
    chance = random.Random(SEED)
    seed = f"NOTIFIER_TEST_CRASH_SEED={SEED}"
    loop = asyncio.get_running_loop()
    never = (float("inf"), float("inf"))
    outage = dict.fromkeys(PATHS, never)
    _judge(receiver, outage)
    delays = random.Random(SEED + 1)
    for path in PATHS:  # a request is in flight a little while: kills land mid-request
        receiver.delays[path] = lambda: delays.uniform(0, 0.02)

    accounts = await open_accounts(pool, ACCOUNTS)
    subscriptions = SubscriptionStore(pool, allow_private_targets=True)
    await subscriptions.create(
        receiver.url("/unordered"), event_types=["transaction.*"], max_in_flight=32
    )
    ordered = await subscriptions.create(
        receiver.url("/ordered"), event_types=["transaction.*"], ordering="key", max_in_flight=32
    )
    assert ordered.ordering_key == "account_id"
    await pool.execute(
        "INSERT INTO transactions (account_id, kind, amount) SELECT id, 'top_up', 1000000 "
        "FROM unnest($1::bigint[]) AS id",
        accounts,
    )

    live = [start(daemons, database_url, tmp_path, **SETTINGS) for _ in range(2)]
    await wait_until(lambda: listening(pool), seconds=30, what="the daemons to listen")
    # Kills at random moments over 3-25 s (14 s on average); the writes spread over them,
    # and go on for a second after the last.
    gaps = [chance.uniform(0.3, 2.5) for _ in range(KILLS)]
    began = loop.time()
    share = ACCOUNTS // WRITERS
    writers = [
        asyncio.create_task(
            _writer(
                database_url,
                accounts[w * share : (w + 1) * share],
                ROWS // WRITERS,
                sum(gaps) + 1,  # capture goes on past the last kill
                SEED + w,
            )
        )
        for w in range(WRITERS)
    ]
    finished: list[float] = []
    for writer in writers:
        writer.add_done_callback(lambda _task: finished.append(loop.time() - began))
    for path, at in zip(PATHS, chance.sample(range(KILLS), 2), strict=True):
        outage_at = began + sum(gaps[:at]) + chance.uniform(0, gaps[at])
        outage[path] = (outage_at, outage_at + OUTAGE_SECONDS)
    ages = []  # how long each victim had run: some die starting up, most at work
    born = [began, began]
    for gap in gaps:
        await asyncio.sleep(gap)
        victim = chance.randrange(2)
        live[victim].kill()
        ages.append(loop.time() - born[victim])
        live[victim] = start(daemons, database_url, tmp_path, **SETTINGS)
        born[victim] = loop.time()
    kills_done = loop.time() - began
    await asyncio.gather(*writers)
    written = max(finished)

    events = await pool.fetchval("SELECT count(*) FROM notifier.events")
    assert events == ROWS + ACCOUNTS
    total = events * len(PATHS)

    async def all_succeeded() -> bool:
        return await statuses(pool) == {"succeeded": total} and await caught_up(pool)

    try:
        await wait_until(all_succeeded, seconds=120, what="every event to both subscriptions")
    except TimeoutError:
        print(
            f"\n{seed}; victims killed after {[round(a, 1) for a in ages]} s\n{await _state(pool)}"
        )
        for line in _trouble(daemons):
            print(line)
        raise
    settled = loop.time() - began
    exits = [await daemon.terminate() for daemon in live]
    assert not _trouble(daemons), f"{seed}:\n" + "\n".join(_trouble(daemons))
    assert exits == [0, 0], f"{seed}: the surviving daemons exited {exits}"

    uids = {str(u) for u in await pool.fetchval("SELECT array_agg(uid) FROM notifier.events")}
    ledger = await ledger_order(pool, accounts)
    report = [f"\nSIGKILL x{KILLS} ({seed}): {events} events to each of 2 subscriptions"]
    for path in PATHS:
        answers = receiver.statuses[path]
        accepted = Counter(
            r.event["id"]
            for r, status in zip(receiver.by_path()[path], answers, strict=True)
            if 200 <= status < 300
        )
        missing = uids - set(accepted)
        assert not missing, (
            f"{seed}: {len(missing)} events never accepted at {path}:\n"
            + await _whereabouts(pool, missing)
        )
        assert set(accepted) == uids, f"{seed}: {path} got events that were never captured"
        twice = sum(accepted.values()) - len(accepted)
        report.append(
            f"{path}: {len(answers)} requests, {answers.count(500)} answered 500, "
            f"{twice} accepted again, at most {max(accepted.values())} times"
        )
        # A copy comes from a kill (a batch, or a key's head, whose outcome the killed
        # daemon did not record) or a lease lost under load: a few dozen (measured 5-38),
        # far from a window or a batch sent again whole after each kill.
        assert twice <= events // 10, f"{seed}: {twice} copies accepted at {path}"

    every, first_accepted = arrivals_by_account(receiver, "/ordered")
    # Each account's events, first accepted in ledger order...
    for account in accounts:
        got, want = first_accepted[account], ledger[account]
        assert got == want, (
            f"{seed}: account {account} first accepted out of ledger order, from index "
            f"{next(i for i, (a, b) in enumerate(itertools.zip_longest(got, want)) if a != b)}"
            f": accepted {got}, ledger {want}"
        )
    for account, arrived in every.items():
        # ...and an older event never arrives after a newer one (whatever the answer):
        # a copy is only ever a copy of its key's latest event.
        late = [
            (earlier, later) for earlier, later in itertools.pairwise(arrived) if later < earlier
        ]
        assert not late, f"{seed}: account {account}: {late[:5]} arrived after a newer event"
    reclaimed = await pool.fetchval("SELECT count(*) FROM notifier.batches WHERE attempt > 1")
    report.append(
        f"{reclaimed} batches claimed again; victims killed after "
        + ", ".join(f"{age:.1f}" for age in ages)
        + f" s; kills done at {kills_done:.1f} s, writes at {written:.1f} s, "
        f"all delivered at {settled:.1f} s"
    )
    print("\n".join(report))
