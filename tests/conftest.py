"""Fixtures: one PostgreSQL server per run, one migrated template, one database per test."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import psycopg
import pytest

from notifier.migrate import migrate
from tests.pg import postgres_server, with_database
from tests.support import Daemon, Receiver


def _admin(url: str) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(url, autocommit=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """Admin URL of the run's PostgreSQL server."""
    with postgres_server() as (source, url):
        print(f"\nPostgreSQL for tests: {source}")
        yield url


@pytest.fixture(scope="session")
def template_db(pg_server: str) -> Iterator[str]:
    """Name of a database migrated once per run, cloned by each test."""
    name = f"notifier_tpl_{uuid.uuid4().hex[:12]}"
    with _admin(pg_server) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')

    async def run() -> None:
        conn = await asyncpg.connect(with_database(pg_server, name))
        try:
            await migrate(conn)
        finally:
            await conn.close()

    asyncio.run(run())
    yield name
    with _admin(pg_server) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def database_url(pg_server: str, template_db: str) -> Iterator[str]:
    """URL of a fresh, migrated database of this test's own."""
    name = f"notifier_test_{uuid.uuid4().hex[:12]}"
    with _admin(pg_server) as admin:
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    yield with_database(pg_server, name)
    with _admin(pg_server) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def empty_database_url(pg_server: str) -> Iterator[str]:
    """URL of a fresh database with no schema at all, for migration tests."""
    name = f"notifier_empty_{uuid.uuid4().hex[:12]}"
    with _admin(pg_server) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield with_database(pg_server, name)
    with _admin(pg_server) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def dba(database_url: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """A psycopg connection in autocommit mode: a DBA typing into psql."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        yield conn


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """An asyncpg pool on the test's database, as the product connects."""
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=5)
    assert pool is not None
    yield pool
    await pool.close()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A real HTTP receiver on a free port, recording what it gets."""
    started = await Receiver().start()
    yield started
    await started.stop()


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    """Daemons the test starts (``tests.support.start``); all stopped at the end."""
    started: list[Daemon] = []
    yield started
    for daemon in started:
        daemon.ensure_stopped()
