"""Running PostgreSQL's own programs (pg_dump, pgbench) on a URL without showing its password.

A command line is visible to every user of the machine (``ps``); the password goes in
the program's environment instead, as ``PGPASSWORD``.
"""

from __future__ import annotations

import os
from urllib.parse import unquote, urlsplit, urlunsplit


def command_line_url(url: str) -> tuple[str, dict[str, str]]:
    """``url`` without the password of its user information, and the environment that
    gives the password back to a libpq program."""
    parts = urlsplit(url)
    if parts.password is None:
        return url, dict(os.environ)
    userinfo, _, host = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    shown = urlunsplit(parts._replace(netloc=f"{user}@{host}"))
    return shown, {**os.environ, "PGPASSWORD": unquote(parts.password)}
