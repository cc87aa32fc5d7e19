"""What a message carries besides the event's body: CloudEvents attributes, and names
(routing keys, subjects, topics) rendered from a subscription's template."""

from __future__ import annotations

import json
import re

from notifier.envelope import Envelope, timestamp

SPECVERSION = "1.0"
CONTENT_TYPE = "application/json"
STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"
# The placeholders a routing key, subject or topic may hold.
PLACEHOLDERS = ("{type}", "{topic}")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


def cloudevents_attributes(envelope: Envelope, source: str) -> dict[str, str]:
    """The CloudEvents 1.0 required attributes, plus ``time`` (the capture) and, for an
    event made in a trace, the distributed tracing extension's ``traceparent`` and
    ``tracestate``."""
    attributes = {
        "specversion": SPECVERSION,
        "id": str(envelope.id),
        "source": source,
        "type": envelope.type,
        "time": timestamp(envelope.created_at),
    }
    if envelope.trace is not None:
        attributes.update(envelope.trace.items())
    return attributes


def structured(envelope: Envelope, source: str) -> bytes:
    """The event in CloudEvents' structured JSON mode: the attributes, and the webhook
    body as ``data``, byte for byte, so one parser serves every format."""
    head = {**cloudevents_attributes(envelope, source), "datacontenttype": CONTENT_TYPE}
    return (
        json.dumps(head, separators=(",", ":"))[:-1].encode() + b',"data":' + envelope.body + b"}"
    )


def unknown_placeholders(template: str) -> list[str]:
    """The ``{...}`` in ``template`` that are not placeholders a message name may use."""
    return [m.group() for m in _PLACEHOLDER.finditer(template) if m.group() not in PLACEHOLDERS]


def render(template: str, event_type: str) -> str:
    """``template`` with ``{type}`` (``transaction.created``) and ``{topic}``
    (``transaction``) filled in."""
    if "{" not in template:
        return template
    topic = event_type.partition(".")[0]
    return template.replace("{type}", event_type).replace("{topic}", topic)
