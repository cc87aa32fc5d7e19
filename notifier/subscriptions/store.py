"""Subscriptions: where events are delivered. One store used by the API and the CLI."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from notifier.db.pool import load_queries
from notifier.envelope import optional_timestamp, timestamp
from notifier.observability.redaction import MASK
from notifier.sinks import targets
from notifier.sinks.registry import SCHEMES, WEBHOOK, kind_of
from notifier.sinks.ssrf import UnsafeTarget, check_url
from notifier.sinks.targets import InvalidTarget, masked
from notifier.subscriptions.filters import Condition, from_stored
from notifier.subscriptions.filters import validate as validate_filter

SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret
SECRET_BYTES = 32
# '*', 'topic.*' or 'topic.created|updated|deleted'; public for the API's OpenAPI document.
EVENT_TYPE_REGEX = r"^(\*|[a-z][a-z0-9_]*\.(\*|created|updated|deleted))$"
_EVENT_TYPE_PATTERN = re.compile(EVENT_TYPE_REGEX)

RESOLVE_TIMEOUT_SECONDS = 5.0

FORMATS = ("standard-webhooks", "cloudevents")
ORDERINGS = ("none", "key")
# A field of the event's row: a column name, as the database's check has it.
ORDERING_KEY_REGEX = r"^[A-Za-z_][A-Za-z0-9_]{0,62}$"
_ORDERING_KEY = re.compile(ORDERING_KEY_REGEX)
# The ledger's topic, whose events are ordered by account unless told otherwise.
LEDGER_TOPIC, LEDGER_KEY = "transaction", "account_id"
MAX_HEADERS = 20
MAX_HEADER_VALUE = 4096
# An HTTP field name (RFC 9110's token), and a value of visible ASCII and inner spaces.
HEADER_NAME_REGEX = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,100}$"
_HEADER_NAME = re.compile(HEADER_NAME_REGEX)
_HEADER_VALUE = re.compile(r"[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?")
# Headers the contract sets, or that frame the request: a subscription cannot send its own.
RESERVED_HEADERS = frozenset(
    {
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "content-type",
        "content-length",
        "content-encoding",
        "transfer-encoding",
        "user-agent",
        "host",
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
        "expect",
        # Each event's own trace: a fixed one would join unrelated deliveries in one trace.
        "traceparent",
        "tracestate",
    }
)

Executor = asyncpg.Pool | asyncpg.Connection | asyncpg.pool.PoolConnectionProxy


class InvalidSubscription(ValueError):
    """A subscription field is invalid; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def generate_secret() -> str:
    """A new signing secret in the Standard Webhooks form ``whsec_<base64>``."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def validate_secret(secret: str) -> str:
    """Check a caller-chosen secret: ``whsec_`` and base64 of 24 to 64 bytes."""
    if not secret.startswith(SECRET_PREFIX):
        raise InvalidSubscription("secret", "must start with whsec_")
    try:
        key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidSubscription("secret", "must be whsec_ followed by base64") from None
    if not 24 <= len(key) <= 64:
        raise InvalidSubscription("secret", "must encode 24 to 64 bytes")
    return secret


def validate_url(url: str) -> str:
    """Check a target URL: its scheme names a destination, and the rest is that
    destination's form (``notifier.sinks.targets``)."""
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    try:
        targets.check_text(url)
        if scheme not in SCHEMES:
            schemes = ", ".join(f"{s}://" for s in SCHEMES)
            raise InvalidTarget(f"must start with one of {schemes}")
        if SCHEMES[scheme] is not WEBHOOK:
            return targets.validate(url)
    except InvalidTarget as exc:
        raise InvalidSubscription("url", str(exc)) from None
    try:
        parts = urlsplit(url)
        _ = parts.port
    except ValueError as exc:
        raise InvalidSubscription("url", f"not a valid URL ({exc})") from None
    if not parts.hostname:
        raise InvalidSubscription("url", "must name a host")
    return url


