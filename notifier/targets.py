"""Where deliveries may go: the guard against server-side request forgery (SSRF).

A subscription URL must be http(s), and by default every address its host resolves to
must be public: not loopback, private, link-local (cloud metadata at 169.254.169.254),
shared, reserved or multicast. The check runs when a subscription is created and again
on every connection the daemon makes, because DNS answers can change in between.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class UnsafeTarget(ValueError):
    """A target URL points at an address deliveries must not reach."""


def is_public(address: Address) -> bool:
    """Whether an address is on the public internet."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def _literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def check_address(host: str, address: Address) -> None:
    """Raise UnsafeTarget unless ``address`` (what ``host`` resolved to) is public."""
    if not is_public(address):
        shown = host if str(address) == host.strip("[]") else f"{host} ({address})"
        raise UnsafeTarget(
            f"{shown} is not a public address; deliveries to loopback, private and "
            "link-local networks are refused unless NOTIFIER_ALLOW_PRIVATE_TARGETS=true"
        )


async def check_url(url: str, *, allow_private: bool) -> None:
    """Refuse a target URL whose host is, or resolves to, a non-public address.

    An unresolvable host is refused too: it cannot be checked, and cannot be delivered to.
    """
    host = urlsplit(url).hostname
    if not host:
        raise UnsafeTarget("the URL names no host")
    if allow_private:
        return
    literal = _literal(host)
    if literal is not None:
        check_address(host, literal)
        return
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise UnsafeTarget(f"{host} does not resolve ({exc.strerror or exc})") from None
    for *_, sockaddr in infos:
        check_address(host, ipaddress.ip_address(sockaddr[0]))


def check_literal(url: str) -> None:
    """Refuse a URL whose host is a non-public IP literal; names are left to the resolver."""
    host = urlsplit(url).hostname
    literal = _literal(host) if host else None
    if literal is not None:
        check_address(host or "", literal)


class GuardedResolver(AbstractResolver):
    """An aiohttp resolver that refuses names resolving to non-public addresses.

    Checking at connection time closes the gap a check at creation time leaves open
    (a name that later resolves somewhere private). IP literals never reach a resolver:
    call ``check_url`` for those before each request.
    """

    def __init__(self, inner: AbstractResolver | None = None) -> None:
        self._inner = inner or DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        for result in results:
            check_address(host, ipaddress.ip_address(result["host"]))
        return results

    async def close(self) -> None:
        await self._inner.close()
