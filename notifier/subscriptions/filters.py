"""Row-value filters on subscriptions: parse and validate conditions; SQL evaluates them.

A condition compares one field of the event's row (``amount``, or a path into a JSON
column such as ``metadata.tier``) with a value: ``=``, ``!=``, ``<``, ``<=``, ``>``,
``>=``, ``in``, ``not in``. A subscription's conditions must all hold. The database
evaluates them (``notifier.row_matches``) when it fans an event out.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

OPERATORS = ("=", "!=", "<", "<=", ">", ">=", "in", "not in")
MAX_CONDITIONS = 20
MAX_LIST_VALUES = 1000
# A column name or a dotted path into a JSON column; public for the API's OpenAPI document.
FIELD_REGEX = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$"
_FIELD = re.compile(FIELD_REGEX)
_TEXT = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(>=|<=|!=|=|>|<|\bnot\s+in\b|\bin\b)\s*(.+?)\s*$")

_WORD = re.compile(r"^[\w.:@+-]+$")

Scalar = str | int | float | bool | None


class InvalidFilter(ValueError):
    """A filter condition is malformed; the message says which and why."""


@dataclass(frozen=True)
class Condition:
    field: str
    op: str
    value: Scalar | list[Scalar]

    def as_stored(self) -> dict[str, Any]:
        """The form kept in ``subscriptions.filter`` and read by the SQL evaluator."""
        return {"path": self.field.split("."), "op": self.op, "value": self.value}

    def as_dict(self) -> dict[str, Any]:
        return {"field": self.field, "op": self.op, "value": self.value}

    def __str__(self) -> str:
        return f"{self.field} {self.op} {json.dumps(self.value)}"


def _is_scalar(value: object) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def condition(field: object, op: object, value: object) -> Condition:
    """Validate one condition given as its three parts."""
    # fullmatch: with match, "$" also matches before a final newline.
    if not isinstance(field, str) or not _FIELD.fullmatch(field):
        raise InvalidFilter(f"field {field!r} must be a column name or a dotted path")
    if op not in OPERATORS:
        raise InvalidFilter(f"operator {op!r} must be one of {', '.join(OPERATORS)}")
    assert isinstance(op, str)
    if op in ("in", "not in"):
        if not isinstance(value, list) or not value or not all(map(_is_scalar, value)):
            raise InvalidFilter(f"{field} {op}: the value must be a non-empty list of scalars")
        if len(value) > MAX_LIST_VALUES:
            raise InvalidFilter(f"{field} {op}: at most {MAX_LIST_VALUES} values")
    elif op in ("=", "!="):
        if not _is_scalar(value):
            raise InvalidFilter(f"{field} {op}: the value must be a string, number, bool or null")
    elif isinstance(value, bool) or not isinstance(value, str | int | float):
        raise InvalidFilter(f"{field} {op}: the value must be a number or a string")
    return Condition(field, op, value)  # type: ignore[arg-type]


def _value(text: str) -> Any:
    """A JSON value, or a bare word as a string: ``debit`` reads as ``"debit"``."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    if text.startswith("[") and text.endswith("]"):
        return [_value(part.strip()) for part in text[1:-1].split(",") if part.strip()]
    if not _WORD.match(text):
        raise InvalidFilter(f"{text!r} is not a value: quote a string with spaces or symbols")
    return text


def parse(text: str) -> Condition:
    """Parse ``amount >= 100000``, ``kind = debit``, ``account_id in [1, 2]``."""
    match = _TEXT.match(text)
    if not match:
        raise InvalidFilter(f"{text!r} is not 'field operator value' (e.g. amount >= 100000)")
    field, op, value = match.groups()
    return condition(field, " ".join(op.split()), _value(value))


def validate(conditions: list[Condition]) -> list[Condition]:
    if len(conditions) > MAX_CONDITIONS:
        raise InvalidFilter(f"at most {MAX_CONDITIONS} conditions")
    return conditions


def from_stored(stored: list[dict[str, Any]]) -> list[Condition]:
    """Conditions as read back from ``subscriptions.filter``."""
    return [Condition(".".join(c["path"]), c["op"], c["value"]) for c in stored]