async def check_target(url: str, *, allow_private: bool) -> str:
    """``validate_url``, then, for a webhook, the SSRF guard: refuse hosts that are not
    public addresses. Brokers name the operator's own infrastructure, usually on a
    private network, so the guard does not apply to them."""
    validate_url(url)
    if kind_of(url) is not WEBHOOK:
        return url
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT_SECONDS):
            await check_url(url, allow_private=allow_private)
    except UnsafeTarget as exc:
        raise InvalidSubscription("url", str(exc)) from None
    except TimeoutError:
        message = f"the host did not resolve within {RESOLVE_TIMEOUT_SECONDS:g} s"
        raise InvalidSubscription("url", message) from None
    return url


def validate_headers(headers: dict[str, str]) -> dict[str, str]:
    """Check a subscription's own HTTP headers: names, values, and none the contract sets."""
    if len(headers) > MAX_HEADERS:
        raise InvalidSubscription("headers", f"at most {MAX_HEADERS} headers")
    seen: set[str] = set()
    for name, value in headers.items():
        if not _HEADER_NAME.fullmatch(name):
            raise InvalidSubscription("headers", f"{name!r} is not an HTTP header name")
        lowered = name.lower()
        if lowered in RESERVED_HEADERS:
            raise InvalidSubscription("headers", f"{name} is set by the notifier itself")
        if lowered in seen:
            raise InvalidSubscription("headers", f"{name} is given twice")
        seen.add(lowered)
        if len(value) > MAX_HEADER_VALUE or not _HEADER_VALUE.fullmatch(value):
            # The value is a secret: never quoted back.
            raise InvalidSubscription(
                "headers",
                f"the value of {name} must be 1 to {MAX_HEADER_VALUE} characters of "
                "printable ASCII, without leading or trailing spaces",
            )
    return headers


def validate_format(format: str) -> str:
    if format not in FORMATS:
        raise InvalidSubscription("format", f"must be one of {', '.join(FORMATS)}")
    return format


def _check_http_extras(url: str, headers: dict[str, str] | None, format: str | None) -> None:
    """Headers and the cloudevents format are HTTP's; a broker message has its own."""
    if kind_of(url) is WEBHOOK:
        return
    if headers:
        raise InvalidSubscription("headers", "apply to http(s):// subscriptions only")
    if format not in (None, "standard-webhooks"):
        raise InvalidSubscription("format", "applies to http(s):// subscriptions only")


def _check_credentials(url: str, headers: dict[str, str]) -> None:
    """A webhook's credentials come one way: HTTP has room for one Authorization header,
    and credentials in the URL become one (an attempt with both could never be sent)."""
    if kind_of(url) is not WEBHOOK or not any(n.lower() == "authorization" for n in headers):
        return
    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None:
        raise InvalidSubscription(
            "headers",
            "an Authorization header and credentials in the URL (user:password@) cannot "
            "both be given: keep one",
        )


def _topics(event_types: list[str]) -> set[str] | None:
    """The topics the patterns name; None when one of them is '*' (any topic)."""
    if "*" in event_types:
        return None
    return {pattern.partition(".")[0] for pattern in event_types}


def ordering_key_for(ordering: str, ordering_key: str | None, event_types: list[str]) -> str | None:
    """The field a subscription is ordered by: None unless ``ordering`` is 'key'; then
    ``ordering_key``, or account_id for a subscription to transaction events only."""
    if ordering not in ORDERINGS:
        raise InvalidSubscription("ordering", f"must be one of {', '.join(ORDERINGS)}")
    if ordering == "none":
        if ordering_key is not None:
            raise InvalidSubscription("ordering_key", "applies only with ordering 'key'")
        return None
    if ordering_key is None:
        if _topics(event_types) != {LEDGER_TOPIC}:
            raise InvalidSubscription(
                "ordering_key",
                "is required unless every event type is a transaction one "
                f"(which are ordered by {LEDGER_KEY})",
            )
        return LEDGER_KEY
    if not _ORDERING_KEY.fullmatch(ordering_key):
        raise InvalidSubscription("ordering_key", "must name a field of the event's row")
    return ordering_key


def _stored_filter(conditions: list[Condition] | None) -> str | None:
    if conditions is None:
        return None
    return json.dumps([c.as_stored() for c in validate_filter(conditions)])


