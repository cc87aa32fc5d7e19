"""Seeding helpers for the operations tests: events and deliveries made with set-based SQL."""

from __future__ import annotations

from typing import Any

import psycopg

Conn = psycopg.Connection[Any]


def subscription(dba: Conn, url: str = "https://example.com/hook", **columns: Any) -> int:
    names = ["url", "secret", *columns]
    values = [url, "whsec_" + "QUJD" * 8, *columns.values()]
    row = dba.execute(
        f"INSERT INTO notifier.subscriptions ({', '.join(names)}) "
        f"VALUES ({', '.join(['%s'] * len(names))}) RETURNING id",
        values,
    ).fetchone()
    assert row is not None
    return int(row[0])


def fanned_events(
    dba: Conn,
    subscription_id: int,
    count: int,
    *,
    status: str = "dead",
    age: str = "0 seconds",
    attempts: int = 4,
) -> list[str]:
    """``count`` events captured ``age`` ago, fanned out to the subscription (every
    position past them), with deliveries in ``status`` and one logged attempt each;
    returns the event ids."""
    rows = dba.execute(
        """
        WITH e AS (
            INSERT INTO notifier.events (type, topic, table_schema, table_name, op, data, created_at)
            SELECT 'transaction.created', 'transaction', 'public', 'transactions', 'INSERT',
                   jsonb_build_object('id', n, 'account_id', 1, 'kind', 'top_up', 'amount', n,
                                      'created_at', now() - %(age)s::interval),
                   now() - %(age)s::interval
              FROM generate_series(1, %(count)s) AS n
            RETURNING id, uid
        ),
        d AS (
            INSERT INTO notifier.deliveries
                   (event_id, subscription_id, status, attempts, last_outcome, last_error,
                    completed_at, last_attempt_at, created_at)
            SELECT id, %(sub)s, %(status)s, %(attempts)s,
                   CASE WHEN %(status)s = 'dead' THEN 'http_500' END,
                   CASE WHEN %(status)s = 'dead' THEN 'http_500' END,
                   CASE WHEN %(status)s IN ('dead', 'succeeded') THEN now() - %(age)s::interval END,
                   now() - %(age)s::interval, now() - %(age)s::interval
              FROM e
            RETURNING id
        ),
        a AS (
            INSERT INTO notifier.delivery_attempts
                   (delivery_id, attempt, started_at, duration_ms, outcome, error)
            SELECT id, 1, now(), 1.5, 'http_500', 'http_500' FROM d
        )
        SELECT uid::text FROM e ORDER BY id
        """,
        {
            "age": age,
            "count": count,
            "sub": subscription_id,
            "status": status,
            "attempts": attempts,
        },
    ).fetchall()
    passed_by_every_position(dba)
    return [str(r[0]) for r in rows]


def passed_by_every_position(dba: Conn) -> None:
    """Move every subscription's position past every committed event, as a daemon would
    once it had claimed them."""
    dba.execute(
        "UPDATE notifier.positions"
        "   SET since = pg_current_snapshot(), upto = NULL, after_id = NULL, last_id = NULL"
    )
