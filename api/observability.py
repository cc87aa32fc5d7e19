"""Access logs, request ids and Prometheus metrics for every request."""

from __future__ import annotations

import asyncio
import re
import time
import uuid

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import Counter, Histogram

from notifier.observability.logging import get_logger

log = get_logger("api.access")

REQUEST_ID_HEADER = "X-Request-ID"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:/+=-]{1,128}$")
# Methods outside this set share one label, so that made-up methods cannot grow the
# number of time series.
_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED_ROUTE = "<unmatched>"

REQUESTS = Counter(
    "api_requests_total",
    "HTTP requests answered by the API, by method, route template and status.",
    ["method", "route", "status"],
)
REQUEST_DURATION = Histogram(
    "api_request_duration_seconds",
    "Time to answer an HTTP request, by method and route template.",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)


def route_template(request: web.Request) -> str:
    """The matched route's template (``/accounts/{account_id}``), never the raw path."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else UNMATCHED_ROUTE


def _request_id(request: web.Request) -> str:
    given = request.headers.get(REQUEST_ID_HEADER, "")
    return given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Tag the request with an id, time it, log it once and count it."""
    request_id = _request_id(request)
    started = time.perf_counter()
    status = 500
    try:
        with structlog.contextvars.bound_contextvars(request_id=request_id):
            response = await handler(request)
        status = response.status
        response.headers[REQUEST_ID_HEADER] = request_id
        return response
    except web.HTTPException as exc:
        status = exc.status
        exc.headers[REQUEST_ID_HEADER] = request_id
        raise
    except asyncio.CancelledError:
        status = 499  # the client went away before the answer
        raise
    finally:
        elapsed = time.perf_counter() - started
        method = request.method if request.method in _KNOWN_METHODS else "OTHER"
        route = route_template(request)
        REQUESTS.labels(method=method, route=route, status=str(status)).inc()
        REQUEST_DURATION.labels(method=method, route=route).observe(elapsed)
        log.info(
            "http_request",
            request_id=request_id,
            method=method,
            route=route,
            status=status,
            duration_ms=round(elapsed * 1000, 2),
        )
