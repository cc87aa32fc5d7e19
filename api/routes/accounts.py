"""Accounts, top-ups, debits and transaction history."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from api.errors import PROBLEM_CONTENT_TYPE
from api.idempotency import run_once
from api.inputs import idempotency_key, path_id, read_json, read_query
from api.ledger import Connection, Ledger, Outcome, apply_transaction
from api.models import AccountCreate, TransactionCreate, TransactionPage
from api.responses import Kind, TransactionList, respond
from api.state import POOL, SETTINGS
from notifier.tracecontext import from_headers

REPLAYED_HEADER = "Idempotent-Replayed"


async def create_account(request: web.Request) -> web.Response:
    body = await read_json(request, AccountCreate)
    account = await Ledger(request.app[POOL]).create_account(body.currency)
    return respond(account, status=201, headers={"Location": f"/accounts/{account.id}"})


async def get_account(request: web.Request) -> web.Response:
    account_id = path_id(request, "account_id")
    return respond(await Ledger(request.app[POOL]).account(account_id))


async def list_transactions(request: web.Request) -> web.Response:
    account_id = path_id(request, "account_id")
    page = read_query(request, TransactionPage)
    ledger = Ledger(request.app[POOL])
    await ledger.account(account_id)  # 404 for an unknown account, not an empty page
    items = await ledger.transactions(account_id, before=page.before, limit=page.limit + 1)
    more = len(items) > page.limit
    items = items[: page.limit]
    return respond(TransactionList(items=items, next_before=items[-1].id if more else None))


def _outcome_response(outcome: Outcome, *, replayed: bool) -> web.Response:
    headers = {REPLAYED_HEADER: "true"} if replayed else {}
    content_type = PROBLEM_CONTENT_TYPE if outcome.status >= 400 else "application/json"
    return web.Response(
        status=outcome.status,
        text=json.dumps(outcome.body),
        content_type=content_type,
        headers=headers,
    )


async def _post_transaction(request: web.Request, kind: Kind) -> web.Response:
    account_id = path_id(request, "account_id")
    body = await read_json(request, TransactionCreate)
    key = idempotency_key(request)
    pool = request.app[POOL]
    fields: dict[str, Any] = {
        "currency": body.currency,
        "metadata": body.metadata,
        "idempotency_key": key,
        "trace": from_headers(
            request.headers.getall("traceparent", []), request.headers.getall("tracestate", [])
        ),
    }
    if key is None:
        async with pool.acquire() as conn:
            outcome = await apply_transaction(conn, account_id, kind, body.amount, **fields)
        return _outcome_response(outcome, replayed=False)

    async def apply(conn: Connection) -> Outcome:
        return await apply_transaction(conn, account_id, kind, body.amount, **fields)

    outcome, replayed = await run_once(
        pool,
        account_id=account_id,
        key=key,
        operation=kind,
        request=body.model_dump(mode="json"),
        ttl_seconds=request.app[SETTINGS].idempotency_ttl_seconds,
        apply=apply,
    )
    return _outcome_response(outcome, replayed=replayed)


async def top_up(request: web.Request) -> web.Response:
    return await _post_transaction(request, "top_up")


async def debit(request: web.Request) -> web.Response:
    return await _post_transaction(request, "debit")


def add_routes(app: web.Application) -> None:
    """Register the account routes."""
    app.router.add_post("/accounts", create_account)
    app.router.add_get(r"/accounts/{account_id}", get_account, allow_head=False)
    app.router.add_post(r"/accounts/{account_id}/top-ups", top_up)
    app.router.add_post(r"/accounts/{account_id}/debits", debit)
    app.router.add_get(r"/accounts/{account_id}/transactions", list_transactions, allow_head=False)
