"""Test pieces: `notifier run` processes with fast settings, URLs the SSRF guard refuses."""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from datetime import datetime
from pathlib import Path

import asyncpg

from notifier.devtools.daemon_process import DaemonProcess
from notifier.devtools.embedded_pg import free_port as free_port  # one definition, re-exported
from notifier.devtools.receiver import Receiver

# Subscription URLs whose IPv6 literal carries 127.0.0.1 or 169.254.169.254: compatible,
# NAT64, 6to4 (the reported bypasses of the SSRF guard).
IPV6_FORMS_OF_PRIVATE_TARGETS = [
    "http://[::127.0.0.1]/",
    "http://[64:ff9b::7f00:1]/",
    "http://[2002:7f00:1::]/",
    "http://[2002:a9fe:a9fe::]/latest/meta-data/",
]

# Fast enough for tests, and the same shape as production settings.
FAST_SETTINGS = {
    "NOTIFIER_RETRY_SCHEDULE": "0.2,0.2,0.2",
    "NOTIFIER_LEASE_SECONDS": "2",
    "NOTIFIER_POLL_INTERVAL_SECONDS": "0.5",
    "NOTIFIER_REQUEST_TIMEOUT_SECONDS": "1",
    "NOTIFIER_SHUTDOWN_GRACE_SECONDS": "3",
    "NOTIFIER_LOG_FORMAT": "json",
    # The receivers listen on 127.0.0.1; the SSRF guard has tests of its own.
    "NOTIFIER_ALLOW_PRIVATE_TARGETS": "true",
}


class Daemon(DaemonProcess):
    """A real `notifier run` (or `notifier api`) process with the tests' fast settings."""

    def __init__(
        self, database_url: str, log_path: Path, command: str = "run", **settings: str
    ) -> None:
        super().__init__(database_url, log_path, command, **{**FAST_SETTINGS, **settings})


def start(daemons: list[Daemon], database_url: str, tmp_path: Path, **settings: str) -> Daemon:
    """Start one more ``notifier run`` with the test's settings; ``daemons`` stops it."""
    daemon = Daemon(database_url, tmp_path / f"daemon-{len(daemons)}.log", **settings)
    daemons.append(daemon)
    return daemon


async def write_events(database_url: str, count: int, *, chunk: int, pause: float) -> None:
    """``count`` top-ups, ``chunk`` per transaction, with ``pause`` seconds between."""
    conn = await asyncpg.connect(database_url)
    try:
        account_id = await conn.fetchval(
            "INSERT INTO accounts (currency) VALUES ('USD') RETURNING id"
        )
        for start_at in range(0, count, chunk):
            await conn.execute(
                "INSERT INTO transactions (account_id, kind, amount) "
                "SELECT $1, 'top_up', n FROM generate_series($2::int, $3::int) n",
                account_id,
                start_at + 1,
                min(start_at + chunk, count),
            )
            await asyncio.sleep(pause)
    finally:
        await conn.close()


# Every recorded attempt to subscription $1: of deliveries, and batches' successes.
ATTEMPT_OUTCOMES = """
    SELECT a.outcome, a.error, a.detail, a.started_at FROM notifier.delivery_attempts a
      JOIN notifier.deliveries d ON d.id = a.delivery_id WHERE d.subscription_id = $1
    UNION ALL
    SELECT o.outcome, NULL, '', o.sent_at FROM notifier.batches b
     CROSS JOIN LATERAL unnest(b.outcomes, b.sent_at) AS o (outcome, sent_at)
     WHERE b.subscription_id = $1 AND o.outcome IS NOT NULL
"""


async def statuses(pool: asyncpg.Pool, subscription_id: int | None = None) -> dict[str, int]:
    """Deliveries by status: all, or one subscription's."""
    rows = await pool.fetch(
        "SELECT status, count(*) AS n FROM notifier.delivery_states "
        "WHERE $1::bigint IS NULL OR subscription_id = $1 GROUP BY 1",
        subscription_id,
    )
    return {row["status"]: row["n"] for row in rows}


