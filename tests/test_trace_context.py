"""Reading W3C Trace Context headers, and where each destination carries the trace."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from notifier.envelope import Envelope
from notifier.sinks import amqp, aws, kafka
from notifier.sinks.base import Destination
from notifier.sinks.http import request
from notifier.sinks.message import structured
from notifier.tracecontext import TraceContext, from_headers, parse_traceparent, parse_tracestate

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([PARENT], PARENT),
        ([f" {PARENT}\t"], PARENT),
        # A later version: its first four fields, as version 00.
        ([f"01-{TRACE_ID}-00f067aa0ba902b7-03-more"], f"00-{TRACE_ID}-00f067aa0ba902b7-03"),
        ([f"01-{TRACE_ID}-00f067aa0ba902b7-03"], f"00-{TRACE_ID}-00f067aa0ba902b7-03"),
        ([], None),
        ([PARENT, PARENT], None),  # repeated: the spec says to start anew
        ([PARENT + "-x"], None),  # version 00 has exactly four fields
        ([f"01-{TRACE_ID}-00f067aa0ba902b7-03x"], None),
        ([f"ff-{TRACE_ID}-00f067aa0ba902b7-01"], None),
        ([PARENT.upper()], None),
        ([f"00-{'0' * 32}-00f067aa0ba902b7-01"], None),
        ([f"00-{TRACE_ID}-{'0' * 16}-01"], None),
        ([f"00-{TRACE_ID}-00f067aa0ba902b-01"], None),
        (["00-\r\nx"], None),
    ],
)
def test_traceparent_follows_the_spec(values: list[str], expected: str | None) -> None:
    assert parse_traceparent(values) == expected


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["rojo=00f067aa0ba902b7"], "rojo=00f067aa0ba902b7"),
        (["rojo=1 , congo=2", "t@sys=x y"], "rojo=1,congo=2,t@sys=x y"),
        (["a=1,,b=2"], "a=1,b=2"),
        (["a=1,a=2"], None),  # a key twice
        (["Upper=1"], None),
        (["a=1,b"], None),
        (["a=caf\u00e9"], None),
        (["a=x\r\nInjected: 1"], None),
        ([",".join(f"k{n}=v" for n in range(33))], None),
        ([""], None),
    ],
)
def test_tracestate_follows_the_spec(values: list[str], expected: str | None) -> None:
    assert parse_tracestate(values) == expected


def test_a_long_tracestate_loses_members_from_the_end_until_it_fits() -> None:
    members = [f"k{n}=" + "v" * 100 for n in range(8)]
    kept = parse_tracestate([",".join(members)])
    assert kept == ",".join(members[:4])
    assert kept is not None
    assert len(kept) <= 512


def test_a_tracestate_without_a_valid_traceparent_is_ignored() -> None:
    assert from_headers([], ["a=1"]) is None
    assert from_headers(["garbage"], ["a=1"]) is None
    assert from_headers([PARENT], ["A=1"]) == TraceContext(PARENT, None)
    assert from_headers([PARENT], ["a=1"]) == TraceContext(PARENT, "a=1")


def _envelope(trace: TraceContext | None) -> Envelope:
    return Envelope.of(uuid.uuid4(), "transaction.created", datetime.now(UTC), "{}", None, trace)


@pytest.mark.parametrize("trace", [TraceContext(PARENT, "a=1"), None])
def test_every_destination_carries_the_trace_of_a_traced_event_alone(
    trace: TraceContext | None,
) -> None:
    envelope = _envelope(trace)
    expected = {"traceparent": PARENT, "tracestate": "a=1"} if trace else {}

    def traced(carried: dict[str, object], prefix: str = "") -> dict[str, object]:
        names = {f"{prefix}traceparent": "traceparent", f"{prefix}tracestate": "tracestate"}
        return {names[k]: v for k, v in carried.items() if k in names}

    _, headers = request(Destination("https://example.com/"), envelope, 0.0, "notifier")
    assert traced(dict(headers)) == expected
    message = amqp.message(envelope, "notifier")
    assert traced(dict(message.headers), "cloudEvents_") == expected
    kafka_headers = {k: v.decode() for k, v in kafka.headers(envelope, "notifier")}
    assert traced(dict(kafka_headers), "ce_") == expected
    attributes = aws.message_attributes(envelope, "notifier")
    assert traced({k: v["StringValue"] for k, v in attributes.items()}, "ce_") == expected
    assert len(attributes) <= 10  # SQS and SNS take ten message attributes at most
    cloudevent = structured(envelope, "notifier")
    assert (b'"traceparent":"' + PARENT.encode() + b'"' in cloudevent) == (trace is not None)
