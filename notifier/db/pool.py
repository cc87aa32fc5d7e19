"""Database access shared by every process: connections, pools and named SQL queries."""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import Callable, Coroutine, Mapping
from importlib import resources
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from notifier.db.errors import retry_delay
from notifier.observability.redaction import redact_text, redact_url

CONNECT_TIMEOUT_SECONDS = 10.0

_NAME_LINE = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


class DatabaseUnavailable(Exception):
    """The database cannot be reached; the message is one line, without credentials."""


def _unavailable(url: str, exc: BaseException) -> DatabaseUnavailable:
    """The one-line reason, with the URL's credentials masked in the URL and in the
    driver's text, which can quote a piece of the URL (asyncpg's "bad query field")."""
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        reason = f"no answer within {CONNECT_TIMEOUT_SECONDS:g} s"
    else:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return DatabaseUnavailable(
        f"cannot connect to the database at {redact_url(url)}: {redact_text(reason, url)}"
    )


# What asyncpg raises when it cannot connect or authenticate: refused or unreachable
# hosts (OSError), unknown databases and roles (PostgresError), protocol trouble
# (InterfaceError), malformed DSN parts (ValueError).
CONNECT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    ValueError,
)


# Every session the product opens: no JIT compilation. PostgreSQL compiles a statement
# whose estimated cost passes jit_above_cost, again at each execution of a cached plan,
# and a claim over an outbox the planner has no statistics for (autovacuum off, a
# partition never analysed) is estimated high enough: 2.8 s of compiling (427 functions,
# inlined and optimised) for a claim that runs in 8 ms without it. These statements are
# short; none is worth compiling.
SESSION_SETTINGS: Mapping[str, str] = {"jit": "off"}


async def connect(url: str, *, application_name: str | None = None) -> asyncpg.Connection:
    """Open one connection, or raise DatabaseUnavailable with a clear one-line reason."""
    settings = dict(SESSION_SETTINGS)
    if application_name:
        settings["application_name"] = application_name
    try:
        return await asyncpg.connect(url, timeout=CONNECT_TIMEOUT_SECONDS, server_settings=settings)
    except CONNECT_ERRORS as exc:
        # Not chained: a traceback would print the driver's unmasked text.
        raise _unavailable(url, exc) from None


async def create_pool(
    url: str,
    *,
    min_size: int = 1,
    max_size: int = 10,
    server_settings: Mapping[str, str] | None = None,
    setup: Callable[[PoolConnectionProxy], Coroutine[Any, Any, None]] | None = None,
    reset: Callable[[asyncpg.Connection], Coroutine[Any, Any, None]] | None = None,
) -> asyncpg.Pool:
    """Open a connection pool, or raise DatabaseUnavailable with a clear one-line reason.

    ``reset`` replaces the driver's reset of a released connection (a round trip that
    clears session state); an open transaction is rolled back either way.
    """
    try:
        pool = await asyncpg.create_pool(
            url,
            min_size=min_size,
            max_size=max_size,
            timeout=CONNECT_TIMEOUT_SECONDS,
            server_settings={**SESSION_SETTINGS, **(server_settings or {})},
            setup=setup,
            reset=reset,
        )
    except CONNECT_ERRORS as exc:
        # Not chained: a traceback would print the driver's unmasked text.
        raise _unavailable(url, exc) from None
    assert pool is not None
    return pool


@functools.cache
def load_queries(module: str) -> Mapping[str, str]:
    """The named queries of ``notifier/queries/<module>.sql``.

    A file holds blocks that each start with a ``-- name: <query_name>`` line.
    """
    text = (resources.files("notifier.db") / "queries" / f"{module}.sql").read_text("utf-8")
    names = list(_NAME_LINE.finditer(text))
    if not names:
        raise ValueError(f"queries/{module}.sql holds no '-- name:' blocks")
    queries: dict[str, str] = {}
    for match, following in zip(names, [*names[1:], None], strict=True):
        end = following.start() if following else len(text)
        body = text[match.end() : end].strip()
        if match.group(1) in queries:
            raise ValueError(f"queries/{module}.sql names {match.group(1)!r} twice")
        queries[match.group(1)] = body
    return queries


async def connect_waiting(url: str, wait_seconds: float) -> asyncpg.Connection:
    """``connect``, trying again with backoff for up to ``wait_seconds`` while the
    database is unreachable (a container started before its database)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_seconds
    failures = 0
    while True:
        try:
            return await connect(url)
        except DatabaseUnavailable:
            failures += 1
            delay = retry_delay(failures)
            if loop.time() + delay > deadline:
                raise
            await asyncio.sleep(delay)
