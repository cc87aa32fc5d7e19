"""The webhook sink: one signed POST per attempt, as the event contract prescribes.

HTTP's own rules live here: the Standard Webhooks headers, the SSRF guard at connect
time, ``Retry-After`` on a 429 or 503, and 410 Gone, which disables the subscription.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import aiohttp

from notifier import __version__
from notifier.envelope import Envelope
from notifier.sinks.base import Outcome, Result
from notifier.sinks.signing import signature_header
from notifier.sinks.ssrf import GuardedResolver, UnsafeTarget, check_literal

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


def event_headers(envelope: Envelope, secrets: tuple[str, ...], now: float) -> dict[str, str]:
    """Standard Webhooks headers, signed with every secret that is currently valid."""
    msg_id = str(envelope.id)
    timestamp = int(now)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(secrets, msg_id, timestamp, envelope.body),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }


class WebhookSink:
    """Delivers to ``http(s)://`` targets over one shared connection pool."""

    def __init__(
        self, *, timeout_seconds: float, max_connections: int, allow_private: bool = False
    ) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._allow_private = allow_private
        # The SSRF guard at connect time: DNS answers may have changed since the
        # subscription was created. IP literals bypass resolvers; each attempt checks them.
        resolver = None if allow_private else GuardedResolver()
        connector = aiohttp.TCPConnector(limit=max_connections, limit_per_host=0, resolver=resolver)
        self._session = aiohttp.ClientSession(
            connector=connector, cookie_jar=aiohttp.DummyCookieJar()
        )

    async def close(self) -> None:
        await self._session.close()

    async def deliver(self, target: str, secrets: tuple[str, ...], envelope: Envelope) -> Outcome:
        """POST the event once; never raises for a failed attempt, it classifies it."""
        wall = time.time()
        started_at = datetime.fromtimestamp(wall, UTC)
        start = time.perf_counter()
        headers = event_headers(envelope, secrets, wall)

        def failed(result: Result, error: str) -> Outcome:
            duration = time.perf_counter() - start
            return Outcome(result, result.value, error, started_at, duration, "")

        try:
            if not self._allow_private:
                check_literal(target)
            async with self._session.post(
                target,
                data=envelope.body,
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
            return failed(Result.REFUSED_TARGET, f"refused_target: {exc}")
        except TimeoutError:
            return failed(Result.TIMEOUT, "timeout")
        except (aiohttp.ClientError, OSError) as exc:
            return failed(Result.CONNECTION_ERROR, f"connection_error: {type(exc).__name__}")
        ok = 200 <= status < 300
        code = f"http_{status}"
        return Outcome(
            Result.SUCCEEDED if ok else Result.REJECTED,
            code,
            None if ok else code,
            started_at,
            time.perf_counter() - start,
            snippet_text(snippet),
            retry_after,
            disable=GONE_REASON if status == 410 else None,
        )