def validate_event_types(patterns: list[str]) -> list[str]:
    """Check event-type patterns: ``*``, ``topic.*`` or ``topic.created|updated|deleted``."""
    if not patterns:
        raise InvalidSubscription("event_types", "must list at least one pattern")
    for pattern in patterns:
        if not _EVENT_TYPE_PATTERN.fullmatch(pattern):
            raise InvalidSubscription(
                "event_types",
                f"{pattern!r} is not '*', 'topic.*' or 'topic.created|updated|deleted'",
            )
    return list(dict.fromkeys(patterns))


@dataclass(frozen=True)
class Subscription:
    """A delivery target as stored; secrets are kept out of ``as_dict``."""

    id: int
    url: str
    description: str
    event_types: list[str]
    enabled: bool
    disabled_reason: str | None
    disabled_at: datetime | None
    max_in_flight: int | None
    headers: dict[str, str]
    format: str
    ordering: str
    ordering_key: str | None
    secret: str
    previous_secret: str | None
    previous_secret_expires_at: datetime | None
    created_at: datetime
    updated_at: datetime
    filter: list[Condition]

    @classmethod
    def from_record(cls, record: asyncpg.Record) -> Subscription:
        parsed = ("filter", "headers")
        fields = {name: record[name] for name in cls.__dataclass_fields__ if name not in parsed}
        return cls(
            **fields,
            headers=json.loads(record["headers"]),
            filter=from_stored(json.loads(record["filter"])),
        )

    def as_dict(self) -> dict[str, Any]:
        """Public fields, JSON-ready; never a secret: credentials in the URL and header
        values are masked."""
        return {
            "id": self.id,
            "url": masked(self.url),
            "description": self.description,
            "event_types": self.event_types,
            "filter": [c.as_dict() for c in self.filter],
            "headers": dict.fromkeys(self.headers, MASK),
            "format": self.format,
            "ordering": self.ordering,
            "ordering_key": self.ordering_key,
            "enabled": self.enabled,
            "disabled_reason": self.disabled_reason,
            "disabled_at": optional_timestamp(self.disabled_at),
            "max_in_flight": self.max_in_flight,
            "previous_secret_expires_at": optional_timestamp(self.previous_secret_expires_at),
            "created_at": timestamp(self.created_at),
            "updated_at": timestamp(self.updated_at),
        }


_UNSET: Any = object()


