"""``python -m notifier.devtools.schema URL > sql/schema.sql``: the whole schema in one file.

The migrations are the schema; this is the view of it a reader wants, as PostgreSQL's
own ``pg_dump`` prints a migrated database, without what changes from dump to dump.
A test checks that the file matches a freshly migrated database.
"""

from __future__ import annotations

import re
import subprocess
import sys

from notifier.devtools.embedded_pg import bin_dir
from notifier.devtools.libpq import command_line_url

HEADER = """\
-- The whole schema as sql/NNN_*.sql leave it, printed by pg_dump {major} (never applied:
-- the migrations are the schema). Regenerate after adding a migration, on a freshly
-- migrated database:
--   python -m notifier.devtools.schema postgresql://.../db > sql/schema.sql
"""
# Lines that change from dump to dump or from install to install, not with the schema.
_NOISE = re.compile(
    r"^(\\(un)?restrict .*|-- Dumped (from|by) .*|SET .*|SELECT pg_catalog\.set_config.*)$"
)


def server_major(url: str) -> str:
    """The database server's major version, as pg_dump must match it."""
    shown, env = command_line_url(url)
    done = subprocess.run(
        [str(bin_dir() / "psql"), "-XAtc", "SHOW server_version_num", shown],
        capture_output=True, text=True, env=env, check=True,
    )  # fmt: skip
    return str(int(done.stdout.strip()) // 10000)


def dump(url: str) -> str:
    """The schema of the database at ``url``, in the form sql/schema.sql keeps."""
    shown, env = command_line_url(url)
    done = subprocess.run(
        [str(bin_dir() / "pg_dump"), "--schema-only", "--no-owner", "--no-privileges", shown],
        capture_output=True, text=True, env=env, check=True,
    )  # fmt: skip
    lines = [line for line in done.stdout.splitlines() if not _NOISE.match(line)]
    body = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n")
    return HEADER.format(major=server_major(url)) + "\n" + body + "\n"


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m notifier.devtools.schema DATABASE_URL > sql/schema.sql")
    sys.stdout.write(dump(sys.argv[1]))
