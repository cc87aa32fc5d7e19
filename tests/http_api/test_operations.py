"""Auth, probes, metrics, request ids, access logs and HTTP-level errors."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import aiohttp
import psycopg
import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from api.app import MissingToken, create_app
from notifier.settings import Settings
from tests.http_api.conftest import TOKEN, new_account
from tests.pg import with_database

Client = TestClient[Any, Any]


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer ", f"Basic {TOKEN}", "Bearer wrong-token", f"Bearer {TOKEN}x"],
)
async def test_protected_routes_need_the_bearer_token(
    anon: aiohttp.ClientSession, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization is not None else {}
    for method, path in [
        ("POST", "/accounts"),
        ("GET", "/accounts/1"),
        ("GET", "/subscriptions"),
        ("DELETE", "/subscriptions/1"),
        ("GET", "/no/such/route"),
    ]:
        async with anon.request(
            method, path, json={"currency": "USD"}, headers=headers
        ) as response:
            assert response.status == 401, (method, path)
            assert response.content_type == "application/problem+json"
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
            assert TOKEN not in await response.text()


async def test_the_token_is_accepted_case_insensitively_by_scheme(
    anon: aiohttp.ClientSession,
) -> None:
    async with anon.get("/accounts/1", headers={"Authorization": f"bearer {TOKEN}"}) as response:
        assert response.status == 404


async def test_probes_metrics_and_the_document_are_open(anon: aiohttp.ClientSession) -> None:
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
        async with anon.get(path) as response:
            assert response.status == 200, path
    async with anon.get("/readyz") as response:
        assert await response.json() == {"status": "ready"}


def test_the_app_refuses_to_build_without_a_token(database_url: str) -> None:
    with pytest.raises(MissingToken, match="NOTIFIER_API_TOKEN"):
        create_app(Settings(database_url=database_url, api_token=None))


async def test_insecure_no_auth_opens_every_route(database_url: str) -> None:
    app = create_app(Settings(database_url=database_url), insecure_no_auth=True)
    async with TestClient(TestServer(app)) as client:
        response = await client.post("/accounts", json={"currency": "USD"})
        assert response.status == 201


async def test_readyz_is_503_without_revealing_the_database_when_it_is_gone(
    pg_server: str, template_db: str
) -> None:
    name = f"notifier_test_gone_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    # The probe is open to anyone: its answer says neither where the database is nor
    # why it failed (the log does), and never the URL's credentials.
    url = with_database(pg_server, name)
    url += ("&" if "?" in url else "?") + "sslpassword=S3cr3t"
    settings = Settings(database_url=url, api_token=SecretStr(TOKEN))
    async with TestClient(TestServer(create_app(settings))) as client:
        assert (await client.get("/readyz")).status == 200
        with psycopg.connect(pg_server, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        response = await client.get("/readyz")
        assert response.status == 503
        body = await response.json()
        assert body["type"].endswith("database-unavailable")
        assert body["detail"] == "not ready: the database cannot be reached"
        assert name not in json.dumps(body)
        assert "S3cr3t" not in json.dumps(body)
        # Alive all the same: liveness does not depend on the database.
        assert (await client.get("/healthz")).status == 200
        # Other routes say the same instead of failing with a 500.
        response = await client.get("/accounts/1", headers={"Authorization": f"Bearer {TOKEN}"})
        assert response.status == 503


async def test_unknown_route_and_method_are_problems(client: Client) -> None:
    response = await client.get("/nope")
    assert response.status == 404
    assert response.content_type == "application/problem+json"
    assert (await response.json())["title"] == "Not Found"

    response = await client.put("/accounts", json={})
    assert response.status == 405
    assert response.content_type == "application/problem+json"
    assert "POST" in response.headers["Allow"]


def _sample(text: str, name: str, labels: dict[str, str]) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{"):
            series, value = line.rsplit(" ", 1)
            found = dict(re.findall(r'(\w+)="([^"]*)"', series))
            if found == labels:
                return float(value)
    return 0.0


async def test_metrics_count_requests_by_route_template(client: Client) -> None:
    labels = {"method": "GET", "route": "/accounts/{account_id}", "status": "404"}
    before = _sample(await (await client.get("/metrics")).text(), "api_requests_total", labels)
    for account_id in (123456, 654321, 777):
        assert (await client.get(f"/accounts/{account_id}")).status == 404
    response = await client.get("/metrics")
    assert response.content_type == "text/plain"
    text = await response.text()
    assert _sample(text, "api_requests_total", labels) == before + 3
    assert "/accounts/123456" not in text
    duration = {"method": "GET", "route": "/accounts/{account_id}"}
    assert _sample(text, "api_request_duration_seconds_count", duration) >= 3


async def test_request_id_is_echoed_or_generated_and_logged(client: Client) -> None:
    account_id = await new_account(client)
    with structlog.testing.capture_logs() as logs:
        given = await client.get(f"/accounts/{account_id}", headers={"X-Request-ID": "req-abc.1"})
        generated = await client.get(f"/accounts/{account_id}", headers={"X-Request-ID": "bad id!"})
    assert given.headers["X-Request-ID"] == "req-abc.1"
    assert re.fullmatch(r"[0-9a-f]{32}", generated.headers["X-Request-ID"])
    access = [entry for entry in logs if entry["event"] == "http_request"]
    assert [entry["request_id"] for entry in access] == [
        "req-abc.1",
        generated.headers["X-Request-ID"],
    ]
    assert access[0]["route"] == "/accounts/{account_id}"
    assert access[0]["status"] == 200
    assert access[0]["duration_ms"] >= 0
    assert TOKEN not in repr(logs)


async def test_an_unexpected_error_is_a_500_problem_without_internals(
    api_settings: Settings,
) -> None:
    app = create_app(api_settings)

    async def broken(_request: web.Request) -> web.Response:
        raise RuntimeError("secret internals: password=hunter2")

    app.router.add_get("/broken", broken)
    async with TestClient(TestServer(app), headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        with structlog.testing.capture_logs() as logs:
            response = await client.get("/broken")
        assert response.status == 500
        assert response.content_type == "application/problem+json"
        text = await response.text()
        assert "hunter2" not in text
        assert "Traceback" not in text
        assert (await response.json())["type"].endswith("internal-error")
        assert [entry["event"] for entry in logs if entry["log_level"] == "error"] == [
            "unhandled_error"
        ]
