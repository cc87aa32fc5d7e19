"""Subscriptions: where events are delivered. Secrets are shown once, never listed."""

from __future__ import annotations

from typing import Any

import asyncpg
from aiohttp import web

from api.errors import Problem, validation_problem
from api.inputs import path_id, read_json, read_query
from api.models import SubscriptionCreate, SubscriptionPage, SubscriptionUpdate, condition_of
from api.responses import Subscription, SubscriptionList, SubscriptionWithSecret, respond
from api.state import POOL, SETTINGS
from notifier.subscriptions.store import Executor, InvalidSubscription, SubscriptionStore
from notifier.subscriptions.store import Subscription as StoredSubscription


def _as_response(subscription: StoredSubscription, *, with_secret: bool = False) -> Subscription:
    """The public fields; the secret only right after it was set."""
    if with_secret:
        return SubscriptionWithSecret.model_validate(
            {**subscription.as_dict(), "secret": subscription.secret}
        )
    return Subscription.model_validate(subscription.as_dict())


def _invalid(exc: InvalidSubscription) -> Problem:
    return validation_problem([{"field": exc.field, "message": exc.message}])


def store(request: web.Request, db: Executor | None = None) -> SubscriptionStore:
    """The subscription store, with the SSRF guard as configured."""
    allow_private = request.app[SETTINGS].allow_private_targets
    return SubscriptionStore(db or request.app[POOL], allow_private_targets=allow_private)


def _not_found(subscription_id: int) -> Problem:
    return Problem("not-found", f"subscription {subscription_id} does not exist")


async def create_subscription(request: web.Request) -> web.Response:
    body = await read_json(request, SubscriptionCreate)
    try:
        subscription = await store(request).create(
            body.url,
            event_types=body.event_types,
            description=body.description,
            secret=body.secret,
            max_in_flight=body.max_in_flight,
            enabled=body.enabled,
            filter=[condition_of(item) for item in body.filter],
            headers=body.headers,
            format=body.format,
            ordering=body.ordering,
            ordering_key=body.ordering_key,
        )
    except InvalidSubscription as exc:
        raise _invalid(exc) from None
    return respond(
        _as_response(subscription, with_secret=True),
        status=201,
        headers={"Location": f"/subscriptions/{subscription.id}"},
    )


async def list_subscriptions(request: web.Request) -> web.Response:
    page = read_query(request, SubscriptionPage)
    found = await store(request).page(after=page.after, limit=page.limit + 1)
    items = found[: page.limit]
    more = len(found) > page.limit
    return respond(
        SubscriptionList(
            items=[_as_response(s) for s in items], next_after=items[-1].id if more else None
        )
    )


async def get_subscription(request: web.Request) -> web.Response:
    subscription_id = path_id(request, "subscription_id")
    subscription = await store(request).get(subscription_id)
    if subscription is None:
        raise _not_found(subscription_id)
    return respond(_as_response(subscription))


async def update_subscription(request: web.Request) -> web.Response:
    subscription_id = path_id(request, "subscription_id")
    body = await read_json(request, SubscriptionUpdate)
    changes: dict[str, Any] = {
        "url": body.url,
        "description": body.description,
        "event_types": body.event_types,
        "enabled": body.enabled,
        "filter": None if body.filter is None else [condition_of(i) for i in body.filter],
        "headers": body.headers,
        "format": body.format,
        "ordering": body.ordering,
        "ordering_key": body.ordering_key,
    }
    if "max_in_flight" in body.model_fields_set:  # null clears it; absent keeps it
        changes["max_in_flight"] = body.max_in_flight
    rotate = body.rotate_secret or body.secret is not None
    overlap = request.app[SETTINGS].secret_rotation_overlap_seconds
    async with request.app[POOL].acquire() as conn, conn.transaction():
        subscriptions = store(request, conn)
        try:
            subscription = await subscriptions.update(subscription_id, **changes)
            if subscription is not None and rotate:
                subscription = await subscriptions.rotate_secret(
                    subscription_id, overlap, body.secret
                )
        except InvalidSubscription as exc:
            raise _invalid(exc) from None
    if subscription is None:
        raise _not_found(subscription_id)
    return respond(_as_response(subscription, with_secret=rotate))


async def delete_subscription(request: web.Request) -> web.Response:
    subscription_id = path_id(request, "subscription_id")
    try:
        deleted = await store(request).delete(subscription_id)
    except asyncpg.ForeignKeyViolationError:
        raise Problem(
            "subscription-in-use",
            f"subscription {subscription_id} still has deliveries; disable it instead",
        ) from None
    if not deleted:
        raise _not_found(subscription_id)
    return web.Response(status=204)


def add_routes(app: web.Application) -> None:
    """Register the subscription routes."""
    app.router.add_post("/subscriptions", create_subscription)
    app.router.add_get("/subscriptions", list_subscriptions, allow_head=False)
    app.router.add_get("/subscriptions/{subscription_id}", get_subscription, allow_head=False)
    app.router.add_patch("/subscriptions/{subscription_id}", update_subscription)
    app.router.add_delete("/subscriptions/{subscription_id}", delete_subscription)
