"""W3C Trace Context (https://www.w3.org/TR/trace-context/): the trace a change was made
in, read from a caller's headers and passed on with every delivery of its events."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

# Version 00 has exactly these four fields; a later version may append more after a dash.
_TRACEPARENT = re.compile(
    r"(?P<version>[0-9a-f]{2})-(?P<trace_id>[0-9a-f]{32})-(?P<parent_id>[0-9a-f]{16})"
    r"-(?P<flags>[0-9a-f]{2})"
)
_KEY_CHAR = r"[a-z0-9_\-*/]"
_MEMBER = re.compile(
    rf"(?:[a-z]{_KEY_CHAR}{{0,255}}|[a-z0-9]{_KEY_CHAR}{{0,240}}@[a-z]{_KEY_CHAR}{{0,13}})"
    r"=[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]"
)
MAX_MEMBERS = 32
# What every tracer is asked to pass on; the outbox holds no longer a value.
MAX_TRACESTATE = 512
# What the capture trigger lets through (notifier.is_tracestate): printable ASCII.
_STORED_TRACESTATE = re.compile(rf"[\x20-\x7e]{{1,{MAX_TRACESTATE}}}")


@dataclass(frozen=True, slots=True)
class TraceContext:
    """A valid version-00 ``traceparent``, and the ``tracestate`` that came with it."""

    traceparent: str
    tracestate: str | None = None

    @property
    def trace_id(self) -> str:
        return self.traceparent[3:35]

    def items(self) -> list[tuple[str, str]]:
        """The header (or attribute) names and values, as they are sent."""
        pairs = [("traceparent", self.traceparent)]
        if self.tracestate:
            pairs.append(("tracestate", self.tracestate))
        return pairs

    @classmethod
    def stored(cls, traceparent: str | None, tracestate: str | None) -> TraceContext | None:
        """What the outbox holds for an event. The capture trigger refuses a malformed
        trace, but a row written around it is checked here, before anything of it becomes
        a header: a malformed ``traceparent`` is no trace, a malformed ``tracestate`` is
        left out."""
        if traceparent is None or parse_traceparent([traceparent]) != traceparent:
            return None
        if tracestate is not None and not _STORED_TRACESTATE.fullmatch(tracestate):
            tracestate = None
        return cls(traceparent, tracestate)


def parse_traceparent(values: Sequence[str]) -> str | None:
    """The ``traceparent`` header's values as version 00, or None where the spec says to
    start a new trace: absent, repeated, malformed, version ``ff``, or an all-zero id.
    A later version's first four fields are kept, as the spec asks."""
    if len(values) != 1:
        return None
    value = values[0].strip(" \t")
    match = _TRACEPARENT.match(value)
    if match is None:
        return None
    version = match["version"]
    if version == "ff" or (version == "00" and len(value) != 55):
        return None
    if len(value) > 55 and value[55] != "-":
        return None
    if set(match["trace_id"]) == {"0"} or set(match["parent_id"]) == {"0"}:
        return None
    return f"00-{match['trace_id']}-{match['parent_id']}-{match['flags']}"


def parse_tracestate(values: Sequence[str]) -> str | None:
    """The ``tracestate`` header's list members (several header lines are one list), or
    None when any member is malformed, a key repeats, or there are more than 32. Members
    are dropped from the end until the list fits in 512 characters."""
    members = [m.strip(" \t") for value in values for m in value.split(",")]
    members = [m for m in members if m]
    if not members or len(members) > MAX_MEMBERS:
        return None
    if not all(_MEMBER.fullmatch(m) for m in members):
        return None
    keys = [m.partition("=")[0] for m in members]
    if len(set(keys)) != len(keys):
        return None
    while members and len(",".join(members)) > MAX_TRACESTATE:
        members.pop()
    return ",".join(members) or None


def from_headers(traceparent: Sequence[str], tracestate: Sequence[str]) -> TraceContext | None:
    """The caller's trace context, or None: a ``tracestate`` without a valid
    ``traceparent`` is ignored, as the spec asks."""
    parent = parse_traceparent(traceparent)
    if parent is None:
        return None
    return TraceContext(parent, parse_tracestate(tracestate) if tracestate else None)
