"""One HTTP attempt: the request the event contract prescribes, and its classified outcome."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

import aiohttp

from notifier import __version__
from notifier.outbox import Claimed
from notifier.retry import parse_retry_after
from notifier.signing import signature_header
from notifier.targets import UnsafeTarget, check_literal

USER_AGENT = f"notifier/{__version__}"
SNIPPET_BYTES = 512


class Result(StrEnum):
    """How an attempt ended. Everything but SUCCEEDED is a failed attempt."""

    SUCCEEDED = "succeeded"
    HTTP_ERROR = "http_error"  # an answer that is not 2xx
    TIMEOUT = "timeout"
    CONNECTION_ERROR = "connection_error"  # refused, reset, DNS, TLS
    REFUSED_TARGET = "refused_target"  # the SSRF guard: the target is not a public address


@dataclass(frozen=True, slots=True)
class Outcome:
    result: Result
    status_code: int | None
    error: str | None  # the failure class, with the status for HTTP errors
    started_at: datetime
    duration: float  # seconds
    response_snippet: str
    retry_after: float | None  # seconds asked for with a 429 or 503


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_body(claimed: Claimed) -> bytes:
    """The JSON body of the event contract; data/previous are inserted as the claim gave them."""
    return (
        f'{{"id":"{claimed.event_uid}","type":{json.dumps(claimed.event_type)},'
        f'"timestamp":"{_timestamp(claimed.event_created_at)}",'
        f'"data":{claimed.data},"previous":{claimed.previous or "null"}}}'
    ).encode()


def event_headers(claimed: Claimed, body: bytes, now: float) -> dict[str, str]:
    """Standard Webhooks headers, signed with every secret that is currently valid."""
    msg_id = str(claimed.event_uid)
    timestamp = int(now)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(claimed.secrets, msg_id, timestamp, body),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }


async def attempt(
    session: aiohttp.ClientSession,
    claimed: Claimed,
    timeout_seconds: float,
    *,
    allow_private: bool = False,
) -> Outcome:
    """POST the event once; never raises for a failed attempt, it classifies it.

    Unless ``allow_private``, an IP-literal target is checked here, on every attempt;
    names are checked by the session's resolver (``GuardedResolver``) at connect time.
    """
    body = event_body(claimed)
    wall = time.time()
    started_at = datetime.fromtimestamp(wall, UTC)
    start = time.perf_counter()
    headers = event_headers(claimed, body, wall)

    def failed(result: Result, error: str) -> Outcome:
        return Outcome(result, None, error, started_at, time.perf_counter() - start, "", None)

    try:
        if not allow_private:
            check_literal(claimed.url)
        async with session.post(
            claimed.url,
            data=body,
            headers=headers,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=timeout_seconds),
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
    except aiohttp.ClientError as exc:
        return failed(Result.CONNECTION_ERROR, f"connection_error: {type(exc).__name__}")
    except OSError as exc:
        return failed(Result.CONNECTION_ERROR, f"connection_error: {type(exc).__name__}")
    ok = 200 <= status < 300
    return Outcome(
        Result.SUCCEEDED if ok else Result.HTTP_ERROR,
        status,
        None if ok else f"http_{status}",
        started_at,
        time.perf_counter() - start,
        snippet.decode("utf-8", "replace"),
        retry_after,
    )
