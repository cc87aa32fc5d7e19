"""The OpenAPI description of the inspection and redelivery routes (see api.openapi)."""

from __future__ import annotations

from typing import Any

from api.models import MAX_BIGINT, PAGE_LIMIT_DEFAULT, PAGE_LIMIT_MAX, Recover, Replay
from api.openapi_parts import (
    ID,
    WRITE_ERRORS,
    body,
    json_response,
    path_id,
    problems,
    query,
    query_int,
    ref,
)
from api.responses import Delivery, DeliveryList, Event, Scheduled, SubscriptionStats
from notifier.statuses import DELIVERY_STATUSES


def paths() -> dict[str, dict[str, Any]]:
    scheduled = json_response(ref(Scheduled), "Scheduled; the daemon sends them now.")
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
                    "200": json_response(ref(Event), "The event."),
                    **problems(401, 404, 503),
                },
            }
        },
        "/deliveries": {
            "get": {
                "summary": "Deliveries in id order, filtered; pass next_after as after.",
                "parameters": [
                    query("status", {"enum": list(DELIVERY_STATUSES)}),
                    query("subscription_id", ID),
                    query("since", {"type": "string", "format": "date-time"}),
                    query_int("limit", 1, PAGE_LIMIT_MAX, PAGE_LIMIT_DEFAULT),
                    query_int("after", 0, MAX_BIGINT, None),
                ],
                "responses": {
                    "200": json_response(ref(DeliveryList), "A page."),
                    **problems(401, 422, 503),
                },
            }
        },
        "/deliveries/{delivery_id}/retry": {
            "post": {
                "summary": "Send one delivery again now, with a fresh retry schedule.",
                "parameters": [path_id("delivery_id")],
                "responses": {
                    "202": json_response(ref(Delivery), "Scheduled."),
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
                    "200": json_response(ref(SubscriptionStats), "The stats."),
                    **problems(401, 404, 503),
                },
            }
        },
        "/subscriptions/{subscription_id}/recover": {
            "post": {
                "summary": "Schedule again every dead or failed delivery of events since a "
                "moment, and send the events missed while the subscription was disabled.",
                "parameters": [path_id("subscription_id")],
                "requestBody": body(Recover, {"since": "2026-11-20T00:00:00Z"}),
                "responses": {"202": scheduled, **problems(*WRITE_ERRORS, 404)},
            }
        },
        "/subscriptions/{subscription_id}/replay": {
            "post": {
                "summary": "Send the events of a time range to this subscription, also from "
                "before it existed; with again, also those it was sent already.",
                "parameters": [path_id("subscription_id")],
                "requestBody": body(
                    Replay, {"since": "2026-11-20T00:00:00Z", "until": "2026-11-21T00:00:00Z"}
                ),
                "responses": {"202": scheduled, **problems(*WRITE_ERRORS, 404)},
            }
        },
    }
