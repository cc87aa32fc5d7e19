"""The SSRF guard: private and link-local targets are refused unless allowed."""

from __future__ import annotations

import ipaddress
import re
import socket

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.test_utils import TestServer

from notifier.sinks.http import GuardedResolver
from notifier.sinks.ssrf import UnsafeTarget, check_literal, check_url, is_public
from tests.support import IPV6_FORMS_OF_PRIVATE_TARGETS

# IPv6 forms that carry an IPv4 address inside: each is judged by the address it carries.
LOOPBACK_OR_METADATA_INSIDE = [
    "::127.0.0.1",  # IPv4-compatible
    "::a9fe:a9fe",  # IPv4-compatible 169.254.169.254
    "::ffff:169.254.169.254",  # IPv4-mapped
    "64:ff9b::7f00:1",  # NAT64, well-known prefix
    "64:ff9b::a9fe:a9fe",
    "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
    "2002:7f00:1::",  # 6to4
    "2002:a9fe:a9fe::",
    "2002:c0a8:1::1",  # 6to4 of 192.168.0.1
    "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo, client 127.0.0.1
    "2001:0:a9fe:a9fe:8000:63bf:f7f7:f7f7",  # Teredo, server 169.254.169.254
]
# Refused whatever they carry: flags ``ipaddress`` sets but ``is_global`` misses.
NEVER_PUBLIC = [
    "64:ff9b:1::808:808",  # NAT64 local-use prefix: the operator's own translator
    "::ffff:0:808:808",  # IPv4-translated (SIIT), reserved
    "::",  # unspecified
    "0.0.0.0",
    "240.0.0.1",  # reserved
    "255.255.255.255",
    "224.0.0.1",  # multicast
    "ff0e::1",  # global-scope multicast
    "fec0::1",  # site-local
    "fc00::1",  # unique local
    "100::1",  # discard-only
    "2001:db8::1",  # documentation
]
PUBLIC = [
    "93.184.215.14",
    "2606:4700::6810:84e5",
    "::ffff:93.184.215.14",
    "64:ff9b::5db8:d70e",  # NAT64 of 93.184.215.14
    "2002:5db8:d70e::1",  # 6to4 of 93.184.215.14
    "2001:0:5db8:d70e:8000:63bf:a247:28f1",  # Teredo, both ends public
]


@pytest.mark.parametrize("address", LOOPBACK_OR_METADATA_INSIDE + NEVER_PUBLIC)
def test_addresses_that_are_not_public(address: str) -> None:
    assert not is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses(address: str) -> None:
    assert is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "url",
    [
        *IPV6_FORMS_OF_PRIVATE_TARGETS,
        "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]:8080/",
        "http://[ff0e::1]/",
        "http://[fec0::1]/",
    ],
)
async def test_ipv6_literals_embedding_private_addresses_are_refused(url: str) -> None:
    with pytest.raises(UnsafeTarget, match="not a public address"):
        await check_url(url, allow_private=False)
    with pytest.raises(UnsafeTarget, match="not a public address"):
        check_literal(url)  # what the daemon checks before each attempt


class _Answers(AbstractResolver):
    """A resolver that answers every name with fixed addresses."""

    def __init__(self, *addresses: str) -> None:
        self._addresses = addresses

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(hostname=host, host=address, port=port, family=family, proto=0, flags=0)
            for address in self._addresses
        ]

    async def close(self) -> None:
        pass


@pytest.mark.parametrize("address", ["2002:a9fe:a9fe::", "64:ff9b::7f00:1", "::127.0.0.1"])
async def test_guarded_resolver_refuses_a_name_resolving_to_an_embedded_private_address(
    address: str,
) -> None:
    resolver = GuardedResolver(_Answers("2606:4700::6810:84e5", address))
    shown = re.escape(f"hooks.example.com ({ipaddress.ip_address(address)})")
    with pytest.raises(UnsafeTarget, match=f"^{shown}, which carries 1"):
        await resolver.resolve("hooks.example.com", 443, socket.AF_INET6)
    public = GuardedResolver(_Answers("2606:4700::6810:84e5", "64:ff9b::5db8:d70e"))
    assert len(await public.resolve("hooks.example.com", 443, socket.AF_INET6)) == 2


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
