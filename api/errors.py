"""Errors as problem+json (RFC 9457): one problem type per domain error."""

from __future__ import annotations

import json
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema

from notifier.db.errors import is_retryable, one_line
from notifier.observability.logging import get_logger

log = get_logger("api.errors")

PROBLEM_CONTENT_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:notifier:problem:"

# Problem types of this API: slug -> (status, title). HTTP errors without a domain
# meaning (404 for an unknown route, 405, 413, ...) use "about:blank" instead.
PROBLEM_TYPES: Mapping[str, tuple[int, str]] = {
    "malformed-json": (400, "Malformed JSON"),
    "invalid-header": (400, "Invalid header"),
    "unauthorized": (401, "Unauthorized"),
    "not-found": (404, "Not found"),
    "insufficient-funds": (409, "Insufficient funds"),
    "currency-mismatch": (409, "Currency mismatch"),
    "balance-overflow": (409, "Balance overflow"),
    "idempotency-key-in-use": (409, "Idempotency key in use"),
    "subscription-in-use": (409, "Subscription in use"),
    "delivery-in-flight": (409, "Delivery in flight"),
    "request-too-large": (413, "Request body too large"),
    "unsupported-media-type": (415, "Unsupported media type"),
    "validation-failed": (422, "Validation failed"),
    "idempotency-key-reused": (422, "Idempotency key reused"),
    "database-unavailable": (503, "Database unavailable"),
    "internal-error": (500, "Internal server error"),
}


class FieldError(BaseModel):
    field: str
    message: str


def _without_defaults(schema: dict[str, Any]) -> None:
    # An optional member is left out, not sent as its default.
    for member in schema["properties"].values():
        member.pop("default", None)


class ProblemDetails(BaseModel):
    """The body of every error response; the members after ``detail`` are present only
    on the problems that carry them."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_without_defaults)

    type: str
    title: str
    status: int = Field(ge=400, le=599)
    detail: str
    errors: list[FieldError] | SkipJsonSchema[None] = Field(
        default=None, description="On 422: each bad field and what is wrong with it."
    )
    account_id: int | SkipJsonSchema[None] = None
    balance: int | None = Field(default=None, description="On insufficient funds.")
    amount: int | SkipJsonSchema[None] = Field(
        default=None, description="On insufficient funds and balance overflow."
    )


def problem_body(
    slug: str | None, status: int, title: str, detail: str, **extra: Any
) -> dict[str, Any]:
    """The JSON members of a problem; ``slug`` None means ``about:blank``."""
    details = ProblemDetails(
        type=TYPE_PREFIX + slug if slug else "about:blank",
        title=title,
        status=status,
        detail=detail,
        **extra,
    )
    return details.model_dump(mode="json", exclude_unset=True)


def problem_response(
    body: Mapping[str, Any], headers: Mapping[str, str] | None = None
) -> web.Response:
    """A response carrying a problem body."""
    return web.Response(
        status=int(body["status"]),
        text=json.dumps(body),
        content_type=PROBLEM_CONTENT_TYPE,
        headers=headers,
    )


class Problem(Exception):
    """A request failed in a way the client should hear about; becomes problem+json."""

    def __init__(
        self,
        slug: str,
        detail: str,
        *,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        status, title = PROBLEM_TYPES[slug]
        super().__init__(detail)
        self.body = problem_body(slug, status, title, detail, **extra)
        self.headers = headers

    @property
    def status(self) -> int:
        return int(self.body["status"])

    def response(self) -> web.Response:
        return problem_response(self.body, self.headers)


def http_problem(exc: web.HTTPException) -> web.Response:
    """An aiohttp HTTP error (404, 405, 413, ...) as problem+json, keeping its headers."""
    reason = HTTPStatus(exc.status).phrase
    details = {
        404: "no such resource",
        405: f"method not allowed; allowed: {exc.headers.get('Allow', '')}",
        413: "request body too large",
    }
    detail = details.get(exc.status, exc.text or reason)
    headers = {
        name: value
        for name, value in exc.headers.items()
        if name.lower() not in ("content-type", "content-length")
    }
    return problem_response(problem_body(None, exc.status, reason, detail), headers)


def validation_problem(errors: list[dict[str, str]]) -> Problem:
    """422 listing each bad field."""
    fields = ", ".join(dict.fromkeys(error["field"] for error in errors))
    return Problem("validation-failed", f"invalid fields: {fields}", errors=errors)


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure becomes problem+json; nothing leaks a traceback to the client."""
    try:
        return await handler(request)
    except Problem as problem:
        return problem.response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return http_problem(exc)
    except Exception as exc:
        if is_retryable(exc):
            log.warning("database_unavailable", error=one_line(exc))
            return Problem("database-unavailable", "the database cannot be reached").response()
        log.exception("unhandled_error", method=request.method, path=request.path)
        return Problem("internal-error", "an unexpected error occurred").response()
