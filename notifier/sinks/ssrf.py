"""Where deliveries may go: the guard against server-side request forgery (SSRF).

A subscription URL must be http(s), and by default every address its host resolves to
must be public: not loopback, private, link-local (cloud metadata at 169.254.169.254),
shared, reserved or multicast, nor an IPv6 form that carries such an IPv4 address. The
check runs when a subscription is created and again on every connection the daemon
makes, because DNS answers can change in between.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class UnsafeTarget(ValueError):
    """A target URL points at an address deliveries must not reach."""


# IPv6 prefixes whose addresses carry an IPv4 address in their low 32 bits: a packet to
# one reaches that IPv4 address (through a translator, or an IPv4 stack that accepts
# the deprecated compatible form), so it is that address that must be public.
_IPV4_IN_LOW_BITS = (
    ipaddress.IPv6Network("::/96"),  # IPv4-compatible, apart from :: and ::1
    ipaddress.IPv6Network("64:ff9b::/96"),  # NAT64 well-known prefix (RFC 6052)
)
# The local-use NAT64 prefix (RFC 8215) puts the IPv4 address where the operator's prefix
# length says, which an address does not tell; it is the operator's own translator,
# never a public destination.
_NAT64_LOCAL_USE = ipaddress.IPv6Network("64:ff9b:1::/48")


def _embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address leads to, if it is a form that embeds them."""
    if address.ipv4_mapped is not None:
        return [address.ipv4_mapped]
    if address.sixtofour is not None:
        return [address.sixtofour]
    if address.teredo is not None:
        return list(address.teredo)  # the relay server and the client behind it
    special = address.is_loopback or address.is_unspecified  # ::1 and ::, not IPv4 forms
    if not special and any(address in prefix for prefix in _IPV4_IN_LOW_BITS):
        return [ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)]
    return []


def _is_public_itself(address: Address) -> bool:
    # Python 3.11 calls some of these global (site-local fec0::/10, global-scope
    # multicast, the reserved ::/8 forms), so each is refused by name.
    if isinstance(address, ipaddress.IPv6Address) and (
        address.is_site_local or address in _NAT64_LOCAL_USE
    ):
        return False
    return address.is_global and not (
        address.is_multicast or address.is_reserved or address.is_unspecified
    )


def is_public(address: Address) -> bool:
    """Whether an address is on the public internet.

    An IPv6 address that embeds IPv4 addresses (mapped, compatible, 6to4, NAT64,
    Teredo) is public only if every address it embeds is: ``ipaddress`` calls
    ``2002:7f00:1::`` (6to4 for 127.0.0.1) global.
    """
    embedded = _embedded_ipv4(address) if isinstance(address, ipaddress.IPv6Address) else []
    if embedded:
        return all(_is_public_itself(inner) for inner in embedded)
    return _is_public_itself(address)


def _literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def check_address(host: str, address: Address) -> None:
    """Raise UnsafeTarget unless ``address`` (what ``host`` resolved to) is public."""
    if not is_public(address):
        shown = host if str(address) == host.strip("[]") else f"{host} ({address})"
        if isinstance(address, ipaddress.IPv6Address) and (inner := _embedded_ipv4(address)):
            shown += f", which carries {' and '.join(map(str, inner))},"
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
