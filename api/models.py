"""Request bodies and query strings, validated at the edge with pydantic."""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from api.currencies import ISO_4217_CODES
from notifier.ops.operator import check_replay_range
from notifier.sinks.registry import SCHEMES
from notifier.sinks.targets import MAX_URL_LENGTH
from notifier.statuses import DeliveryStatus
from notifier.subscriptions.filters import (
    FIELD_REGEX,
    MAX_CONDITIONS,
    OPERATORS,
    Condition,
    InvalidFilter,
    condition,
    parse,
)
from notifier.subscriptions.store import (
    EVENT_TYPE_REGEX,
    HEADER_NAME_REGEX,
    MAX_HEADERS,
    ORDERING_KEY_REGEX,
    validate_event_types,
    validate_headers,
    validate_secret,
    validate_url,
)

MAX_AMOUNT = 10**15
MAX_BIGINT = 2**63 - 1
METADATA_MAX_BYTES = 8192
DESCRIPTION_MAX_CHARS = 1000
MAX_EVENT_TYPES = 50
PAGE_LIMIT_MAX = 100
PAGE_LIMIT_DEFAULT = 50


def _has_unstorable_chars(text: str) -> bool:
    # PostgreSQL text and jsonb cannot hold NUL, and lone surrogates are not UTF-8.
    return "\x00" in text or any(0xD800 <= ord(ch) <= 0xDFFF for ch in text)


def _clean_text(value: str) -> str:
    if _has_unstorable_chars(value):
        raise ValueError("must not contain NUL characters or unpaired surrogates")
    return value


