"""Ledger reads and writes for the API; the database's rules decide, this maps the answers."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import asyncpg

from api.errors import PROBLEM_TYPES, Problem, problem_body
from api.responses import Account, Kind, Transaction
from notifier.db.pool import load_queries
from notifier.tracecontext import TraceContext

Connection = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy
Executor = asyncpg.Pool | Connection

_DETAIL_NUMBERS = re.compile(r"(account_id|balance|amount)=(\d+)")


@dataclass(frozen=True)
class Outcome:
    """A response the ledger gave, its body already serialised (a Transaction's or a
    problem's): stored as is for idempotent replays."""

    status: int
    body: dict[str, Any]


def _transaction(record: asyncpg.Record) -> Transaction:
    # The queries hand metadata over as JSON text.
    return Transaction.model_validate(dict(record, metadata=json.loads(record["metadata"])))


def _conflict(slug: str, detail: str, **extra: Any) -> Outcome:
    status, title = PROBLEM_TYPES[slug]
    return Outcome(status, problem_body(slug, status, title, detail, **extra))


def _ledger_refusal(exc: asyncpg.PostgresError, account_id: int, amount: int) -> Outcome:
    """The ledger trigger's refusals that are answers (409), or re-raise the error."""
    sqlstate = exc.sqlstate
    # The primary message only: str(exc) appends the DETAIL line.
    message = str(getattr(exc, "message", None) or exc)
    if sqlstate == "WL001":
        numbers = {name: int(value) for name, value in _DETAIL_NUMBERS.findall(exc.detail or "")}
        return _conflict(
            "insufficient-funds",
            message,
            account_id=numbers.get("account_id", account_id),
            balance=numbers.get("balance"),
            amount=numbers.get("amount", amount),
        )
    if sqlstate == "WL002":
        raise Problem("not-found", f"account {account_id} does not exist") from None
    if sqlstate == "WL003":
        return _conflict("currency-mismatch", message, account_id=account_id)
    if sqlstate == "WL006":
        return _conflict("balance-overflow", message, account_id=account_id, amount=amount)
    raise exc


class Ledger:
    """Accounts and transactions, through the queries of ``queries/accounts.sql``."""

    def __init__(self, db: Executor) -> None:
        self._db = db
        self._queries = load_queries("accounts")

    async def create_account(self, currency: str) -> Account:
        record = await self._db.fetchrow(self._queries["create_account"], currency)
        assert record is not None
        return Account.model_validate(dict(record))

    async def account(self, account_id: int) -> Account:
        """The account, or a 404 problem."""
        record = await self._db.fetchrow(self._queries["get_account"], account_id)
        if record is None:
            raise Problem("not-found", f"account {account_id} does not exist")
        return Account.model_validate(dict(record))

    async def transactions(
        self, account_id: int, *, before: int | None, limit: int
    ) -> list[Transaction]:
        records = await self._db.fetch(
            self._queries["list_transactions"], account_id, before, limit
        )
        return [_transaction(r) for r in records]

    async def transaction_by_key(self, account_id: int, key: str) -> Transaction | None:
        record = await self._db.fetchrow(self._queries["transaction_by_key"], account_id, key)
        return _transaction(record) if record else None


async def apply_transaction(
    conn: Connection,
    account_id: int,
    kind: Kind,
    amount: int,
    *,
    currency: str | None,
    metadata: dict[str, Any],
    idempotency_key: str | None,
    trace: TraceContext | None = None,
) -> Outcome:
    """Insert one transaction; the trigger applies it or refuses it, and its event keeps
    ``trace``.

    Runs in its own transaction (a savepoint inside an open one), so that a refusal leaves
    an enclosing transaction usable. A unique violation of the idempotency key is raised.
    """
    queries = load_queries("accounts")
    try:
        async with conn.transaction():
            if trace is not None:
                await conn.execute(queries["set_trace"], trace.traceparent, trace.tracestate)
            record = await conn.fetchrow(
                queries["insert_transaction"],
                account_id,
                kind,
                amount,
                currency,
                idempotency_key,
                json.dumps(metadata),
            )
    except asyncpg.UniqueViolationError:
        raise
    except asyncpg.PostgresError as exc:
        return _ledger_refusal(exc, account_id, amount)
    assert record is not None
    return Outcome(201, _transaction(record).model_dump(mode="json"))
