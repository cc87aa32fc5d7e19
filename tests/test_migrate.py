"""`notifier migrate`: ordered, recorded, locked, idempotent, and strict about edits."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys

import asyncpg
import pytest

from notifier.db.migrate import Migration, MigrationError, discover, migrate


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
