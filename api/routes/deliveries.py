"""Inspection and redelivery: events, deliveries, subscription stats, retry, recover, replay."""

from __future__ import annotations

from uuid import UUID

from aiohttp import web

from api.errors import Problem
from api.inputs import path_id, read_json, read_query
from api.models import DeliveryPage, Recover, Replay
from api.responses import Delivery, DeliveryList, Event, Scheduled, SubscriptionStats, respond
from api.state import POOL
from notifier.ops.operator import OperationError, Operations

_PROBLEM_OF_KIND = {
    "not-found": "not-found",
    "in-flight": "delivery-in-flight",
    "invalid": "validation-failed",
}


def _problem(exc: OperationError) -> Problem:
    return Problem(_PROBLEM_OF_KIND[exc.kind], str(exc))


async def get_event(request: web.Request) -> web.Response:
    raw = request.match_info["event_id"]
    try:
        uid = UUID(raw)
    except ValueError:
        raise Problem("not-found", f"no event with id {raw[:40]}") from None
    event = await Operations(request.app[POOL]).event(uid)
    if event is None:
        raise Problem("not-found", f"event {uid} does not exist (or retention removed it)")
    return respond(Event.model_validate(event))


async def list_deliveries(request: web.Request) -> web.Response:
    page = read_query(request, DeliveryPage)
    found = await Operations(request.app[POOL]).deliveries(
        status=page.status,
        subscription_id=page.subscription_id,
        since=page.since,
        after=page.after,
        limit=page.limit + 1,
    )
    items = found[: page.limit]
    more = len(found) > page.limit
    return respond(
        DeliveryList.model_validate(
            {"items": items, "next_after": items[-1]["id"] if more else None}
        )
    )


async def subscription_stats(request: web.Request) -> web.Response:
    subscription_id = path_id(request, "subscription_id")
    stats = await Operations(request.app[POOL]).stats(subscription_id)
    if stats is None:
        raise Problem("not-found", f"subscription {subscription_id} does not exist")
    return respond(SubscriptionStats.model_validate(stats))


async def retry_delivery(request: web.Request) -> web.Response:
    delivery_id = path_id(request, "delivery_id")
    try:
        delivery = await Operations(request.app[POOL]).retry(delivery_id)
    except OperationError as exc:
        raise _problem(exc) from None
    return respond(Delivery.model_validate(delivery), status=202)


async def recover_subscription(request: web.Request) -> web.Response:
    subscription_id = path_id(request, "subscription_id")
    body = await read_json(request, Recover)
    try:
        result = await Operations(request.app[POOL]).recover(subscription_id, body.since)
    except OperationError as exc:
        raise _problem(exc) from None
    return respond(Scheduled.model_validate(result.as_dict()), status=202)


async def replay_to_subscription(request: web.Request) -> web.Response:
    subscription_id = path_id(request, "subscription_id")
    body = await read_json(request, Replay)
    try:
        result = await Operations(request.app[POOL]).replay(
            subscription_id, body.since, body.until, again=body.again
        )
    except OperationError as exc:
        raise _problem(exc) from None
    return respond(Scheduled.model_validate(result.as_dict()), status=202)


def add_routes(app: web.Application) -> None:
    """Register the inspection and redelivery routes."""
    app.router.add_get("/events/{event_id}", get_event, allow_head=False)
    app.router.add_get("/deliveries", list_deliveries, allow_head=False)
    app.router.add_post("/deliveries/{delivery_id}/retry", retry_delivery)
    app.router.add_get(
        "/subscriptions/{subscription_id}/stats", subscription_stats, allow_head=False
    )
    app.router.add_post("/subscriptions/{subscription_id}/recover", recover_subscription)
    app.router.add_post("/subscriptions/{subscription_id}/replay", replay_to_subscription)
