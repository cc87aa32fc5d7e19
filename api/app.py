"""The application factory: settings and a pool in, a wired aiohttp application out."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import asyncpg
from aiohttp import web

from api.auth import bearer_auth
from api.errors import problem_middleware
from api.idempotency import PURGE_INTERVAL_SECONDS, purge_expired
from api.observability import observe
from api.openapi import build_document
from api.routes import accounts, deliveries, operations, subscriptions
from api.state import OPENAPI_DOCUMENT, POOL, SETTINGS
from notifier.db.pool import create_pool
from notifier.observability.logging import get_logger
from notifier.observability.redaction import redact_url
from notifier.settings import Settings

log = get_logger("api")

POOL_MAX_SIZE = 10


class MissingToken(ValueError):
    """The API was asked to run with authentication but has no token."""


def _report_death(task: asyncio.Task[None]) -> None:
    """A background task must only end by cancellation; anything else is said loudly."""
    if not task.cancelled() and task.exception() is not None:
        log.critical("background_task_died", task=task.get_name(), exc_info=task.exception())


def _database(
    settings: Settings, given: asyncpg.Pool | None
) -> Callable[[web.Application], contextlib.AbstractAsyncContextManager[None]]:
    """Cleanup context: the pool (built here unless given) and the idempotency purge."""

    @contextlib.asynccontextmanager
    async def context(app: web.Application) -> AsyncIterator[None]:
        pool = (
            given
            if given is not None
            else await create_pool(settings.database_url, min_size=0, max_size=POOL_MAX_SIZE)
        )
        app[POOL] = pool
        purge = asyncio.create_task(
            purge_expired(pool, PURGE_INTERVAL_SECONDS), name="idempotency-purge"
        )
        purge.add_done_callback(_report_death)
        try:
            yield
        finally:
            purge.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await purge
            if given is None:
                await pool.close()

    return context


def create_app(
    settings: Settings, pool: asyncpg.Pool | None = None, *, insecure_no_auth: bool = False
) -> web.Application:
    """The API application. A given pool is used and left open; otherwise one is built
    from ``settings.database_url`` at start-up and closed at shutdown.

    Without ``settings.api_token`` it refuses to build unless ``insecure_no_auth``.
    """
    token = settings.api_token.get_secret_value() if settings.api_token else ""
    if not token and not insecure_no_auth:
        raise MissingToken(
            "NOTIFIER_API_TOKEN is not set; the API does not run without authentication "
            "(pass --insecure-no-auth for local development only)"
        )
    app = web.Application(
        client_max_size=settings.api_max_body_bytes,
        middlewares=[observe, problem_middleware, bearer_auth(token or None)],
    )
    app[SETTINGS] = settings
    app.cleanup_ctx.append(_database(settings, pool))
    accounts.add_routes(app)
    subscriptions.add_routes(app)
    operations.add_routes(app)
    deliveries.add_routes(app)
    app[OPENAPI_DOCUMENT] = build_document(app)
    return app


def run_api(settings: Settings, *, insecure_no_auth: bool = False) -> None:
    """Serve the API until SIGTERM or SIGINT; in-flight requests get the grace period."""
    app = create_app(settings, insecure_no_auth=insecure_no_auth)

    async def announce(_app: web.Application) -> None:
        log.info(
            "api_starting",
            host=settings.api_host,
            port=settings.api_port,
            database=redact_url(settings.database_url),
            auth="disabled" if insecure_no_auth and not settings.api_token else "bearer",
        )

    app.on_startup.append(announce)
    web.run_app(
        app,
        host=settings.api_host,
        port=settings.api_port,
        # aiohttp reads a timeout of 0 as "wait forever"; a grace of 0 means "do not wait".
        shutdown_timeout=settings.shutdown_grace_seconds or 0.001,
        access_log=None,
        print=None,
        handle_signals=True,
    )
    log.info("api_stopped")
