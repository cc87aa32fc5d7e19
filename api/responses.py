"""Response bodies: every JSON answer of the API is one of these models, serialised by
``respond``; the OpenAPI document describes the same models (serialization mode)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, WithJsonSchema

from api.models import MAX_BIGINT, Amount, FilterObject
from notifier.envelope import timestamp
from notifier.statuses import DeliveryStatus

Kind = Literal["top_up", "debit"]

Id = Annotated[int, Field(ge=1, le=MAX_BIGINT)]
Count = Annotated[int, Field(ge=0)]
Money = Annotated[int, Field(ge=0, description="Minor units (cents).")]
CurrencyCode = Annotated[str, Field(pattern="^[A-Z]{3}$")]
# Validation also reads the contract's string back: notifier.ops hands its rows over
# already printed, and printing them again gives the same string.
Timestamp = Annotated[
    datetime,
    PlainSerializer(timestamp, return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]


class _Response(BaseModel):
    # A key the model does not know is a bug to hear about, not one to drop quietly.
    model_config = ConfigDict(extra="forbid")


def respond(
    body: BaseModel, *, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    """``body`` as an application/json response."""
    return web.json_response(body.model_dump(mode="json"), status=status, headers=headers)


class Status(_Response):
    """GET /healthz, /readyz."""

    status: str


class Account(_Response):
    id: Id
    currency: CurrencyCode
    balance: Money
    created_at: Timestamp
    updated_at: Timestamp


class Transaction(_Response):
    id: Id
    account_id: Id
    kind: Kind
    amount: Amount
    currency: CurrencyCode
    balance_after: Money
    idempotency_key: str | None
    metadata: dict[str, Any]
    created_at: Timestamp


class TransactionList(_Response):
    """A page of transactions, newest first."""

    items: list[Transaction]
    next_before: Id | None


class Subscription(_Response):
    """A delivery target, without its secret."""

    id: Id
    url: str = Field(description="Credentials in it are masked: amqp://user:***@host/...")
    description: str
    event_types: Annotated[list[str], Field(min_length=1)]
    filter: list[FilterObject]
    headers: dict[str, Literal["***"]] = Field(
        description="The subscription's own HTTP headers; their values are never shown."
    )
    format: Literal["standard-webhooks", "cloudevents"]
    ordering: Literal["none", "key"]
    ordering_key: str | None
    enabled: bool
    disabled_reason: str | None
    disabled_at: Timestamp | None
    max_in_flight: int | None
    previous_secret_expires_at: Timestamp | None
    created_at: Timestamp
    updated_at: Timestamp


class SubscriptionWithSecret(Subscription):
    """A delivery target right after its secret was set."""

    secret: str = Field(
        pattern="^whsec_", description="The signing secret; shown only in this response."
    )


class SubscriptionList(_Response):
    """A page of subscriptions in id order."""

    items: list[Subscription]
    next_after: Id | None


class Delivery(_Response):
    id: Id | None = Field(
        description="The delivery's own id; null for a first attempt recorded with its batch."
    )
    batch_id: Id | None = Field(
        description="The batch whose first attempt this is, for one recorded with its batch."
    )
    event_id: UUID
    subscription_id: Id
    status: DeliveryStatus
    attempts: Count
    next_attempt_at: Timestamp | None
    last_attempt_at: Timestamp | None
    last_outcome: str | None = Field(
        description="The last attempt's outcome code: http_NNN, timeout, connection_error, "
        "refused_target or crashed."
    )
    last_status_code: int | None = Field(description="The HTTP status of an http_NNN outcome.")
    last_error: str | None
    completed_at: Timestamp | None
    created_at: Timestamp


class DeliveryList(_Response):
    """A page of deliveries in id order."""

    items: list[Delivery]
    next_after: Id | None


class Attempt(_Response):
    attempt: int
    started_at: Timestamp
    duration_ms: float
    outcome: str = Field(
        description="A short code: http_NNN, timeout, connection_error, refused_target or crashed."
    )
    status_code: int | None = Field(description="The HTTP status of an http_NNN outcome.")
    error: str | None = Field(description="Null after a success, else the failure in one line.")
    response_snippet: str = Field(description="The start of what the destination answered.")


class EventDelivery(Delivery):
    """An event's delivery to one subscription, with every attempt."""

    attempt_log: list[Attempt]


class Event(_Response):
    id: UUID
    type: str
    table: str
    op: Literal["INSERT", "UPDATE", "DELETE"]
    timestamp: Timestamp
    data: dict[str, Any]
    previous: dict[str, Any] | None
    # The W3C trace the change was made in, sent with every delivery; null outside one.
    traceparent: str | None
    tracestate: str | None
    fanned_out: bool
    deliveries: list[EventDelivery]


class SubscriptionStats(_Response):
    subscription_id: Id
    enabled: bool
    disabled_reason: str | None
    disabled_at: Timestamp | None
    deliveries: dict[DeliveryStatus, Count] = Field(description="Deliveries by status.")
    waiting: Count = Field(
        description="Pending deliveries waiting behind an earlier event of their key "
        "(ordered subscriptions): counted in deliveries.pending too."
    )
    keys_held_back: Count = Field(
        description="Keys whose head is unfinished while later events of theirs wait."
    )
    last_success_at: Timestamp | None
    last_failure_at: Timestamp | None
    last_error: str | None = Field(
        description="The error of the last failed attempt: http_503, timeout, "
        "sqs_queue_not_found: no queue ..."
    )
    failing_since: Timestamp | None
    consecutive_failures: Count


class Scheduled(_Response):
    """What a recovery or replay scheduled."""

    subscription_id: Id
    created: Count = Field(description="New deliveries.")
    reset: Count = Field(description="Existing deliveries scheduled again.")
    scheduled: Count
    events_scanned: Count
    subscription_enabled: bool = Field(
        description="false: nothing is sent until the subscription is enabled."
    )
