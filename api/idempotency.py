"""Idempotency keys (the Stripe model): the first response is stored and replayed.

A request with a key claims ``(account_id, key)`` in ``notifier.idempotency_keys`` inside
the database transaction that applies it, and stores its response in that same
transaction. A concurrent request with the same key blocks on the claim until the first
commits, then replays what was stored. Nothing is stored when nothing was applied
(404, 422): the claim rolls back with the request.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from api.errors import Problem
from api.ledger import Connection, Ledger, Outcome
from notifier.db.errors import is_retryable, one_line
from notifier.db.pool import load_queries
from notifier.observability.logging import get_logger

log = get_logger("api.idempotency")

PURGE_INTERVAL_SECONDS = 300.0


def request_hash(operation: str, request: dict[str, Any]) -> str:
    """SHA-256 of the operation and the validated request, independent of key order."""
    canonical = json.dumps({"operation": operation, "request": request}, sort_keys=True)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


async def run_once(
    pool: asyncpg.Pool,
    *,
    account_id: int,
    key: str,
    operation: str,
    request: dict[str, Any],
    ttl_seconds: int,
    apply: Callable[[Connection], Awaitable[Outcome]],
) -> tuple[Outcome, bool]:
    """Run ``apply`` at most once per (account, key); return (outcome, replayed)."""
    queries = load_queries("idempotency")
    fingerprint = request_hash(operation, request)
    async with pool.acquire() as conn, conn.transaction():
        claimed = await conn.fetchval(
            queries["claim"], account_id, key, operation, fingerprint, float(ttl_seconds)
        )
        if claimed is None:
            return await _replay(conn, queries["get"], account_id, key, fingerprint), True
        try:
            outcome = await apply(conn)
        except asyncpg.UniqueViolationError:
            # The ledger row carries the key forever, its stored response only for the
            # TTL: after that, a retry of the same request still gets its transaction.
            outcome = await _from_ledger(conn, account_id, key, operation, request)
        await conn.execute(
            queries["store_response"], account_id, key, outcome.status, json.dumps(outcome.body)
        )
        return outcome, False


async def _replay(
    conn: Connection, query: str, account_id: int, key: str, fingerprint: str
) -> Outcome:
    stored = await conn.fetchrow(query, account_id, key)
    if stored is None or stored["response_status"] is None:
        raise Problem(
            "idempotency-key-in-use",
            f"a request with this Idempotency-Key on account {account_id} is still running",
        )
    if stored["request_hash"] != fingerprint:
        raise _reused(account_id)
    return Outcome(stored["response_status"], json.loads(stored["response_body"]))


async def _from_ledger(
    conn: Connection,
    account_id: int,
    key: str,
    operation: str,
    request: dict[str, Any],
) -> Outcome:
    existing = await Ledger(conn).transaction_by_key(account_id, key)
    same = existing is not None and (
        existing.kind == operation
        and existing.amount == request["amount"]
        and request["currency"] in (None, existing.currency)
        and existing.metadata == request["metadata"]
    )
    if not same or existing is None:
        raise _reused(account_id)
    return Outcome(201, existing.model_dump(mode="json"))


def _reused(account_id: int) -> Problem:
    return Problem(
        "idempotency-key-reused",
        f"this Idempotency-Key was already used on account {account_id} "
        "for a different request; use a new key",
    )


async def purge_expired(pool: asyncpg.Pool, interval_seconds: float) -> None:
    """Delete expired keys now and every ``interval_seconds``; runs until cancelled."""
    query = load_queries("idempotency")["purge_expired"]
    while True:
        try:
            result = await pool.execute(query)
            log.debug("idempotency_keys_purged", result=result)
        except Exception as exc:
            if not is_retryable(exc):
                raise
            log.warning("idempotency_purge_failed", error=one_line(exc))
        await asyncio.sleep(interval_seconds)
