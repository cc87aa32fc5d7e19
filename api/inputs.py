"""Turning a request's path, query string, headers and body into validated values."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from api.errors import Problem, validation_problem
from api.models import MAX_BIGINT, error_list
from api.state import SETTINGS

ModelT = TypeVar("ModelT", bound=BaseModel)

IDEMPOTENCY_KEY_HEADER = "Idempotency-Key"
IDEMPOTENCY_KEY_MAX_CHARS = 255


def path_id(request: web.Request, name: str) -> int:
    """A positive bigint id from the path; anything else names no resource (404)."""
    raw = request.match_info[name]
    value = int(raw) if raw.isascii() and raw.isdigit() else 0
    if not 1 <= value <= MAX_BIGINT:
        raise Problem("not-found", f"no resource with {name} {raw[:40]}")
    return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


async def read_json(request: web.Request, model: type[ModelT]) -> ModelT:
    """The body validated as ``model``: 415, 413, 400 or 422 when it is not."""
    if request.content_type != "application/json":
        raise Problem(
            "unsupported-media-type",
            f"send Content-Type: application/json, not {request.content_type or 'nothing'}",
        )
    limit = request.app[SETTINGS].api_max_body_bytes
    too_large = Problem("request-too-large", f"the body exceeds {limit} bytes")
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise too_large from None
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except RecursionError:
        raise Problem("malformed-json", "the body nests too deeply") from None
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise Problem("malformed-json", f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise validation_problem([{"field": "body", "message": "must be a JSON object"}])
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_problem(error_list(exc)) from None


def read_query(request: web.Request, model: type[ModelT]) -> ModelT:
    """The query string validated as ``model``, or 422 naming each bad parameter."""
    try:
        return model.model_validate(dict(request.query))
    except ValidationError as exc:
        raise validation_problem(error_list(exc)) from None


def idempotency_key(request: web.Request) -> str | None:
    """The Idempotency-Key header: 1 to 255 visible ASCII characters, or absent."""
    values = request.headers.getall(IDEMPOTENCY_KEY_HEADER, [])
    if not values:
        return None
    key = values[0]
    if (
        len(values) > 1
        or not 1 <= len(key) <= IDEMPOTENCY_KEY_MAX_CHARS
        or not all("!" <= ch <= "~" for ch in key)
    ):
        raise Problem(
            "invalid-header",
            f"{IDEMPOTENCY_KEY_HEADER} must be one value of 1 to "
            f"{IDEMPOTENCY_KEY_MAX_CHARS} visible ASCII characters",
        )
    return key