async def caught_up(pool: asyncpg.Pool) -> bool:
    """Whether every subscription's position has moved past every event."""
    return bool(
        await pool.fetchval(
            "SELECT coalesce(bool_and(p.upto IS NULL AND NOT EXISTS ("
            "    SELECT 1 FROM notifier.events e WHERE NOT notifier.passed(p, e.xid, e.id))),"
            "  true) FROM notifier.positions p"
        )
    )


async def settled(pool: asyncpg.Pool, expected: int) -> bool:
    """Whether ``expected`` deliveries are final (succeeded or dead)."""
    done = await pool.fetchval(
        "SELECT count(*) FROM notifier.delivery_states WHERE status IN ('succeeded', 'dead')"
    )
    return bool(done == expected)


async def outcomes(pool: asyncpg.Pool, subscription_id: int) -> Counter[str]:
    """How many attempts to the subscription ended with each outcome code."""
    rows = await pool.fetch(ATTEMPT_OUTCOMES, subscription_id)
    return Counter(row["outcome"] for row in rows)


async def listening(pool: asyncpg.Pool) -> bool:
    """Whether a daemon's LISTEN connection is up (so it hears the doorbell)."""
    return bool(
        await pool.fetchval(
            "SELECT count(*) > 0 FROM pg_stat_activity WHERE application_name = 'notifier-listener'"
        )
    )


def latencies(receiver: Receiver, path: str) -> list[float]:
    """Seconds from each event's capture to its arrival at ``path``."""
    return [
        r.at - datetime.fromisoformat(r.event["timestamp"]).timestamp()
        for r in receiver.by_path()[path]
    ]


async def open_accounts(pool: asyncpg.Pool, count: int) -> list[int]:
    ids = await pool.fetch(
        "INSERT INTO accounts (currency) SELECT 'USD' FROM generate_series(1, $1) RETURNING id",
        count,
    )
    return [row["id"] for row in ids]


async def what_holds_back(pool: asyncpg.Pool) -> str:
    """What holds deliveries back, for a failure message."""
    counts = await pool.fetch(
        "SELECT status, next_attempt_at = 'infinity' AS waiting, count(*)"
        " FROM notifier.deliveries GROUP BY 1, 2"
    )
    keys = await pool.fetch(
        "SELECT k.key, k.head, k.waiting, h.status AS head_status, h.attempts,"
        "       h.next_attempt_at AS head_due,"
        "       (SELECT count(*) FROM notifier.deliveries w"
        "         WHERE w.subscription_id = k.subscription_id AND w.ordering_key = k.key"
        "           AND w.status = 'pending' AND w.next_attempt_at = 'infinity') AS really_waiting"
        "  FROM notifier.ordering_keys k"
        "  LEFT JOIN notifier.deliveries h"
        "    ON h.subscription_id = k.subscription_id AND h.event_id = k.head"
        " WHERE k.waiting > 0 OR k.head IS NOT NULL ORDER BY k.key LIMIT 60"
    )
    return "\n".join(str(dict(row)) for row in [*counts, *keys])


async def ledger_order(pool: asyncpg.Pool, accounts: list[int]) -> dict[int, list[int]]:
    """Each account's transaction ids in ledger order."""
    order: dict[int, list[int]] = defaultdict(list)
    for row in await pool.fetch(
        "SELECT id, account_id FROM transactions WHERE account_id = ANY($1) ORDER BY id",
        accounts,
    ):
        order[row["account_id"]].append(row["id"])
    return order


def arrivals_by_account(
    receiver: Receiver, path: str
) -> tuple[dict[int, list[int]], dict[int, list[int]]]:
    """Per account: every transaction id as it arrived (failed answers too), and the
    ids as first accepted (2xx)."""
    every: dict[int, list[int]] = defaultdict(list)
    accepted: dict[int, list[int]] = defaultdict(list)
    seen: set[int] = set()
    answers = receiver.statuses[path]
    for request, status in zip(receiver.by_path()[path], answers, strict=True):
        data = request.event["data"]
        every[data["account_id"]].append(data["id"])
        if 200 <= status < 300 and data["id"] not in seen:
            seen.add(data["id"])
            accepted[data["account_id"]].append(data["id"])
    return every, accepted
