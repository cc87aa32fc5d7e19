"""The OpenAPI 3.1 document served at /openapi.json.

Request bodies come from the pydantic models that validate them, so the two cannot
drift; building the document fails if a route of the app is not described in it.
"""

from __future__ import annotations

import copy
from typing import Any

from aiohttp import web
from pydantic.json_schema import models_json_schema

from api import openapi_operations
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
from api.observability import REQUEST_ID_HEADER
from notifier import __version__

JSON = "application/json"
PROBLEM = "application/problem+json"

_TIMESTAMP = {"type": "string", "format": "date-time"}
_NULLABLE_TIMESTAMP = {"type": ["string", "null"], "format": "date-time"}
_ID = {"type": "integer", "minimum": 1, "maximum": MAX_BIGINT}

_STATUS = {
    "type": "object",
    "required": ["status"],
    "properties": {"status": {"type": "string"}},
}
_ACCOUNT = {
    "type": "object",
    "additionalProperties": False,
    "required": ["id", "currency", "balance", "created_at", "updated_at"],
    "properties": {
        "id": _ID,
        "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
        "balance": {"type": "integer", "minimum": 0, "description": "Minor units."},
        "created_at": _TIMESTAMP,
        "updated_at": _TIMESTAMP,
    },
}
_TRANSACTION = {
    "type": "object",
    "additionalProperties": False,
    "required": [
        "id",
        "account_id",
        "kind",
        "amount",
        "currency",
        "balance_after",
        "idempotency_key",
        "metadata",
        "created_at",
    ],
    "properties": {
        "id": _ID,
        "account_id": _ID,
        "kind": {"enum": ["top_up", "debit"]},
        "amount": {"type": "integer", "minimum": 1},
        "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
        "balance_after": {"type": "integer", "minimum": 0},
        "idempotency_key": {"type": ["string", "null"]},
        "metadata": {"type": "object"},
        "created_at": _TIMESTAMP,
    },
}
_SUBSCRIPTION = {
    "type": "object",
    "additionalProperties": False,
    "required": [
        "id",
        "url",
        "description",
        "event_types",
        "filter",
        "enabled",
        "disabled_reason",
        "disabled_at",
        "max_in_flight",
        "previous_secret_expires_at",
        "created_at",
        "updated_at",
    ],
    "properties": {
        "id": _ID,
        "url": {"type": "string"},
        "description": {"type": "string"},
        "event_types": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "filter": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["field", "op", "value"],
                "properties": {"field": {"type": "string"}, "op": {"type": "string"}, "value": {}},
            },
        },
        "enabled": {"type": "boolean"},
        "disabled_reason": {"type": ["string", "null"]},
        "disabled_at": _NULLABLE_TIMESTAMP,
        "max_in_flight": {"type": ["integer", "null"]},
        "previous_secret_expires_at": _NULLABLE_TIMESTAMP,
        "created_at": _TIMESTAMP,
        "updated_at": _TIMESTAMP,
    },
}


def _with_secret(schema: dict[str, Any]) -> dict[str, Any]:
    result = copy.deepcopy(schema)
    result["properties"]["secret"] = {
        "type": "string",
        "pattern": "^whsec_",
        "description": "The signing secret; shown only in this response.",
    }
    return result


_PROBLEM = {
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
        "errors": {
            "type": "array",
            "description": "On 422: each bad field and what is wrong with it.",
            "items": {
                "type": "object",
                "required": ["field", "message"],
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            },
        },
        "account_id": {"type": "integer"},
        "balance": {"type": ["integer", "null"], "description": "On insufficient funds."},
        "amount": {"type": "integer", "description": "On insufficient funds."},
    },
}

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

_REQUEST_ID = {
    REQUEST_ID_HEADER: {
        "description": "The request's id: the one sent, or a generated one.",
        "required": True,
        "schema": {"type": "string"},
    }
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "description": description,
        "headers": _REQUEST_ID,
        "content": {JSON: {"schema": schema}},
    }


def _problems(*statuses: int) -> dict[str, Any]:
    return {str(status): {"$ref": f"#/components/responses/Problem{status}"} for status in statuses}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


_EXAMPLES: dict[str, dict[str, Any]] = {
    "AccountCreate": {"currency": "USD"},
    "TransactionCreate": {"amount": 500, "metadata": {"order_id": "o-1001"}},
    "SubscriptionCreate": {
        "url": "https://ads.example.com/hooks/ledger",
        "event_types": ["transaction.*"],
        "description": "ad engine",
    },
    "SubscriptionUpdate": {"rotate_secret": True},
    **openapi_operations.EXAMPLES,
}


def _body(name: str) -> dict[str, Any]:
    return {
        "required": True,
        "content": {JSON: {"schema": _ref(name), "example": _EXAMPLES[name]}},
    }


def _path_id(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": _ID, "example": 1}


def _query_int(name: str, minimum: int, maximum: int, default: int | None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "integer", "minimum": minimum, "maximum": maximum}
    if default is not None:
        schema["default"] = default
    return {"name": name, "in": "query", "required": False, "schema": schema}


_IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "Retry-safe key, scoped to the account: the same key with the same body "
    "returns the first response again; with another body, 422.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"},
}

_WRITE_ERRORS = (400, 401, 413, 415, 422, 503)


