"""The OpenAPI description of the inspection and redelivery routes (see api.openapi)."""

from __future__ import annotations

from typing import Any

from api.models import MAX_BIGINT, PAGE_LIMIT_DEFAULT, PAGE_LIMIT_MAX
from notifier.operations import DELIVERY_STATUSES

_TIMESTAMP = {"type": "string", "format": "date-time"}
_NULLABLE_TIMESTAMP = {"type": ["string", "null"], "format": "date-time"}
_ID = {"type": "integer", "minimum": 1, "maximum": MAX_BIGINT}
_STATUS = {"enum": list(DELIVERY_STATUSES)}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


_DELIVERY = {
    "type": "object",
    "required": [
        "id",
        "event_id",
        "subscription_id",
        "status",
        "attempts",
        "next_attempt_at",
        "last_attempt_at",
        "last_status_code",
        "last_error",
        "completed_at",
        "created_at",
    ],
    "properties": {
        "id": _ID,
        "event_id": {"type": "string", "format": "uuid"},
        "subscription_id": _ID,
        "status": _STATUS,
        "attempts": {"type": "integer", "minimum": 0},
        "next_attempt_at": _NULLABLE_TIMESTAMP,
        "last_attempt_at": _NULLABLE_TIMESTAMP,
        "last_status_code": {"type": ["integer", "null"]},
        "last_error": {"type": ["string", "null"]},
        "completed_at": _NULLABLE_TIMESTAMP,
        "created_at": _TIMESTAMP,
    },
}
_ATTEMPT = {
    "type": "object",
    "required": ["attempt", "started_at", "duration_ms", "status_code", "error"],
    "properties": {
        "attempt": {"type": "integer"},
        "started_at": _TIMESTAMP,
        "duration_ms": {"type": "number"},
        "status_code": {"type": ["integer", "null"]},
        "error": {"type": ["string", "null"]},
        "response_snippet": {"type": "string"},
    },
}
_EVENT = {
    "type": "object",
    "required": ["id", "type", "table", "op", "timestamp", "data", "previous", "deliveries"],
    "properties": {
        "id": {"type": "string", "format": "uuid"},
        "type": {"type": "string"},
        "table": {"type": "string"},
        "op": {"enum": ["INSERT", "UPDATE", "DELETE"]},
        "timestamp": _TIMESTAMP,
        "data": {"type": "object"},
        "previous": {"type": ["object", "null"]},
        "fanned_out": {"type": "boolean"},
        "deliveries": {
            "type": "array",
            "items": {
                "allOf": [
                    _ref("Delivery"),
                    {
                        "type": "object",
                        "required": ["attempt_log"],
                        "properties": {"attempt_log": {"type": "array", "items": _ref("Attempt")}},
                    },
                ]
            },
        },
    },
}
_STATS = {
    "type": "object",
    "required": [
        "subscription_id",
        "enabled",
        "deliveries",
        "last_success_at",
        "last_failure_at",
        "failing_since",
        "consecutive_failures",
    ],
    "properties": {
        "subscription_id": _ID,
        "enabled": {"type": "boolean"},
        "disabled_reason": {"type": ["string", "null"]},
        "disabled_at": _NULLABLE_TIMESTAMP,
        "deliveries": {
            "type": "object",
            "description": "Deliveries by status.",
            "properties": {status: {"type": "integer"} for status in DELIVERY_STATUSES},
        },
        "last_success_at": _NULLABLE_TIMESTAMP,
        "last_failure_at": _NULLABLE_TIMESTAMP,
        "failing_since": _NULLABLE_TIMESTAMP,
        "consecutive_failures": {"type": "integer", "minimum": 0},
    },
}
_SCHEDULED = {
    "type": "object",
    "required": ["subscription_id", "created", "reset", "scheduled", "subscription_enabled"],
    "properties": {
        "subscription_id": _ID,
        "created": {"type": "integer", "description": "New deliveries."},
        "reset": {"type": "integer", "description": "Existing deliveries scheduled again."},
        "scheduled": {"type": "integer"},
        "events_scanned": {"type": "integer"},
        "subscription_enabled": {
            "type": "boolean",
            "description": "false: nothing is sent until the subscription is enabled.",
        },
    },
}

