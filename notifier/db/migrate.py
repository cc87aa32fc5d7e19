"""Numbered schema migrations: ``sql/NNN_name.sql`` applied in order, each exactly once."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path

import asyncpg

from notifier.db.pool import load_queries

_FILE_NAME = re.compile(r"^(\d{3,})_([a-z0-9_]+)\.sql$")


class MigrationError(Exception):
    """The migrations cannot be applied; the message says which file and why."""


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
            try:
                async with conn.transaction():
                    await conn.execute(migration.sql)
                    await conn.execute(
                        queries["record"], migration.version, migration.name, migration.checksum
                    )
            except asyncpg.PostgresError as exc:
                raise MigrationError(f"{migration.file_name} failed: {exc}") from exc
        return pending
    finally:
        await conn.execute(queries["unlock"])