def _transaction_post(summary: str) -> dict[str, Any]:
    created = _json(_ref("Transaction"), "Applied (or the stored response of this key).")
    created["headers"] = {
        **_REQUEST_ID,
        "Idempotent-Replayed": {
            "description": "true when this is the stored response of an earlier request.",
            "schema": {"type": "string", "enum": ["true"]},
        },
    }
    return {
        "summary": summary,
        "parameters": [_path_id("account_id"), _IDEMPOTENCY_KEY],
        "requestBody": _body("TransactionCreate"),
        "responses": {"201": created, **_problems(*_WRITE_ERRORS, 404, 409)},
    }


def _paths() -> dict[str, Any]:
    open_route: dict[str, Any] = {"security": []}
    return {
        "/accounts": {
            "post": {
                "summary": "Open an account with balance 0.",
                "requestBody": _body("AccountCreate"),
                "responses": {
                    "201": _json(_ref("Account"), "Created."),
                    **_problems(*_WRITE_ERRORS),
                },
            }
        },
        "/accounts/{account_id}": {
            "get": {
                "summary": "An account and its balance.",
                "parameters": [_path_id("account_id")],
                "responses": {
                    "200": _json(_ref("Account"), "The account."),
                    **_problems(401, 404, 503),
                },
            }
        },
        "/accounts/{account_id}/top-ups": {"post": _transaction_post("Add money.")},
        "/accounts/{account_id}/debits": {"post": _transaction_post("Take money, never below 0.")},
        "/accounts/{account_id}/transactions": {
            "get": {
                "summary": "Transactions, newest first; pass next_before as before for the next page.",
                "parameters": [
                    _path_id("account_id"),
                    _query_int("limit", 1, PAGE_LIMIT_MAX, PAGE_LIMIT_DEFAULT),
                    _query_int("before", 1, MAX_BIGINT, None),
                ],
                "responses": {
                    "200": _json(_page("Transaction", "next_before"), "A page."),
                    **_problems(401, 404, 422, 503),
                },
            }
        },
        "/subscriptions": {
            "post": {
                "summary": "Add a delivery target; the response shows its secret, once.",
                "requestBody": _body("SubscriptionCreate"),
                "responses": {
                    "201": _json(_ref("SubscriptionWithSecret"), "Created."),
                    **_problems(*_WRITE_ERRORS),
                },
            },
            "get": {
                "summary": "Subscriptions in id order; pass next_after as after for the next page.",
                "parameters": [
                    _query_int("limit", 1, PAGE_LIMIT_MAX, PAGE_LIMIT_DEFAULT),
                    _query_int("after", 0, MAX_BIGINT, 0),
                ],
                "responses": {
                    "200": _json(_page("Subscription", "next_after"), "A page."),
                    **_problems(401, 422, 503),
                },
            },
        },
        "/subscriptions/{subscription_id}": {
            "get": {
                "summary": "A subscription, without its secret.",
                "parameters": [_path_id("subscription_id")],
                "responses": {
                    "200": _json(_ref("Subscription"), "The subscription."),
                    **_problems(401, 404, 503),
                },
            },
            "patch": {
                "summary": "Change fields, enable or disable, or rotate the secret (the old "
                "one stays valid for the configured overlap; the new one is shown once).",
                "parameters": [_path_id("subscription_id")],
                "requestBody": _body("SubscriptionUpdate"),
                "responses": {
                    "200": _json(
                        {"anyOf": [_ref("Subscription"), _ref("SubscriptionWithSecret")]},
                        "Updated; carries secret when it was rotated.",
                    ),
                    **_problems(*_WRITE_ERRORS, 404),
                },
            },
            "delete": {
                "summary": "Remove a subscription.",
                "parameters": [_path_id("subscription_id")],
                "responses": {
                    "204": {"description": "Deleted.", "headers": _REQUEST_ID},
                    **_problems(401, 404, 409, 503),
                },
            },
        },
        "/healthz": {
            "get": {
                **open_route,
                "summary": "Liveness: the process answers.",
                "responses": {"200": _json(_STATUS, "Alive.")},
            }
        },
        "/readyz": {
            "get": {
                **open_route,
                "summary": "Readiness: the database answers.",
                "responses": {"200": _json(_STATUS, "Ready."), **_problems(503)},
            }
        },
        "/metrics": {
            "get": {
                **open_route,
                "summary": "Prometheus metrics.",
                "responses": {
                    "200": {
                        "description": "Text exposition format.",
                        "headers": _REQUEST_ID,
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/openapi.json": {
            "get": {
                **open_route,
                "summary": "This document.",
                "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1.")},
            }
        },
    }


def _page(item: str, cursor: str) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["items", cursor],
        "properties": {
            "items": {"type": "array", "items": _ref(item)},
            cursor: {"type": ["integer", "null"]},
        },
    }


def _components() -> dict[str, Any]:
    _, request_schemas = models_json_schema(
        [
            (AccountCreate, "validation"),
            (TransactionCreate, "validation"),
            (SubscriptionCreate, "validation"),
            (SubscriptionUpdate, "validation"),
            (Recover, "validation"),
            (Replay, "validation"),
        ],
        ref_template="#/components/schemas/{model}",
    )
    return {
        "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            **request_schemas["$defs"],
            "Account": _ACCOUNT,
            "Transaction": _TRANSACTION,
            "Subscription": _SUBSCRIPTION,
            "SubscriptionWithSecret": _with_secret(_SUBSCRIPTION),
            "Problem": _PROBLEM,
            **openapi_operations.SCHEMAS,
        },
        "responses": {
            f"Problem{status}": {
                "description": description,
                "headers": _REQUEST_ID,
                "content": {PROBLEM: {"schema": _ref("Problem")}},
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
        "paths": {**_paths(), **openapi_operations.paths(_json, _problems, _path_id, _body)},
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
