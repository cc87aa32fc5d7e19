"""`notifier migrate`: ordered, recorded, locked, idempotent, and strict about edits."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import os
import subprocess
import sys
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from notifier.db.migrate import Migration, MigrationError, discover, migrate
from notifier.devtools.daemon_process import wait_until
from notifier.devtools.receiver import Receiver
from notifier.ops.operator import Operations
from tests.support import Daemon, caught_up, start


def _notifier(database_url: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "NOTIFIER_DATABASE_URL": database_url, "NOTIFIER_LOG_FORMAT": "json"}
    return subprocess.Popen(
        [sys.executable, "-m", "notifier.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _run(database_url: str, *args: str) -> tuple[int, str, str]:
    proc = _notifier(database_url, *args)
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out, err


def test_files_are_numbered_and_discovered_in_order() -> None:
    migrations = discover()
    versions = [m.version for m in migrations]
    assert versions == sorted(versions)
    assert versions[:3] == [1, 2, 3]
    assert migrations[0].file_name == "001_ledger.sql"


async def test_second_run_is_a_no_op(empty_database_url: str) -> None:
    conn = await asyncpg.connect(empty_database_url)
    try:
        first = await migrate(conn)
        second = await migrate(conn)
        recorded = await conn.fetch(
            "SELECT version, checksum FROM notifier.schema_migrations ORDER BY 1"
        )
    finally:
        await conn.close()
    assert [m.version for m in first] == [m.version for m in discover()]
    assert second == []
    assert [(r["version"], r["checksum"]) for r in recorded] == [
        (m.version, m.checksum) for m in first
    ]


def test_two_concurrent_runs_both_succeed(empty_database_url: str) -> None:
    procs = [_notifier(empty_database_url, "migrate") for _ in range(2)]
    results = [(proc.wait(timeout=60), proc.communicate()) for proc in procs]
    assert [code for code, _ in results] == [0, 0], results

    async def recorded() -> list[int]:
        conn = await asyncpg.connect(empty_database_url)
        try:
            return [
                r[0] for r in await conn.fetch("SELECT version FROM notifier.schema_migrations")
            ]
        finally:
            await conn.close()

    assert sorted(asyncio.run(recorded())) == [m.version for m in discover()]


async def test_edited_applied_migration_is_refused(empty_database_url: str) -> None:
    conn = await asyncpg.connect(empty_database_url)
    try:
        await migrate(conn)
        edited = [
            dataclasses.replace(m, sql=m.sql + "\n-- tweak\n") if m.version == 1 else m
            for m in discover()
        ]
        with pytest.raises(
            MigrationError, match=r"001_ledger\.sql was edited after it was applied"
        ):
            await migrate(conn, edited)
    finally:
        await conn.close()


def test_cli_refuses_an_edited_migration_with_a_clear_error(empty_database_url: str) -> None:
    code, _, err = _run(empty_database_url, "migrate")
    assert code == 0, err

    async def tamper() -> None:
        conn = await asyncpg.connect(empty_database_url)
        try:
            await conn.execute(
                "UPDATE notifier.schema_migrations SET checksum = 'abc' WHERE version = 2"
            )
        finally:
            await conn.close()

    asyncio.run(tamper())
    code, _, err = _run(empty_database_url, "migrate")
    assert code == 1
    assert err.startswith("notifier: error: 002_outbox.sql was edited after it was applied")
    assert "Traceback" not in err


async def test_failed_migration_rolls_back_and_names_the_file(empty_database_url: str) -> None:
    broken = [*discover(), Migration(900, "broken", "CREATE TABLE half_done (id int); SELECT 1/0;")]
    conn = await asyncpg.connect(empty_database_url)
    try:
        with pytest.raises(MigrationError, match=r"900_broken\.sql failed: division by zero"):
            await migrate(conn, broken)
        assert await conn.fetchval("SELECT to_regclass('half_done')") is None
        newest = await conn.fetchval("SELECT max(version) FROM notifier.schema_migrations")
        assert newest == discover()[-1].version
    finally:
        await conn.close()


async def test_unknown_or_out_of_order_migrations_are_refused(empty_database_url: str) -> None:
    migrations = discover()
    conn = await asyncpg.connect(empty_database_url)
    try:
        await migrate(conn, [*migrations, Migration(950, "future", "SELECT 1")])
        with pytest.raises(MigrationError, match=r"950_future\.sql, which this version"):
            await migrate(conn, migrations)
        with pytest.raises(MigrationError, match=r"900_late\.sql is older than the newest"):
            await migrate(
                conn,
                [
                    *migrations,
                    Migration(900, "late", "SELECT 1"),
                    Migration(950, "future", "SELECT 1"),
                ],
            )
    finally:
        await conn.close()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("not-a-url", "NOTIFIER_DATABASE_URL: must start with postgresql://"),
        ("postgresql://localhost:notaport/db", "NOTIFIER_DATABASE_URL: not a valid URL"),
        ("postgresql://postgres:hunter2@127.0.0.1:1/db", "cannot connect to the database at"),
    ],
)
def test_cli_reports_a_bad_database_in_one_line(url: str, message: str) -> None:
    code, _, err = _run(url, "migrate")
    assert code == 1
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert "hunter2" not in err


def test_cli_watch_lists_adds_and_removes_tables(database_url: str) -> None:
    async def create_table() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute("CREATE TABLE refunds (id int PRIMARY KEY)")
        finally:
            await conn.close()

    asyncio.run(create_table())
    code, out, err = _run(database_url, "watch", "refunds", "--topic", "refund")
    assert code == 0, err
    code, out, _ = _run(database_url, "watch", "--list")
    assert out.splitlines() == ["refunds\trefund", "transactions\ttransaction"]
    code, _, err = _run(database_url, "watch", "nope", "--topic", "x")
    assert (code, err.strip()) == (1, "notifier: error: no table named nope")
    code, _, err = _run(database_url, "watch", "refunds", "--topic", "Bad!")
    assert code == 1
    assert "invalid topic" in err
    code, _, err = _run(database_url, "unwatch", "refunds")
    assert code == 0, err
    code, out, _ = _run(database_url, "watch", "--list")
    assert out.splitlines() == ["transactions\ttransaction"]


async def test_outcomes_recorded_before_012_read_as_outcome_codes(empty_database_url: str) -> None:
    conn = await asyncpg.connect(empty_database_url)
    try:
        await migrate(conn, [m for m in discover() if m.version < 12])
        await conn.execute(
            """
            INSERT INTO notifier.subscriptions (url, secret) VALUES ('https://x.test/', 'whsec_x');
            INSERT INTO accounts (currency) VALUES ('USD');
            INSERT INTO transactions (account_id, kind, amount) VALUES (1, 'top_up', 5);
            INSERT INTO notifier.deliveries (event_id, subscription_id, status, attempts,
                                             last_status_code, last_error)
            SELECT id, 1, 'dead', 3, NULL, 'connection_error: ClientConnectorError'
              FROM notifier.events;
            INSERT INTO notifier.delivery_attempts
                   (delivery_id, attempt, started_at, duration_ms, status_code, error,
                    response_snippet)
            VALUES (1, 1, now(), 1, 503, 'http_503', 'busy'),
                   (1, 2, now(), 1, NULL, 'timeout', ''),
                   (1, 3, now(), 1, NULL, 'connection_error: ClientConnectorError', ''),
                   (1, 4, now(), 1, 204, NULL, 'ok')
            """
        )
        await migrate(conn)
        attempts = await conn.fetch(
            "SELECT outcome, notifier.http_status(outcome) AS status, error, detail "
            "FROM notifier.delivery_attempts ORDER BY attempt"
        )
        delivery = await conn.fetchrow("SELECT last_outcome, last_error FROM notifier.deliveries")
    finally:
        await conn.close()
    assert [tuple(a) for a in attempts] == [
        ("http_503", 503, "http_503", "busy"),
        ("timeout", None, "timeout", ""),
        ("connection_error", None, "connection_error: ClientConnectorError", ""),
        ("http_204", 204, None, "ok"),
    ]
    assert tuple(delivery) == ("connection_error", "connection_error: ClientConnectorError")


# The previous release's deliveries, written as its daemons left them. Each planned
# (event, subscription, key, state) becomes a row: 'succeeded' and 'dead' are final
# (dead after three failed attempts), 'retrying' failed once and is due again now,
# 'in_flight' was being attempted when its daemon died (its lease ran out, no attempt
# logged), 'due' was fanned out beyond the subscription's room, 'waiting' waits behind
# its key's head. Every attempt made is logged, as the previous release's settle did.
_PREVIOUS_RELEASE_DELIVERIES = """
WITH plan AS (
    SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[])
        AS p (event_id, subscription_id, ordering_key, state)
),
made AS (
    INSERT INTO notifier.deliveries
           (event_id, subscription_id, ordering_key, status, attempts, next_attempt_at,
            last_attempt_at, last_outcome, last_error, completed_at)
    SELECT event_id, subscription_id, ordering_key,
           CASE WHEN state IN ('retrying', 'due', 'waiting') THEN 'pending' ELSE state END,
           CASE state WHEN 'dead' THEN 3 WHEN 'due' THEN 0 WHEN 'waiting' THEN 0 ELSE 1 END,
           CASE state WHEN 'waiting' THEN 'infinity'
                      WHEN 'retrying' THEN now() WHEN 'due' THEN now()
                      ELSE now() - interval '30 seconds' END,
           CASE WHEN state IN ('succeeded', 'dead', 'retrying')
                THEN now() - interval '40 seconds' END,
           CASE state WHEN 'succeeded' THEN 'http_204'
                      WHEN 'dead' THEN 'http_500' WHEN 'retrying' THEN 'http_500' END,
           CASE WHEN state IN ('dead', 'retrying') THEN 'http_500' END,
           CASE WHEN state IN ('succeeded', 'dead') THEN now() - interval '40 seconds' END
      FROM plan
    RETURNING id, status, attempts, last_outcome
)
INSERT INTO notifier.delivery_attempts
       (delivery_id, attempt, started_at, duration_ms, outcome, error, detail)
