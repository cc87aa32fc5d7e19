"""Probes, metrics and the API description: open to orchestrators and scrapers."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from api.errors import Problem
from api.responses import Status, respond
from api.state import OPENAPI_DOCUMENT, POOL, SETTINGS
from notifier.db.errors import RETRYABLE_ERRORS, one_line
from notifier.db.pool import DatabaseUnavailable, connect, load_queries
from notifier.observability.logging import get_logger

log = get_logger("api.operations")

READY_TIMEOUT_SECONDS = 2.0


async def healthz(_request: web.Request) -> web.Response:
    """Alive: the process answers. Says nothing about the database."""
    return respond(Status(status="ok"))


async def readyz(request: web.Request) -> web.Response:
    """Ready: the database answers a query within a short timeout; 503 otherwise.

    The probe is open to anyone who can reach the API, so the answer does not say where
    the database is or why it failed; the log says both.
    """
    pool = request.app[POOL]
    ping = load_queries("api")["ping"]
    try:
        async with pool.acquire(timeout=READY_TIMEOUT_SECONDS) as conn:
            await conn.fetchval(ping, timeout=READY_TIMEOUT_SECONDS)
        return respond(Status(status="ready"))
    except RETRYABLE_ERRORS:
        # Pooled connections the server dropped fail with obscure errors; a fresh
        # connection tells them from a database that is really gone, and says why.
        await pool.expire_connections()
    try:
        fresh = await connect(request.app[SETTINGS].database_url)
        try:
            await fresh.fetchval(ping, timeout=READY_TIMEOUT_SECONDS)
        finally:
            await fresh.close(timeout=READY_TIMEOUT_SECONDS)
    except DatabaseUnavailable as exc:
        reason = str(exc)
    except RETRYABLE_ERRORS as exc:
        reason = one_line(exc)
    else:
        return respond(Status(status="ready"))
    log.warning("not_ready", reason=reason)
    raise Problem("database-unavailable", "not ready: the database cannot be reached")


async def metrics(_request: web.Request) -> web.Response:
    """Prometheus text exposition of the process's metrics."""
    return web.Response(
        body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(request.app[OPENAPI_DOCUMENT])


def add_routes(app: web.Application) -> None:
    """Register the operational routes."""
    app.router.add_get("/healthz", healthz, allow_head=False)
    app.router.add_get("/readyz", readyz, allow_head=False)
    app.router.add_get("/metrics", metrics, allow_head=False)
    app.router.add_get("/openapi.json", openapi, allow_head=False)
