"""Bearer-token authentication, compared in constant time."""

from __future__ import annotations

import hmac

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from api.errors import Problem

# Probes, metrics and the API description are open: orchestrators and scrapers call them.
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json"})


def _presented_token(request: web.Request) -> bytes | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip().encode("utf-8", "surrogateescape")


def bearer_auth(token: str | None) -> Middleware:
    """A middleware requiring ``Authorization: Bearer <token>``; None turns auth off."""
    expected = token.encode("utf-8") if token is not None else None

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if expected is None or request.path in PUBLIC_PATHS:
            return await handler(request)
        presented = _presented_token(request)
        if presented is None or not hmac.compare_digest(presented, expected):
            raise Problem(
                "unauthorized",
                "send Authorization: Bearer <token>"
                if presented is None
                else "the bearer token is not valid",
                headers={"WWW-Authenticate": 'Bearer realm="notifier"'},
            )
        return await handler(request)

    return middleware
