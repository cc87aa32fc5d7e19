"""The OpenAPI 3.1 document served at /openapi.json.

Request and response bodies are described by the pydantic models that validate and
serialise them, so the document and the server cannot drift; building the document
fails if a route of the app is not described in it.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from api import openapi_operations
from api.errors import PROBLEM_CONTENT_TYPE, ProblemDetails
from api.inputs import IDEMPOTENCY_KEY_HEADER, IDEMPOTENCY_KEY_MAX_CHARS
from api.models import (
    MAX_BIGINT,
    PAGE_LIMIT_DEFAULT,
    PAGE_LIMIT_MAX,
    AccountCreate,
    Recover,
    Replay,
    SubscriptionCreate,
    SubscriptionUpdate,
    TransactionCreate,
)
from api.openapi_parts import (
    REQUEST_ID,
    WRITE_ERRORS,
    body,
    json_response,
    path_id,
    problems,
    query_int,
    ref,
)
from api.responses import (
    Account,
    Delivery,
    DeliveryList,
    Event,
    Scheduled,
    Status,
    Subscription,
    SubscriptionList,
    SubscriptionStats,
    SubscriptionWithSecret,
    Transaction,
    TransactionList,
)
from api.routes.accounts import REPLAYED_HEADER
from notifier import __version__

_REQUESTS = (
    AccountCreate,
    TransactionCreate,
    SubscriptionCreate,
    SubscriptionUpdate,
    Recover,
    Replay,
)
_RESPONSES = (
    Status,
    Account,
    Transaction,
    TransactionList,
    Subscription,
    SubscriptionWithSecret,
    SubscriptionList,
    Delivery,
    DeliveryList,
    Event,
    SubscriptionStats,
    Scheduled,
    ProblemDetails,
)

_PROBLEM_DESCRIPTIONS = {
    400: "Malformed JSON or an invalid header.",
    401: "Missing or wrong bearer token.",
    404: "No such resource.",
    409: "Refused by the ledger: insufficient funds (with balance and amount), "
    "currency mismatch, balance overflow; a subscription still in use; a delivery being "
    "attempted right now.",
    413: "Body larger than the configured limit.",
    415: "Content-Type is not application/json.",
    422: "Validation failed (errors lists each field), or an Idempotency-Key reused "
    "for a different request.",
    503: "The database cannot be reached.",
}

_IDEMPOTENCY_KEY = {
    "name": IDEMPOTENCY_KEY_HEADER,
    "in": "header",
    "required": False,
    "description": "Retry-safe key, scoped to the account: the same key with the same body "
    "returns the first response again; with another body, 422.",
    "schema": {
        "type": "string",
        "minLength": 1,
        "maxLength": IDEMPOTENCY_KEY_MAX_CHARS,
        "pattern": "^[!-~]+$",
    },
}

# W3C Trace Context: the trace is kept with the event and sent with every delivery. A
# malformed value starts no error: it is ignored, as the specification asks.
_TRACE_CONTEXT = [
    {
        "name": "traceparent",
        "in": "header",
        "required": False,
        "description": "W3C traceparent (00-<trace id>-<parent id>-<flags>): every delivery "
        "of the event this request causes carries it. Any value is accepted; a malformed "
        "one (an empty one too) is ignored.",
        "schema": {"type": "string"},
    },
    {
        "name": "tracestate",
        "in": "header",
        "required": False,
        "description": "W3C tracestate, passed on with the traceparent; a malformed one is "
        "ignored.",
        "schema": {"type": "string"},
    },
]


def _transaction_post(summary: str) -> dict[str, Any]:
    created = json_response(ref(Transaction), "Applied (or the stored response of this key).")
    created["headers"] = {
        **REQUEST_ID,
        REPLAYED_HEADER: {
            "description": "true when this is the stored response of an earlier request.",
            "schema": {"type": "string", "enum": ["true"]},
        },
    }
    return {
        "summary": summary,
        "parameters": [path_id("account_id"), _IDEMPOTENCY_KEY, *_TRACE_CONTEXT],
        "requestBody": body(TransactionCreate, {"amount": 500, "metadata": {"order_id": "o-1001"}}),
        "responses": {"201": created, **problems(*WRITE_ERRORS, 404, 409)},
    }


def _paths() -> dict[str, Any]:
    open_route: dict[str, Any] = {"security": []}
    return {
        "/accounts": {
            "post": {
                "summary": "Open an account with balance 0.",
                "requestBody": body(AccountCreate, {"currency": "USD"}),
                "responses": {
                    "201": json_response(ref(Account), "Created."),
                    **problems(*WRITE_ERRORS),
                },
            }
        },
        "/accounts/{account_id}": {
            "get": {
                "summary": "An account and its balance.",
                "parameters": [path_id("account_id")],
                "responses": {
                    "200": json_response(ref(Account), "The account."),
                    **problems(401, 404, 503),
                },
            }
        },
        "/accounts/{account_id}/top-ups": {"post": _transaction_post("Add money.")},
        "/accounts/{account_id}/debits": {"post": _transaction_post("Take money, never below 0.")},
        "/accounts/{account_id}/transactions": {
            "get": {
                "summary": "Transactions, newest first; pass next_before as before for the next page.",
                "parameters": [
                    path_id("account_id"),
                    query_int("limit", 1, PAGE_LIMIT_MAX, PAGE_LIMIT_DEFAULT),
                    query_int("before", 1, MAX_BIGINT, None),
                ],
                "responses": {
                    "200": json_response(ref(TransactionList), "A page."),
                    **problems(401, 404, 422, 503),
                },
            }
        },
        "/subscriptions": {
            "post": {
                "summary": "Add a delivery target; the response shows its secret, once.",
                "requestBody": body(
                    SubscriptionCreate,
                    {
                        "url": "https://ads.example.com/hooks/ledger",
                        "event_types": ["transaction.*"],
                        "description": "ad engine",
                    },
                ),
                "responses": {
                    "201": json_response(ref(SubscriptionWithSecret), "Created."),
                    **problems(*WRITE_ERRORS),
                },
            },
            "get": {
                "summary": "Subscriptions in id order; pass next_after as after for the next page.",
                "parameters": [
                    query_int("limit", 1, PAGE_LIMIT_MAX, PAGE_LIMIT_DEFAULT),
                    query_int("after", 0, MAX_BIGINT, 0),
                ],
                "responses": {
                    "200": json_response(ref(SubscriptionList), "A page."),
                    **problems(401, 422, 503),
                },
            },
        },
        "/subscriptions/{subscription_id}": {
            "get": {
                "summary": "A subscription, without its secret.",
                "parameters": [path_id("subscription_id")],
                "responses": {
                    "200": json_response(ref(Subscription), "The subscription."),
                    **problems(401, 404, 503),
                },
            },
            "patch": {
                "summary": "Change fields, enable or disable, or rotate the secret (the old "
                "one stays valid for the configured overlap; the new one is shown once).",
                "parameters": [path_id("subscription_id")],
                "requestBody": body(SubscriptionUpdate, {"rotate_secret": True}),
                "responses": {
                    "200": json_response(
                        {"anyOf": [ref(Subscription), ref(SubscriptionWithSecret)]},
                        "Updated; carries secret when it was rotated.",
                    ),
                    **problems(*WRITE_ERRORS, 404),
                },
            },
            "delete": {
                "summary": "Remove a subscription.",
                "parameters": [path_id("subscription_id")],
                "responses": {
                    "204": {"description": "Deleted.", "headers": REQUEST_ID},
                    **problems(401, 404, 409, 503),
                },
            },
        },
        "/healthz": {
            "get": {
                **open_route,
                "summary": "Liveness: the process answers.",
                "responses": {"200": json_response(ref(Status), "Alive.")},
            }
        },
        "/readyz": {
            "get": {
                **open_route,
                "summary": "Readiness: the database answers.",
                "responses": {"200": json_response(ref(Status), "Ready."), **problems(503)},
            }
        },
        "/metrics": {
            "get": {
                **open_route,
                "summary": "Prometheus metrics.",
                "responses": {
                    "200": {
                        "description": "Text exposition format.",
                        "headers": REQUEST_ID,
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/openapi.json": {
            "get": {
                **open_route,
                "summary": "This document.",
                "responses": {"200": json_response({"type": "object"}, "OpenAPI 3.1.")},
            }
        },
    }


def _components() -> dict[str, Any]:
    modes: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        *((model, "validation") for model in _REQUESTS),
        *((model, "serialization") for model in _RESPONSES),
    ]
    refs, schemas = models_json_schema(modes, ref_template="#/components/schemas/{model}")
    # The paths refer to a model by its class name, which pydantic changes on a clash.
    if any(refs[(model, mode)] != ref(model) for model, mode in modes):
        raise RuntimeError("two models of the OpenAPI document share a name")
    return {
        "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
        "schemas": schemas["$defs"],
        "responses": {
            f"Problem{status}": {
                "description": description,
                "headers": REQUEST_ID,
                "content": {PROBLEM_CONTENT_TYPE: {"schema": ref(ProblemDetails)}},
            }
            for status, description in _PROBLEM_DESCRIPTIONS.items()
        },
    }


def build_document(app: web.Application) -> dict[str, Any]:
    """The document; raises if a route of ``app`` is missing from it."""
    document = {
        "openapi": "3.1.0",
        "info": {
            "title": "notifier balance API",
            "version": __version__,
            "description": "Accounts, top-ups, debits and webhook subscriptions. Money is "
            "an integer count of minor units. Errors are application/problem+json.",
        },
        "security": [{"bearerAuth": []}],
        "paths": {**_paths(), **openapi_operations.paths()},
        "components": _components(),
    }
    paths: dict[str, Any] = document["paths"]  # type: ignore[assignment]
    for route in app.router.routes():
        resource = route.resource
        if resource is None or route.method == "HEAD":
            continue
        if route.method.lower() not in paths.get(resource.canonical, {}):
            raise RuntimeError(
                f"{route.method} {resource.canonical} is not in the OpenAPI document"
            )
    return document
