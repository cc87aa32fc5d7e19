"""The SSRF guard: private and link-local targets are refused unless allowed."""

from __future__ import annotations

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from notifier.targets import GuardedResolver, UnsafeTarget, check_url


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.1.2.3/",
        "http://192.168.0.10/",
        "http://172.16.5.4/",
        "http://100.64.0.1/",
        "http://0.0.0.0/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[fe80::1]/",
        "http://localhost:9000/",
    ],
)
async def test_non_public_targets_are_refused_by_default(url: str) -> None:
    with pytest.raises(UnsafeTarget, match="not a public address"):
        await check_url(url, allow_private=False)
    await check_url(url, allow_private=True)


async def test_public_literal_is_accepted() -> None:
    await check_url("https://93.184.215.14/hook", allow_private=False)
    await check_url("https://[2606:4700::6810:84e5]/hook", allow_private=False)


async def test_unresolvable_host_is_refused() -> None:
    with pytest.raises(UnsafeTarget, match="does not resolve"):
        await check_url("http://no-such-host.invalid/", allow_private=False)


async def test_guarded_resolver_stops_a_connection_to_a_private_address() -> None:
    async def hook(_request: web.Request) -> web.Response:
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/", hook)
    async with TestServer(app, host="127.0.0.1") as server:
        url = f"http://localhost:{server.port}/"
        connector = aiohttp.TCPConnector(resolver=GuardedResolver())
        async with aiohttp.ClientSession(connector=connector) as session:
            with pytest.raises(UnsafeTarget):
                await session.post(url)
        async with aiohttp.ClientSession() as session, session.post(url) as response:
            assert response.status == 204  # the same URL, unguarded, is reachable
