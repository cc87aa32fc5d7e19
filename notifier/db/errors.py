"""Which database errors are worth trying again: the one definition every process uses."""

from __future__ import annotations

import asyncpg
from asyncpg.exceptions import _base as asyncpg_base

# The database is away or briefly unable, not the statement wrong: the connection broke
# or was refused, the server is shutting down, starting or recovering, it is out of
# connections or memory, the statement was cancelled, or it lost a serialisation race
# or a lock wait. Trying again later can succeed.
RETRYABLE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,  # the client's side of a lost connection
    asyncpg.InternalClientError,  # protocol state left by a connection lost mid-operation
    asyncpg.PostgresConnectionError,  # SQLSTATE class 08
    asyncpg.OperatorInterventionError,  # 57: shutdown, crash, starting up, cancelled, idle timeout
    asyncpg.InsufficientResourcesError,  # 53: too many connections, out of memory, disk full
    asyncpg.TransactionRollbackError,  # 40: serialisation failure, deadlock
    asyncpg.LockNotAvailableError,  # 55P03: lock_timeout
    asyncpg.ReadOnlySQLTransactionError,  # 25006: a failover's old primary, now a standby
    asyncpg.InvalidCatalogNameError,  # 3D000: the database is not created yet
)

# Interface errors that are mistakes in what was sent, not a lost connection: retrying
# would repeat them.
_CLIENT_MISTAKES: tuple[type[BaseException], ...] = (
    asyncpg_base.DataError,
    asyncpg_base.ClientConfigurationError,
    asyncpg_base.UnsupportedClientFeatureError,
    asyncpg_base.UnsupportedServerFeatureError,
)


def is_retryable(exc: BaseException) -> bool:
    """Whether ``exc`` says the database is away or busy, rather than the request bad."""
    return isinstance(exc, RETRYABLE_ERRORS) and not isinstance(exc, _CLIENT_MISTAKES)


# What the database says when it refuses the data of a statement (a value it cannot
# store, a constraint): retrying the same statement would be refused again.
REFUSED_DATA: tuple[type[BaseException], ...] = (asyncpg.PostgresError, asyncpg_base.DataError)

RETRY_INITIAL_SECONDS = 0.1
# Short enough that a database back from an outage is in use again within seconds; a
# refused connection attempt every two seconds costs the server nothing.
RETRY_MAX_SECONDS = 2.0


def retry_delay(failures: int) -> float:
    """Seconds to wait after ``failures`` failures in a row: doubling, at most 2 s."""
    doublings = min(max(0, failures - 1), 16)
    return min(RETRY_MAX_SECONDS, RETRY_INITIAL_SECONDS * 2.0**doublings)


def one_line(exc: BaseException) -> str:
    """The first line of an error's message, or its type when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