class SubscriptionStore:
    """Reads and writes ``notifier.subscriptions``; validates before it writes.

    Target URLs go through the SSRF guard unless ``allow_private_targets``: this store is
    the one place every writer (API, CLI, ``notifier dev``) creates subscriptions through.
    """

    def __init__(self, db: Executor, *, allow_private_targets: bool) -> None:
        self._db = db
        self._allow_private = allow_private_targets
        self._queries = load_queries("subscriptions")

    async def create(
        self,
        url: str,
        *,
        event_types: list[str] | None = None,
        description: str = "",
        secret: str | None = None,
        max_in_flight: int | None = None,
        enabled: bool = True,
        filter: list[Condition] | None = None,
        headers: dict[str, str] | None = None,
        format: str = "standard-webhooks",
        ordering: str = "none",
        ordering_key: str | None = None,
    ) -> Subscription:
        """Store a new subscription; a secret is generated when none is given."""
        url = await check_target(url, allow_private=self._allow_private)
        _check_http_extras(url, headers, format)
        _check_credentials(url, headers or {})
        event_types = validate_event_types(event_types or ["*"])
        ordering_key = await self._ordering_key(ordering, ordering_key, event_types)
        record = await self._db.fetchrow(
            self._queries["create"],
            url,
            description,
            event_types,
            validate_secret(secret) if secret is not None else generate_secret(),
            max_in_flight,
            enabled,
            _stored_filter(filter or []),
            json.dumps(validate_headers(headers or {})),
            validate_format(format),
            ordering,
            ordering_key,
        )
        assert record is not None
        return Subscription.from_record(record)

    async def _ordering_key(
        self, ordering: str, ordering_key: str | None, event_types: list[str]
    ) -> str | None:
        """``ordering_key_for``, and the field must exist in every watched topic's table
        the event types name (only '*' can name topics not watched yet)."""
        field = ordering_key_for(ordering, ordering_key, event_types)
        topics = _topics(event_types)
        if field is None or topics is None:
            return field
        rows = await self._db.fetch(self._queries["key_fields"], sorted(topics), field)
        if missing := sorted(row["topic"] for row in rows if not row["has_field"]):
            raise InvalidSubscription(
                "ordering_key", f"{field} is not a field of the {', '.join(missing)} rows"
            )
        return field

    async def get(self, subscription_id: int) -> Subscription | None:
        record = await self._db.fetchrow(self._queries["get"], subscription_id)
        return Subscription.from_record(record) if record else None

    async def find_by_url(self, url: str) -> Subscription | None:
        """The oldest subscription to exactly this URL, if any."""
        record = await self._db.fetchrow(self._queries["find_by_url"], url)
        return Subscription.from_record(record) if record else None

    async def page(self, *, after: int = 0, limit: int = 100) -> list[Subscription]:
        """Subscriptions with ids above ``after``, in id order, at most ``limit``."""
        records = await self._db.fetch(self._queries["list"], after, limit)
        return [Subscription.from_record(r) for r in records]

    async def update(
        self,
        subscription_id: int,
        *,
        url: str | None = None,
        description: str | None = None,
        event_types: list[str] | None = None,
        max_in_flight: int | None = _UNSET,
        enabled: bool | None = None,
        disabled_reason: str | None = None,
        filter: list[Condition] | None = None,
        headers: dict[str, str] | None = None,
        format: str | None = None,
        ordering: str | None = None,
        ordering_key: str | None = None,
    ) -> Subscription | None:
        """Change the given fields; ``enabled=True`` also clears the disabled reason.

        ``filter`` and ``headers`` replace what was there (empty removes them); None
        keeps them. ``ordering`` (with ``ordering_key``) applies to events fanned out
        from then on; turned off, what waited behind a key's head goes at once.
        """
        if url is not None:
            url = await check_target(url, allow_private=self._allow_private)
            _check_http_extras(url, headers, format)
        if ordering is None and ordering_key is not None:
            raise InvalidSubscription("ordering_key", "is set together with ordering")
        if url is not None or headers is not None or ordering is not None:
            # Checked against what the subscription keeps of its current settings.
            current = await self.get(subscription_id)
            if current is None:
                return None
            _check_credentials(url or current.url, current.headers if headers is None else headers)
            if ordering is not None:
                ordering_key = await self._ordering_key(
                    ordering, ordering_key, event_types or current.event_types
                )
                if ordering == "none":
                    await self._db.execute(self._queries["release_waiting"], subscription_id)
        try:
            record = await self._db.fetchrow(
                self._queries["update"],
                subscription_id,
                url,
                description,
                validate_event_types(event_types) if event_types is not None else None,
                max_in_flight is not _UNSET,
                None if max_in_flight is _UNSET else max_in_flight,
                enabled,
                disabled_reason,
                _stored_filter(filter),
                None if headers is None else json.dumps(validate_headers(headers)),
                None if format is None else validate_format(format),
                ordering,
                ordering_key,
            )
        except asyncpg.CheckViolationError as exc:
            if exc.constraint_name != "subscriptions_http_extras":
                raise
            # What the subscription already has, against the new URL or the new extras.
            raise InvalidSubscription(
                "url" if url is not None else ("headers" if headers else "format"),
                "headers and the cloudevents format apply to http(s):// subscriptions "
                "only: clear them (headers {}, format standard-webhooks) to send to a broker",
            ) from None
        return Subscription.from_record(record) if record else None

    async def rotate_secret(
        self, subscription_id: int, overlap_seconds: float, new_secret: str | None = None
    ) -> Subscription | None:
        """Replace the secret; the old one stays valid for ``overlap_seconds``."""
        secret = validate_secret(new_secret) if new_secret is not None else generate_secret()
        record = await self._db.fetchrow(
            self._queries["rotate_secret"], subscription_id, secret, float(overlap_seconds)
        )
        return Subscription.from_record(record) if record else None

    async def disable(self, subscription_id: int, reason: str) -> Subscription | None:
        """Disable with a reason; None if it does not exist or was already disabled."""
        record = await self._db.fetchrow(self._queries["disable"], subscription_id, reason)
        return Subscription.from_record(record) if record else None

    async def delete(self, subscription_id: int) -> bool:
        return await self._db.fetchval(self._queries["delete"], subscription_id) is not None
