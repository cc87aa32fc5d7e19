"""Numbered schema migrations: ``sql/NNN_name.sql`` applied in order, each exactly once.

A migration runs in one transaction, unless it is written in steps, for work that must
not hold its locks for long (an online change of a populated table): each line
``-- step: what it does`` begins a step, and each step runs in a transaction of its own;
a step marked ``-- step: what it does (outside a transaction)`` is a single statement
that cannot run inside one (``CREATE INDEX CONCURRENTLY``). Steps must be safe to run
again: a migration that fails part-way is run again from its first step, and it is
recorded as applied only in the transaction of its last step. A step that gives up on a
lock (its own ``lock_timeout``) is tried again a few times before the migration fails.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path

import asyncpg

from notifier.db.pool import load_queries
from notifier.observability.logging import get_logger

log = get_logger("notifier.migrate")

_FILE_NAME = re.compile(r"^(\d{3,})_([a-z0-9_]+)\.sql$")
_STEP = re.compile(r"^-- step: (.+?)( \(outside a transaction\))?[ \t]*$", re.MULTILINE)
# A step that timed out waiting for a lock is tried again after 1, 2, 4 ... seconds.
LOCK_RETRIES = 6


class MigrationError(Exception):
    """The migrations cannot be applied; the message says which file and why."""


@dataclass(frozen=True)
class Step:
    name: str
    sql: str
    transactional: bool = True


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def file_name(self) -> str:
        return f"{self.version:03d}_{self.name}.sql"

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode("utf-8")).hexdigest()

    @property
    def steps(self) -> list[Step]:
        """The file's steps; a file without step lines is one step."""
        marks = list(_STEP.finditer(self.sql))
        if not marks:
            return [Step(self.name, self.sql)]
        before = [line for line in self.sql[: marks[0].start()].splitlines() if line.strip()]
        if any(not line.lstrip().startswith("--") for line in before):
            raise MigrationError(f"{self.file_name}: SQL before its first step would not run")
        steps = []
        for mark, following in zip(marks, [*marks[1:], None], strict=True):
            end = following.start() if following else len(self.sql)
            body = self.sql[mark.end() : end]
            steps.append(Step(mark.group(1), body, transactional=mark.group(2) is None))
        if not steps[-1].transactional:
            raise MigrationError(
                f"{self.file_name}: its last step must run in a transaction (it records it)"
            )
        return steps


def migrations_dir() -> Traversable:
    """Where the migrations are: inside the installed wheel, or ``sql/`` of a checkout."""
    packaged = resources.files("notifier") / "sql"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "sql"


def discover(directory: Traversable | None = None) -> list[Migration]:
    """Every migration file, in version order."""
    directory = directory or migrations_dir()
    found: dict[int, Migration] = {}
    for entry in directory.iterdir():
        match = _FILE_NAME.match(entry.name)
        if not match:
            continue
        migration = Migration(int(match.group(1)), match.group(2), entry.read_text("utf-8"))
        if migration.version in found:
            raise MigrationError(
                f"two migrations share version {migration.version}: "
                f"{found[migration.version].file_name} and {migration.file_name}"
            )
        found[migration.version] = migration
    return [found[version] for version in sorted(found)]


def _pending(migrations: list[Migration], applied: list[asyncpg.Record]) -> list[Migration]:
    """The migrations still to apply, after checking the applied ones were not changed."""
    by_version = {m.version: m for m in migrations}
    for row in applied:
        known = by_version.get(row["version"])
        if known is None:
            raise MigrationError(
                f"the database has migration {row['version']:03d}_{row['name']}.sql, "
                "which this version of notifier does not know; upgrade notifier"
            )
        if known.checksum != row["checksum"]:
            raise MigrationError(
                f"{known.file_name} was edited after it was applied "
                f"(checksum {row['checksum'][:12]} in the database, {known.checksum[:12]} on disk); "
                "restore the file and put the change in a new migration"
            )
    newest = max((row["version"] for row in applied), default=0)
    pending = [m for m in migrations if m.version not in {row["version"] for row in applied}]
    for migration in pending:
        if migration.version < newest:
            raise MigrationError(
                f"{migration.file_name} is older than the newest applied migration "
                f"({newest:03d}); renumber it after {newest:03d}"
            )
    return pending


async def migrate(
    conn: asyncpg.Connection, migrations: list[Migration] | None = None
) -> list[Migration]:
    """Apply every pending migration, each in its own transaction; return those applied.

    An advisory lock makes concurrent runs safe: the second waits, then finds nothing to do.
    """
    queries = load_queries("migrate")
    migrations = discover() if migrations is None else migrations
    await conn.execute(queries["lock"])
    try:
        await conn.execute(queries["bootstrap"])
        pending = _pending(migrations, await conn.fetch(queries["applied"]))
        for migration in pending:
            steps = migration.steps
            for number, step in enumerate(steps, 1):
                record = queries["record"] if number == len(steps) else None
                try:
                    await _run_step(conn, migration, step, record)
                except asyncpg.PostgresError as exc:
                    where = "" if len(steps) == 1 else f" at step {number} ({step.name})"
                    raise MigrationError(f"{migration.file_name} failed{where}: {exc}") from exc
        return pending
    finally:
        await conn.execute(queries["unlock"])


async def _run_step(
    conn: asyncpg.Connection, migration: Migration, step: Step, record: str | None
) -> None:
    for retry in range(LOCK_RETRIES + 1):
        try:
            if step.transactional:
                async with conn.transaction():
                    await conn.execute(step.sql)
                    if record is not None:
                        await conn.execute(
                            record, migration.version, migration.name, migration.checksum
                        )
            else:
                await conn.execute(step.sql)
            return
        except asyncpg.LockNotAvailableError:
            if retry == LOCK_RETRIES:
                raise
            log.warning(
                "migration_step_waiting_for_lock",
                file=migration.file_name,
                step=step.name,
                retry_in=2**retry,
            )
            await asyncio.sleep(2**retry)