SELECT id, n, now() - interval '1 minute' + n * interval '5 seconds', 12, last_outcome,
       nullif(last_outcome, 'http_204'), ''
  FROM made CROSS JOIN generate_series(1, attempts) AS n
 WHERE status <> 'in_flight'
"""

# Every delivery row and logged attempt, in a form that compares whole.
_DELIVERY_ROWS = "SELECT * FROM notifier.deliveries WHERE event_id = ANY($1) ORDER BY id"
_ATTEMPT_ROWS = "SELECT * FROM notifier.delivery_attempts ORDER BY delivery_id, attempt"


async def _undelivered(pool: asyncpg.Pool) -> bool:
    """Whether nothing is left to send: no delivery due or held, no batch held, and every
    position past every event."""
    busy = await pool.fetchval(
        "SELECT (SELECT count(*) FROM notifier.deliveries WHERE status IN ('pending', 'in_flight'))"
        "     + (SELECT count(*) FROM notifier.batches WHERE finished_at IS NULL)"
    )
    return busy == 0 and await caught_up(pool)


@pytest.mark.timeout(90)
async def test_upgrade_to_positions_loses_and_resends_nothing_pending_in_flight_or_dead(
    empty_database_url: str, daemons: list[Daemon], tmp_path: Path
) -> None:
    """A database of the previous release (018), mid-flight: events delivered, dead,
    retrying, in flight under a lease that ran out, fanned out beyond room, waiting behind
    their key, and still queued for fan-out. After `notifier migrate` and a daemon of this
    release, everything that was owed arrives once (the one in flight at least once), in
    key order on the ordered subscription; nothing delivered or dead is sent again; the
    dead stay recoverable; the old queue is emptied and stays empty."""
    url = empty_database_url
    secret = "whsec_" + base64.b64encode(os.urandom(32)).decode("ascii")
    receiver = await Receiver(secret=secret).start()
    conn = await asyncpg.connect(url)
    pool = await asyncpg.create_pool(url, min_size=1, max_size=3)
    assert pool is not None
    try:
        await migrate(conn, [m for m in discover() if m.version < 19])

        # The previous release's subscriptions and ledger, as its API and an application
        # wrote them: the 018 capture trigger queues each event for fan-out.
        plain, ordered, other = [
            await conn.fetchval(
                "INSERT INTO notifier.subscriptions (url, secret, event_types, ordering,"
                " ordering_key) VALUES ($1, $2, $3, $4, $5) RETURNING id",
                receiver.url(path),
                secret,
                types,
                ordering,
                key,
            )
            for path, types, ordering, key in [
                ("/plain", ["transaction.*"], "none", None),
                ("/ordered", ["transaction.created"], "key", "account_id"),
                ("/other", ["order.*"], "none", None),
            ]
        ]
        accounts = {
            name: await conn.fetchval("INSERT INTO accounts (currency) VALUES ('USD') RETURNING id")
            for name in "ABCDE"
        }
        for amount, name in enumerate("ABCABCABCABCDD", start=1):  # one commit each
            await conn.execute(
                "INSERT INTO transactions (account_id, kind, amount) VALUES ($1, 'top_up', $2)",
                accounts[name],
                amount,
            )
        events = [
            row["id"] for row in await conn.fetch("SELECT id FROM notifier.events ORDER BY id")
        ]
        assert len(events) == 14
        assert [r[0] for r in await conn.fetch("SELECT event_id FROM notifier.event_queue")] == (
            events
        )

        # The previous release's fan-out took the first eight (it goes in event order), to
        # every subscription they match; the last six are still queued.
        e = dict(enumerate(events, start=1))
        fanned, queued = events[:8], events[8:]
        key = {n: str(accounts["ABCABCABCABCDD"[n - 1]]) for n in e}
        plain_plan = {
            1: "succeeded",
            2: "dead",
            3: "retrying",
            4: "in_flight",
            5: "succeeded",
            6: "due",
            7: "in_flight",
            8: "succeeded",
        }
        # Per key of the ordered subscription: A's head (e4) is in flight with e7 behind
        # it; B's head died (e2), its next (e5) failed once and e8 waits; C's head
        # succeeded and freed the key, e6 waiting to be made head by the next claim.
        ordered_plan = {
            1: "succeeded",
            2: "dead",
            3: "succeeded",
            4: "in_flight",
            5: "retrying",
            6: "waiting",
            7: "waiting",
            8: "waiting",
        }
        plan = [(e[n], plain, None, state) for n, state in plain_plan.items()] + [
            (e[n], ordered, key[n], state) for n, state in ordered_plan.items()
        ]
        await conn.execute("DELETE FROM notifier.event_queue WHERE event_id = ANY($1)", fanned)
        await conn.execute(_PREVIOUS_RELEASE_DELIVERIES, *map(list, zip(*plan, strict=True)))
        await conn.execute(
            "INSERT INTO notifier.ordering_keys (subscription_id, key, head, waiting)"
            " VALUES ($1, $2, $3, 1), ($1, $4, $5, 1), ($1, $6, NULL, 1)",
            ordered,
            key[1],
            e[4],
            key[2],
            e[5],
            key[3],
        )
        old_deliveries = await conn.fetch(_DELIVERY_ROWS, fanned)
        old_attempts = await conn.fetch(_ATTEMPT_ROWS)

        # The upgrade, as an operator runs it.
        code, _, err = await asyncio.to_thread(_run, url, "migrate")
        assert code == 0, err
        assert await conn.fetchval("SELECT max(version) FROM notifier.schema_migrations") == (
            discover()[-1].version
        )
        assert await conn.fetchval("SELECT count(*) FROM notifier.event_queue") == 0
        # What was delivered, dead, retrying or in flight is untouched, to the column.
        assert await conn.fetch(_DELIVERY_ROWS, fanned) == old_deliveries
        assert await conn.fetch(_ATTEMPT_ROWS) == old_attempts
        # The queued events became deliveries: due now, or waiting behind their key.
        made = await conn.fetch(
            "SELECT event_id, subscription_id, ordering_key, status, attempts,"
            "       next_attempt_at = 'infinity' AS waiting, next_attempt_at <= now() AS due"
            "  FROM notifier.deliveries WHERE event_id = ANY($1)"
            " ORDER BY subscription_id, event_id",
            queued,
        )
        assert [tuple(r) for r in made] == [
            *[(i, plain, None, "pending", 0, False, True) for i in queued],
            *[(e[n], ordered, key[n], "pending", 0, True, False) for n in range(9, 15)],
        ]
        keys = await conn.fetch(
            "SELECT key, head, waiting FROM notifier.ordering_keys WHERE subscription_id = $1",
            ordered,
        )
        assert {r["key"]: (r["head"], r["waiting"]) for r in keys} == {
            key[1]: (e[4], 2),  # e7, e10
            key[2]: (e[5], 2),  # e8, e11
            key[3]: (None, 3),  # e6, e9, e12
            key[13]: (None, 2),  # e13, e14: a key the previous release never saw
        }

        # This release's writers: one commit before a daemon runs, more while it runs.
        await conn.execute(
            "INSERT INTO transactions (account_id, kind, amount)"
            " SELECT unnest($1::bigint[]), 'top_up', 100",
            [accounts[name] for name in "ABCD"],
        )
        start(daemons, url, tmp_path)
        await conn.execute(
            "INSERT INTO transactions (account_id, kind, amount)"
            " SELECT unnest($1::bigint[]), 'top_up', 200",
            [accounts[name] for name in "EAE"],
        )
        await conn.execute(
            "INSERT INTO transactions (account_id, kind, amount) VALUES ($1, 'debit', 1)",
            accounts["B"],
        )

        rows = await conn.fetch(
            "SELECT id, uid::text AS uid, (data ->> 'id')::bigint AS tx,"
            "       (data ->> 'account_id')::bigint AS account FROM notifier.events ORDER BY id"
        )
        assert len(rows) == 14 + 8
        uid = {r["id"]: r["uid"] for r in rows}
        new = [r["id"] for r in rows[14:]]
        owed_once = {
            "/plain": [e[n] for n, s in plain_plan.items() if s in ("retrying", "due")]
            + queued
            + new,
            "/ordered": [e[n] for n, s in ordered_plan.items() if s in ("retrying", "waiting")]
            + queued
            + new,
        }
        owed_at_least_once = {
            path: [e[n] for n, s in states.items() if s == "in_flight"]
            for path, states in [("/plain", plain_plan), ("/ordered", ordered_plan)]
        }
        owed = {
            path: {uid[i] for i in owed_once[path] + owed_at_least_once[path]} for path in owed_once
        }

        def arrived(path: str) -> Counter[str]:
            return Counter(r.event["id"] for r in receiver.received if r.path == path)

        await wait_until(
            lambda: all(set(arrived(path)) >= owed[path] for path in owed),
            seconds=30,
            what="everything owed to arrive",
        )
        await wait_until(lambda: _undelivered(pool), seconds=15, what="nothing left to send")
        await asyncio.sleep(1.5)  # a copy sent late would show in the counts below

        assert all(200 <= s < 300 for answers in receiver.statuses.values() for s in answers)
        assert arrived("/other") == Counter()
        for path in owed:
            counts = arrived(path)
            assert set(counts) == owed[path], path  # nothing delivered or dead sent again
            twice = {i for i in owed_once[path] if counts[uid[i]] != 1}
            assert not twice, f"{path}: sent other than once: {sorted(twice)}"
        # Per account, in ledger order: first arrivals are the owed events in transaction
        # id order, and no older event arrives after a newer one.
        ledger: dict[int, list[int]] = defaultdict(list)
        for r in rows:
            if uid[r["id"]] in owed["/ordered"]:
                ledger[r["account"]].append(r["tx"])
        every: dict[int, list[int]] = defaultdict(list)
        for request in receiver.by_path()["/ordered"]:
            data = request.event["data"]
            every[data["account_id"]].append(data["id"])
        assert {a: list(dict.fromkeys(txs)) for a, txs in every.items()} == {
            a: sorted(txs) for a, txs in ledger.items()
        }
        assert all(txs == sorted(txs) for txs in every.values()), every

        # In the database: the old queue stays empty; the delivered and dead rows are as
        # they were; every key is free with nothing waiting; the dead are recoverable.
        assert await conn.fetchval("SELECT count(*) FROM notifier.event_queue") == 0
        dead_and_done = [r for r in old_deliveries if r["status"] in ("succeeded", "dead")]
        now_rows = {r["id"]: r for r in await conn.fetch(_DELIVERY_ROWS, fanned)}
        assert [now_rows[r["id"]] for r in dead_and_done] == dead_and_done
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM notifier.deliveries WHERE subscription_id = $1", other
            )
            == 0
        )
        assert [
            tuple(r)
            for r in await conn.fetch(
                "SELECT head, waiting FROM notifier.ordering_keys"
                " WHERE head IS NOT NULL OR waiting <> 0"
            )
        ] == []
        ops = Operations(pool)
        since = datetime.now(UTC) - timedelta(hours=1)
        for subscription in (plain, ordered):
            scheduled = await ops.recover(subscription, since)
            assert (scheduled.created, scheduled.reset) == (0, 1), subscription
        await wait_until(
            lambda: all(uid[e[2]] in arrived(path) for path in owed),
            seconds=15,
            what="the recovered dead event to arrive",
        )
        await wait_until(lambda: _undelivered(pool), seconds=15, what="the recovery to finish")
        await asyncio.sleep(0.5)
        for path in owed:
            assert arrived(path)[uid[e[2]]] == 1, path
            assert set(arrived(path)) == owed[path] | {uid[e[2]]}, path
        states = await conn.fetch(
            "SELECT status, count(*) FROM notifier.delivery_states"
            " WHERE subscription_id = ANY($1) GROUP BY 1",
            [plain, ordered],
        )
        assert {r["status"]: r["count"] for r in states} == {"succeeded": 2 * len(rows)}
    finally:
        await pool.close()
        await conn.close()
        for daemon in daemons:
            daemon.ensure_stopped()
        await receiver.stop()


STEPPED = """-- step: a table
CREATE TABLE IF NOT EXISTS stepped (id int);
-- step: its index, built without blocking writers (outside a transaction)
CREATE INDEX CONCURRENTLY IF NOT EXISTS stepped_id ON stepped (id)
-- step: the rest
{last}
"""


async def test_a_migration_in_steps_commits_each_and_records_it_with_the_last(
    empty_database_url: str,
) -> None:
    conn = await asyncpg.connect(empty_database_url)
    try:
        failing = Migration(900, "stepped", STEPPED.format(last="SELECT 1/0;"))
        assert [s.transactional for s in failing.steps] == [True, False, True]
        with pytest.raises(MigrationError, match=r"900_stepped\.sql failed at step 3 \(the rest\)"):
            await migrate(conn, [*discover(), failing])
        # The steps before the failure stay done; the migration is not recorded.
        assert await conn.fetchval("SELECT to_regclass('stepped_id') IS NOT NULL")
        assert await conn.fetchval("SELECT max(version) FROM notifier.schema_migrations") < 900
        fixed = Migration(900, "stepped", STEPPED.format(last="CREATE TABLE stepped_too (id int);"))
        assert [m.version for m in await migrate(conn, [*discover(), fixed])] == [900]
        assert await conn.fetchval("SELECT to_regclass('stepped_too') IS NOT NULL")
        assert await conn.fetchval("SELECT max(version) FROM notifier.schema_migrations") == 900
    finally:
        await conn.close()


async def test_a_step_that_cannot_get_its_lock_waits_and_tries_again(
    empty_database_url: str,
) -> None:
    conn = await asyncpg.connect(empty_database_url)
    holder = await asyncpg.connect(empty_database_url)
    try:
        await migrate(conn)
        await conn.execute("CREATE TABLE busy (id int)")
        waiting = Migration(
            900,
            "waiting",
            "-- step: lock it briefly\n"
            "SET LOCAL lock_timeout = '100ms';\n"
            "LOCK TABLE busy IN ACCESS EXCLUSIVE MODE;\n"
            "ALTER TABLE busy ADD COLUMN note text;\n",
        )
        await holder.execute("BEGIN; LOCK TABLE busy IN ACCESS SHARE MODE")

        async def release() -> None:
            await asyncio.sleep(0.5)
            await holder.execute("COMMIT")

        released = asyncio.create_task(release())
        applied = await migrate(conn, [*discover(), waiting])
        await released
        assert [m.version for m in applied] == [900]
        assert await conn.fetchval(
            "SELECT count(*) FROM information_schema.columns"
            " WHERE table_name = 'busy' AND column_name = 'note'"
        )
    finally:
        await holder.close()
        await conn.close()


def test_a_last_step_outside_a_transaction_is_refused() -> None:
    bare = Migration(
        900,
        "bare",
        "-- step: index (outside a transaction)\nCREATE INDEX CONCURRENTLY x ON y (z)\n",
    )
    with pytest.raises(MigrationError, match="last step must run in a transaction"):
        _ = bare.steps
    stray = Migration(901, "stray", "-- what it is\nSELECT 1;\n-- step: the rest\nSELECT 2;\n")
    with pytest.raises(MigrationError, match="SQL before its first step would not run"):
        _ = stray.steps
