"""Fixtures: one PostgreSQL server per run, one migrated template, one database per test."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import asyncpg
import psycopg
import pytest

from notifier.db.migrate import migrate
from notifier.devtools.receiver import Receiver
from tests.pg import postgres_server, with_database
from tests.support import Daemon

# What is wrong with some accounts' ledgers (empty when nothing is), read in one snapshot.
LedgerViolations = Callable[[psycopg.Connection[tuple[object, ...]], Sequence[int]], list[str]]


def _admin(url: str) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(url, autocommit=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """Admin URL of the run's PostgreSQL server."""
    with postgres_server() as (source, url):
        print(f"\nPostgreSQL for tests: {source}")
        yield url


class Databases:
    """Fresh databases cloned from the migrated template, off each test's clock: the next
    one is made while a test runs, and a finished one is dropped while the next runs."""

    def __init__(self, admin_url: str, template: str) -> None:
        self._admin_url = admin_url
        self._template = template
        self._maker = ThreadPoolExecutor(1, thread_name_prefix="make-db")
        self._dropper = ThreadPoolExecutor(1, thread_name_prefix="drop-db")
        self._drops: list[Future[None]] = []
        self._next = self._maker.submit(self._make)

    def _make(self) -> str:
        name = f"notifier_test_{uuid.uuid4().hex[:12]}"
        with _admin(self._admin_url) as admin:
            admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{self._template}"')
        return name

    def _drop(self, name: str) -> None:
        with _admin(self._admin_url) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def take(self) -> str:
        name = self._next.result()
        self._next = self._maker.submit(self._make)
        return name

    def give_back(self, name: str) -> None:
        self._drops.append(self._dropper.submit(self._drop, name))

    def close(self) -> None:
        self.give_back(self._next.result())
        self._maker.shutdown()
        self._dropper.shutdown()
        for drop in self._drops:
            drop.result()


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


@pytest.fixture(scope="session")
def databases(pg_server: str, template_db: str) -> Iterator[Databases]:
    made = Databases(pg_server, template_db)
    yield made
    made.close()


@pytest.fixture
def database_url(pg_server: str, databases: Databases) -> Iterator[str]:
    """URL of a fresh, migrated database of this test's own."""
    name = databases.take()
    yield with_database(pg_server, name)
    databases.give_back(name)


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


_LEDGER_AUDIT = """
SELECT a.id, a.balance, coalesce(l.total, 0), l.rows,
       coalesce(l.last_balance_after, a.balance), l.unmatched, e.events
  FROM accounts a
  CROSS JOIN LATERAL (
      SELECT sum(CASE t.kind WHEN 'top_up' THEN t.amount ELSE -t.amount END) AS total,
             count(*) AS rows,
             (array_agg(t.balance_after ORDER BY t.id DESC))[1] AS last_balance_after,
             count(*) FILTER (WHERE (
                 SELECT count(*) FROM notifier.events ev
                  WHERE ev.type = 'transaction.created'
                    AND ev.data ->> 'id' = t.id::text
                    AND ev.data ->> 'account_id' = t.account_id::text
                    AND ev.data ->> 'kind' = t.kind
                    AND ev.data ->> 'amount' = t.amount::text
                    AND ev.data ->> 'balance_after' = t.balance_after::text) <> 1) AS unmatched
        FROM transactions t
       WHERE t.account_id = a.id) l
  CROSS JOIN LATERAL (
      SELECT count(*) AS events FROM notifier.events ev
       WHERE ev.type = 'transaction.created' AND ev.data ->> 'account_id' = a.id::text) e
 WHERE a.id = ANY(%s)
"""


def _ledger_violations(
    conn: psycopg.Connection[tuple[object, ...]], account_ids: Sequence[int]
) -> list[str]:
    found = {int(str(row[0])): row[1:] for row in conn.execute(_LEDGER_AUDIT, [list(account_ids)])}
    problems = [f"account {a}: not found" for a in account_ids if a not in found]
    for account_id, row in sorted(found.items()):
        balance, total, rows, last, unmatched, events = (int(str(value)) for value in row)
        name = f"account {account_id}"
        if balance != total:
            problems.append(f"{name}: balance {balance}, but its ledger rows sum to {total}")
        if balance < 0:
            problems.append(f"{name}: balance {balance} is negative")
        if last != balance:
            problems.append(f"{name}: balance {balance}, but its last row says {last}")
        if unmatched:
            problems.append(f"{name}: {unmatched} rows lack exactly one matching event")
        if events != rows:
            problems.append(f"{name}: {events} transaction.created events for {rows} rows")
    return problems


@pytest.fixture
def ledger_violations() -> LedgerViolations:
    """What breaks the ledger's invariants for some accounts; empty when they all hold.

    For each account: its balance equals the sum of its rows (top-ups minus debits), is
    not negative and is its newest row's balance_after; each row has exactly one
    transaction.created event carrying it, and no other such event names the account.
    """
    return _ledger_violations
