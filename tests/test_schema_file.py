"""sql/schema.sql shows the schema the migrations make, as it is now."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from notifier.devtools.embedded_pg import bin_dir
from notifier.devtools.schema import dump, server_major

SCHEMA_FILE = Path(__file__).resolve().parent.parent / "sql" / "schema.sql"


def test_schema_file_matches_a_migrated_database(database_url: str) -> None:
    written = SCHEMA_FILE.read_text()
    match = re.search(r"printed by pg_dump (\d+)", written)
    assert match, "sql/schema.sql lost its header"
    version = subprocess.run(
        [str(bin_dir() / "pg_dump"), "--version"], capture_output=True, text=True, check=True
    ).stdout
    tools = re.search(r"(\d+)\.", version)
    majors = {match[1], server_major(database_url), tools[1] if tools else "?"}
    if len(majors) > 1:
        # pg_dump prints each major version's catalog its own way: compare like with like.
        pytest.skip(f"sql/schema.sql is pg_dump {match[1]}'s; this server and pg_dump: {majors}")
    assert dump(database_url) == written, (
        "sql/schema.sql is out of date: python -m notifier.devtools.schema URL > sql/schema.sql"
    )


def test_the_migration_runner_does_not_take_the_schema_file_for_a_migration() -> None:
    from notifier.db.migrate import discover

    assert "schema.sql" not in {migration.file_name for migration in discover()}