def _check_json_strings(value: Any) -> None:
    if isinstance(value, str):
        _clean_text(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            _clean_text(key)
            _check_json_strings(item)
    elif isinstance(value, list):
        for item in value:
            _check_json_strings(item)


def _check_metadata(value: dict[str, Any]) -> dict[str, Any]:
    _check_json_strings(value)
    size = len(json.dumps(value, separators=(",", ":")).encode("utf-8"))
    if size > METADATA_MAX_BYTES:
        raise ValueError(f"must be at most {METADATA_MAX_BYTES} bytes as JSON, got {size}")
    return value


def _check_currency(value: str) -> str:
    if value not in ISO_4217_CODES:
        raise ValueError(f"{value!r} is not an ISO 4217 currency code")
    return value


Amount = Annotated[
    int,
    Field(strict=True, ge=1, le=MAX_AMOUNT, description="Minor units (cents), a JSON integer."),
]
Currency = Annotated[
    StrictStr,
    AfterValidator(_check_currency),
    Field(
        description="ISO 4217 code.",
        json_schema_extra={"enum": sorted(ISO_4217_CODES)},
    ),
]
Metadata = Annotated[
    dict[str, Any],
    Field(strict=True, description=f"A JSON object of at most {METADATA_MAX_BYTES} bytes."),
    AfterValidator(_check_metadata),
]
Url = Annotated[
    StrictStr,
    Field(
        max_length=MAX_URL_LENGTH,
        json_schema_extra={"format": "uri", "pattern": f"^(?i:{'|'.join(SCHEMES)})://"},
        description="Where events go; the scheme picks the destination: http(s) (a "
        "webhook), amqp(s) (RabbitMQ), kafka, nats (JetStream).",
    ),
    AfterValidator(_clean_text),
    AfterValidator(validate_url),
]
EventType = Annotated[StrictStr, Field(pattern=EVENT_TYPE_REGEX)]
EventTypes = Annotated[
    list[EventType],
    Field(min_length=1, max_length=MAX_EVENT_TYPES),
    AfterValidator(validate_event_types),
]
Description = Annotated[
    StrictStr, Field(max_length=DESCRIPTION_MAX_CHARS), AfterValidator(_clean_text)
]
Secret = Annotated[
    StrictStr,
    Field(
        pattern="^whsec_",
        max_length=200,
        description="whsec_ followed by base64 of 24 to 64 bytes.",
    ),
    AfterValidator(validate_secret),
]
MaxInFlight = Annotated[int, Field(strict=True, ge=1, le=1000)]
Headers = Annotated[
    dict[Annotated[StrictStr, Field(pattern=HEADER_NAME_REGEX)], StrictStr],
    Field(
        max_length=MAX_HEADERS,
        description="HTTP headers sent with every delivery (webhooks only); the values "
        "are secrets, shown masked from then on.",
    ),
    AfterValidator(validate_headers),
]
Ordering = Annotated[
    Literal["none", "key"],
    Field(
        description="'key': each key's events one at a time, in capture order (a failing "
        "event holds back only its key); 'none': concurrently, no order."
    ),
]
OrderingKey = Annotated[
    StrictStr,
    Field(
        pattern=ORDERING_KEY_REGEX,
        description="The field of the event's row whose value is the key (default "
        "account_id when every event type is a transaction one; else required).",
    ),
]
Format = Annotated[
    Literal["standard-webhooks", "cloudevents"],
    Field(description="The webhook body: the event (default) or a CloudEvent (structured)."),
]


class FilterObject(BaseModel):
    """One row-value condition as an object: ``{"field": "amount", "op": ">=", "value": 1}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # The pattern and the operators are stated for the document only: ``condition``
    # checks them, with messages that say what a field or an operator may be.
    field: StrictStr = Field(json_schema_extra={"pattern": FIELD_REGEX})
    op: StrictStr = Field(json_schema_extra={"enum": list(OPERATORS)})
    value: Any


def condition_of(item: str | FilterObject) -> Condition:
    """The condition an API filter item states, text (``amount >= 100000``) or object."""
    if isinstance(item, str):
        return parse(_clean_text(item))
    _check_json_strings(item.value)
    return condition(item.field, item.op, item.value)


def _finite(value: Any) -> bool:
    values = value if isinstance(value, list) else [value]
    return all(not isinstance(v, float) or math.isfinite(v) for v in values)


def _check_condition(item: str | FilterObject) -> str | FilterObject:
    try:
        parsed = condition_of(item)
    except InvalidFilter as exc:
        raise ValueError(str(exc)) from None
    if not _finite(parsed.value):
        raise ValueError(f"{parsed.field} {parsed.op}: numbers must be finite")
    return item


FilterItem = Annotated[
    StrictStr | FilterObject,
    AfterValidator(_check_condition),
    Field(
        description="A condition on the event's row: 'amount >= 100000', 'kind = debit', "
        "'account_id in [1, 2]', 'metadata.tier = gold'; or the same as an object."
    ),
]
Filter = Annotated[list[FilterItem], Field(max_length=MAX_CONDITIONS)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AccountCreate(_Body):
    """POST /accounts."""

    currency: Currency


class TransactionCreate(_Body):
    """POST /accounts/{id}/top-ups and /debits."""

    amount: Amount
    currency: Currency | None = Field(
        default=None, description="If given, must be the account's currency."
    )
    metadata: Metadata = Field(default_factory=dict)


class SubscriptionCreate(_Body):
    """POST /subscriptions."""

    url: Url
    event_types: EventTypes = Field(default_factory=lambda: ["*"])
    description: Description = ""
    secret: Secret | None = Field(default=None, description="Generated when not given.")
    enabled: StrictBool = True
    max_in_flight: MaxInFlight | None = None
    filter: Filter = Field(default_factory=list, description="Row-value conditions; all must hold.")
    headers: Headers = Field(default_factory=dict)
    format: Format = "standard-webhooks"
    ordering: Ordering = "none"
    ordering_key: OrderingKey | None = None


class SubscriptionUpdate(_Body):
    """PATCH /subscriptions/{id}: every field optional; absent fields stay as they are."""

    url: Url | None = None
    event_types: EventTypes | None = None
    description: Description | None = None
    enabled: StrictBool | None = None
    max_in_flight: MaxInFlight | None = None
    rotate_secret: StrictBool = Field(
        default=False, description="Replace the secret with a generated one."
    )
    secret: Secret | None = Field(default=None, description="Replace the secret with this one.")
    filter: Filter | None = Field(
        default=None, description="Replace the row-value conditions; [] removes them."
    )
    headers: Headers | None = Field(
        default=None, description="Replace the headers; {} removes them."
    )
    format: Format | None = None
    ordering: Ordering | None = Field(
        default=None,
        description="For events fanned out from now on; 'none' also releases what waits "
        "behind a key's head.",
    )
    ordering_key: OrderingKey | None = Field(default=None, description="Given with ordering.")


class _Query(BaseModel):
    # Unknown parameters are refused: a misspelt "befor=" must not silently return page one.
    model_config = ConfigDict(extra="forbid", frozen=True)


class TransactionPage(_Query):
    """GET /accounts/{id}/transactions query string."""

    limit: int = Field(default=PAGE_LIMIT_DEFAULT, ge=1, le=PAGE_LIMIT_MAX)
    before: int | None = Field(default=None, ge=1, le=MAX_BIGINT)


class SubscriptionPage(_Query):
    """GET /subscriptions query string."""

    limit: int = Field(default=PAGE_LIMIT_DEFAULT, ge=1, le=PAGE_LIMIT_MAX)
    after: int = Field(default=0, ge=0, le=MAX_BIGINT)


def error_list(exc: ValidationError) -> list[dict[str, str]]:
    """pydantic errors as ``[{"field": ..., "message": ...}]``, one per bad field."""
    errors = []
    for error in exc.errors(include_url=False, include_input=False):
        field = ".".join(str(part) for part in error["loc"]) if error["loc"] else "body"
        message = error["msg"].removeprefix("Value error, ")
        errors.append({"field": field, "message": message})
    return errors


# RFC 3339 date-time, what the document's "format: date-time" means. pydantic alone also
# takes numbers and strings of digits (read as Unix times: "0.5" is 1970), minutes
# without seconds, and a space for the T.
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
    r"[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})"
)


def _rfc3339(value: object) -> object:
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        raise ValueError(
            "must be an RFC 3339 date-time string with a time zone, e.g. 2026-11-21T20:00:00Z"
        )
    return value


def _utc(value: datetime) -> datetime:
    # A far-off date with an offset can leave datetime's range once moved to UTC.
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is out of range") from None


Moment = Annotated[
    AwareDatetime,
    BeforeValidator(_rfc3339),
    AfterValidator(_utc),
    Field(description="RFC 3339 date-time with a time zone, e.g. 2026-11-21T20:00:00Z."),
]


class DeliveryPage(_Query):
    """GET /deliveries query string."""

    status: DeliveryStatus | None = None
    subscription_id: int | None = Field(default=None, ge=1, le=MAX_BIGINT)
    since: Moment | None = Field(default=None, description="Deliveries created at or after.")
    limit: int = Field(default=PAGE_LIMIT_DEFAULT, ge=1, le=PAGE_LIMIT_MAX)
    after: int = Field(default=0, ge=0, le=MAX_BIGINT)


class Recover(_Body):
    """POST /subscriptions/{id}/recover."""

    since: Moment = Field(description="Recover events captured at or after this moment.")


class Replay(_Body):
    """POST /subscriptions/{id}/replay."""

    since: Moment = Field(description="Replay events captured at or after this moment...")
    until: Moment | None = Field(default=None, description="...and before this one (default: now).")
    again: StrictBool = Field(
        default=False,
        description="Also send events this subscription was already sent (succeeded or not).",
    )

    @field_validator("until")
    @classmethod
    def _after_since(cls, until: datetime | None, info: ValidationInfo) -> datetime | None:
        since = info.data.get("since")  # absent when since itself was invalid
        if since is not None:
            check_replay_range(since, until)
        return until
