"""The webhook sink: one signed POST per attempt, as the event contract prescribes.

HTTP's own rules live here: the Standard Webhooks headers, the SSRF guard at connect
time, ``Retry-After`` on a 429 or 503, and 410 Gone, which disables the subscription.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import time
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from notifier import __version__
from notifier.envelope import Envelope
from notifier.sinks.base import Attempt, Destination, Outcome, Result
from notifier.sinks.message import CONTENT_TYPE, STRUCTURED_CONTENT_TYPE, structured
from notifier.sinks.registry import SinkOptions
from notifier.sinks.signing import signature_header
from notifier.sinks.ssrf import UnsafeTarget, check_address, check_literal

USER_AGENT = f"notifier/{__version__}"
SNIPPET_BYTES = 512
GONE_REASON = "the endpoint answered 410 Gone"
_DELTA_SECONDS = re.compile(r"[0-9]+")


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds asked for by a ``Retry-After`` header (delta-seconds or HTTP-date).

    Anything else (negative, fractional, non-ASCII digits, a date out of range) is
    ignored: the schedule applies.
    """
    if value is None:
        return None
    value = value.strip()
    if _DELTA_SECONDS.fullmatch(value):
        return float(value)
    try:
        when = parsedate_to_datetime(value)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0.0, (when - now).total_seconds())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def snippet_text(raw: bytes) -> str:
    """The start of a response body as text the database can store (no NUL, valid UTF-8)."""
    return raw.decode("utf-8", "replace").replace("\x00", "\ufffd")


def event_headers(
    msg_id: str, body: bytes, secrets: tuple[str, ...], now: float, content_type: str = CONTENT_TYPE
) -> dict[str, str]:
    """Standard Webhooks headers, signed with every secret that is currently valid."""
    timestamp = int(now)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(secrets, msg_id, timestamp, body),
        "content-type": content_type,
        "user-agent": USER_AGENT,
    }


def request(
    destination: Destination, envelope: Envelope, now: float, source: str
) -> tuple[bytes, dict[str, str]]:
    """The body and headers of one attempt: the subscription's own headers, then the
    contract's (which the subscription cannot override)."""
    if destination.format == "cloudevents":
        body, content_type = structured(envelope, source), STRUCTURED_CONTENT_TYPE
    else:
        body, content_type = envelope.body, CONTENT_TYPE
    headers = dict(destination.headers)
    headers.update(event_headers(str(envelope.id), body, destination.secrets, now, content_type))
    if envelope.trace is not None:
        headers.update(envelope.trace.items())
    return body, headers


def make(options: SinkOptions) -> WebhookSink:
    return WebhookSink(options)


class WebhookSink:
    """Delivers to ``http(s)://`` targets over one shared connection pool."""

    def __init__(self, options: SinkOptions) -> None:
        self._timeout = aiohttp.ClientTimeout(total=options.timeout_seconds)
        self._allow_private = options.allow_private
        self._source = options.source
        # The SSRF guard at connect time: DNS answers may have changed since the
        # subscription was created. IP literals bypass resolvers; each attempt checks them.
        resolver = None if options.allow_private else GuardedResolver()
        connector = aiohttp.TCPConnector(
            limit=options.max_connections, limit_per_host=0, resolver=resolver
        )
        self._session = aiohttp.ClientSession(
            connector=connector, cookie_jar=aiohttp.DummyCookieJar()
        )

    async def close(self) -> None:
        await self._session.close()

    async def deliver(self, destination: Destination, envelope: Envelope) -> Outcome:
        """POST the event once; never raises for a failed attempt, it classifies it."""
        attempt = Attempt()
        target = destination.target
        body, headers = request(destination, envelope, time.time(), self._source)
        failed = attempt.failed

        try:
            if not self._allow_private:
                check_literal(target)
            async with self._session.post(
                target,
                data=body,
                headers=headers,
                allow_redirects=False,
                timeout=self._timeout,
            ) as response:
                snippet = await response.content.read(SNIPPET_BYTES)
                status = response.status
                retry_after = None
                if status in (429, 503):
                    retry_after = parse_retry_after(
                        response.headers.get("Retry-After"), datetime.now(UTC)
                    )
        except UnsafeTarget as exc:
            return failed(Result.REFUSED_TARGET, str(exc))
        except TimeoutError:
            return failed(Result.TIMEOUT)
        except (aiohttp.ClientError, OSError) as exc:
            return failed(Result.CONNECTION_ERROR, type(exc).__name__)
        ok = 200 <= status < 300
        code = f"http_{status}"
        return Outcome(
            Result.SUCCEEDED if ok else Result.REJECTED,
            code,
            None if ok else code,
            attempt.started_at,
            attempt.duration,
            snippet_text(snippet),
            retry_after,
            disable=GONE_REASON if status == 410 else None,
        )


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
