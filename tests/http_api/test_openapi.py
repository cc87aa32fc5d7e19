"""The OpenAPI document matches the server: route for route, and under generated traffic."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import requests
import schemathesis
from aiohttp import web
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.app import create_app
from notifier.settings import Settings
from tests.http_api.conftest import TOKEN

# Examples per operation and generation mode: about 20 operations x 2 modes, a few
# seconds in all, so that the property run stays a small part of the suite.
EXAMPLES = 25

# Framing is the HTTP server's business, not the API's: a generated header like these (a
# Content-Length of garbage) gets aiohttp's plain 400 before any route runs.
FRAMING_HEADERS = {"content-length", "transfer-encoding", "host", "connection", "expect", "upgrade"}

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


async def test_every_route_is_documented_and_every_documented_route_exists(
    client: TestClient[Any, Any],
) -> None:
    response = await client.get("/openapi.json")
    assert response.status == 200
    document = await response.json()
    assert document["openapi"].startswith("3.1")
    documented = {
        (method.upper(), path)
        for path, operations in document["paths"].items()
        for method in operations
    }
    served = {
        (route.method, route.resource.canonical)
        for route in client.app.router.routes()
        if route.resource is not None and route.method != "HEAD"
    }
    assert documented == served
    open_routes = {
        path
        for path, operations in document["paths"].items()
        if all(operation.get("security") == [] for operation in operations.values())
    }
    assert open_routes == {"/healthz", "/readyz", "/metrics", "/openapi.json"}


@pytest.fixture
def live_api(api_settings: Settings, dba: psycopg.Connection[Any]) -> Iterator[str]:
    """The app on a real port, served from its own thread: schemathesis calls it blocking."""
    # Accounts and subscriptions with small ids, so generated ids find something.
    dba.execute("INSERT INTO accounts (currency) SELECT 'USD' FROM generate_series(1, 5)")
    dba.execute(
        "INSERT INTO transactions (account_id, kind, amount) "
        "SELECT id, 'top_up', 1000000 FROM accounts"
    )
    dba.execute(
        "INSERT INTO notifier.subscriptions (url, secret) "
        "SELECT 'https://example.com/' || n, 'whsec_' || encode(sha256(n::text::bytea), 'base64') "
        "FROM generate_series(1, 3) AS n"
    )
    started = threading.Event()
    state: dict[str, Any] = {}

    async def serve() -> None:
        runner = web.AppRunner(create_app(api_settings))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        state["port"] = runner.addresses[0][1]
        state["stop"] = stop = asyncio.Event()
        state["loop"] = asyncio.get_running_loop()
        started.set()
        try:
            await stop.wait()
        finally:
            await runner.cleanup()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), name="live-api")
    thread.start()
    assert started.wait(timeout=30), "the API did not start"
    try:
        yield f"http://127.0.0.1:{state['port']}"
    finally:
        state["loop"].call_soon_threadsafe(state["stop"].set)
        thread.join(timeout=30)


def _exercise(
    operation: Any, mode: GenerationMode, base_url: str, session: requests.Session
) -> None:
    """Send generated requests for one operation; hypothesis shrinks any failure."""
    checks = [*CHECKS, negative_data_rejection] if mode.is_negative else CHECKS

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    def call(case: schemathesis.Case) -> None:
        for name in [name for name in case.headers or {} if name.lower() in FRAMING_HEADERS]:
            del case.headers[name]
        response = case.call(base_url=base_url, session=session)
        case.validate_response(response, checks=checks)

    try:
        call()
    except Unsatisfiable:
        # An operation with no inputs (GET /healthz) has no invalid request to generate.
        if not mode.is_negative:
            raise


@pytest.mark.timeout(180)
def test_generated_requests_get_no_5xx_and_only_documented_responses(live_api: str) -> None:
    # Schemathesis sends the token itself, so that its negative cases may leave it out.
    config = schemathesis.Config.from_dict({"auth": {"openapi": {"bearerAuth": {"bearer": TOKEN}}}})
    schema = schemathesis.openapi.from_url(f"{live_api}/openapi.json", config=config)
    with requests.Session() as session:
        for result in schema.get_all_operations():
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                _exercise(result.ok(), mode, live_api, session)