SCHEMAS: dict[str, Any] = {
    "Delivery": _DELIVERY,
    "Attempt": _ATTEMPT,
    "Event": _EVENT,
    "SubscriptionStats": _STATS,
    "Scheduled": _SCHEDULED,
}

EXAMPLES: dict[str, dict[str, Any]] = {
    "Recover": {"since": "2026-11-20T00:00:00Z"},
    "Replay": {"since": "2026-11-20T00:00:00Z", "until": "2026-11-21T00:00:00Z"},
}


def _query(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema}


def paths(json_response: Any, problems: Any, path_id: Any, body: Any) -> dict[str, dict[str, Any]]:
    """The paths, built with api.openapi's helpers (passed in to avoid a cycle)."""
    scheduled = json_response(_ref("Scheduled"), "Scheduled; the daemon sends them now.")
    page = {
        "type": "object",
        "required": ["items", "next_after"],
        "properties": {
            "items": {"type": "array", "items": _ref("Delivery")},
            "next_after": {"type": ["integer", "null"]},
        },
    }
    write_errors = (400, 401, 404, 413, 415, 422, 503)
    return {
        "/events/{event_id}": {
            "get": {
                "summary": "An event, and per subscription its delivery and every attempt.",
                "parameters": [
                    {
                        "name": "event_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "format": "uuid"},
                    }
                ],
                "responses": {
                    "200": json_response(_ref("Event"), "The event."),
                    **problems(401, 404, 503),
                },
            }
        },
        "/deliveries": {
            "get": {
                "summary": "Deliveries in id order, filtered; pass next_after as after.",
                "parameters": [
                    _query("status", _STATUS),
                    _query("subscription_id", _ID),
                    _query("since", _TIMESTAMP),
                    _query(
                        "limit",
                        {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": PAGE_LIMIT_MAX,
                            "default": PAGE_LIMIT_DEFAULT,
                        },
                    ),
                    _query("after", {"type": "integer", "minimum": 0, "maximum": MAX_BIGINT}),
                ],
                "responses": {
                    "200": json_response(page, "A page."),
                    **problems(401, 422, 503),
                },
            }
        },
        "/deliveries/{delivery_id}/retry": {
            "post": {
                "summary": "Send one delivery again now, with a fresh retry schedule.",
                "parameters": [path_id("delivery_id")],
                "responses": {
                    "202": json_response(_ref("Delivery"), "Scheduled."),
                    **problems(401, 404, 409, 503),
                },
            }
        },
        "/subscriptions/{subscription_id}/stats": {
            "get": {
                "summary": "Delivery counts by status, last success and failure, failures "
                "in a row.",
                "parameters": [path_id("subscription_id")],
                "responses": {
                    "200": json_response(_ref("SubscriptionStats"), "The stats."),
                    **problems(401, 404, 503),
                },
            }
        },
        "/subscriptions/{subscription_id}/recover": {
            "post": {
                "summary": "Schedule again every dead or failed delivery of events since a "
                "moment, and send the events missed while the subscription was disabled.",
                "parameters": [path_id("subscription_id")],
                "requestBody": body("Recover"),
                "responses": {"202": scheduled, **problems(*write_errors)},
            }
        },
        "/subscriptions/{subscription_id}/replay": {
            "post": {
                "summary": "Send the events of a time range to this subscription, also from "
                "before it existed; with again, also those it was sent already.",
                "parameters": [path_id("subscription_id")],
                "requestBody": body("Replay"),
                "responses": {"202": scheduled, **problems(*write_errors)},
            }
        },
    }
