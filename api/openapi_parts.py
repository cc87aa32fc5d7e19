"""The pieces every path of the OpenAPI document is built from: JSON and problem
responses, parameters and request bodies."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from api.models import MAX_BIGINT
from api.observability import REQUEST_ID_HEADER

JSON = "application/json"
ID = {"type": "integer", "minimum": 1, "maximum": MAX_BIGINT}
WRITE_ERRORS = (400, 401, 413, 415, 422, 503)

REQUEST_ID = {
    REQUEST_ID_HEADER: {
        "description": "The request's id: the one sent, or a generated one.",
        "required": True,
        "schema": {"type": "string"},
    }
}


def ref(model: type[BaseModel]) -> dict[str, str]:
    """A reference to the model's schema among the document's components."""
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def json_response(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "description": description,
        "headers": REQUEST_ID,
        "content": {JSON: {"schema": schema}},
    }


def problems(*statuses: int) -> dict[str, Any]:
    return {str(status): {"$ref": f"#/components/responses/Problem{status}"} for status in statuses}


def body(model: type[BaseModel], example: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {JSON: {"schema": ref(model), "example": example}}}


def path_id(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": ID, "example": 1}


def query(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema}


def query_int(name: str, minimum: int, maximum: int, default: int | None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "integer", "minimum": minimum, "maximum": maximum}
    if default is not None:
        schema["default"] = default
    return query(name, schema)
