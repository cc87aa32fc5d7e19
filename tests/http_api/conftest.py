"""Fixtures for the HTTP API: the real application on a real database, over real HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from api.app import create_app
from notifier.settings import Settings

TOKEN = "test-token-5f0c1a"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def api_settings(database_url: str) -> Settings:
    # Private targets are allowed so that subscription tests need no DNS; the SSRF guard
    # has its own test with IP literals.
    return Settings(
        database_url=database_url, api_token=SecretStr(TOKEN), allow_private_targets=True
    )


@pytest.fixture
async def client(api_settings: Settings) -> AsyncIterator[TestClient[Any, Any]]:
    """A client of the app (which builds its own pool), sending the bearer token."""
    async with TestClient(TestServer(create_app(api_settings)), headers=AUTH) as client:
        yield client


@pytest.fixture
async def anon(client: TestClient[Any, Any]) -> AsyncIterator[aiohttp.ClientSession]:
    """A client of the same server that sends no token."""
    async with aiohttp.ClientSession(base_url=str(client.make_url("/"))) as session:
        yield session


async def new_account(client: TestClient[Any, Any], currency: str = "USD") -> int:
    response = await client.post("/accounts", json={"currency": currency})
    assert response.status == 201, await response.text()
    account_id: int = (await response.json())["id"]
    return account_id


async def top_up(client: TestClient[Any, Any], account_id: int, amount: int) -> dict[str, Any]:
    response = await client.post(f"/accounts/{account_id}/top-ups", json={"amount": amount})
    assert response.status == 201, await response.text()
    body: dict[str, Any] = await response.json()
    return body
