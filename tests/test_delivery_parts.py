"""The pure parts of delivery: signing, timestamps, retry timing, and task supervision."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from notifier.engine.daemon import supervise
from notifier.engine.retry import RetryPolicy
from notifier.envelope import timestamp
from notifier.sinks.http import parse_retry_after
from notifier.sinks.signing import InvalidSignature, signature_header, verify
from notifier.subscriptions.store import generate_secret


def test_signatures_verify_with_the_standardwebhooks_package() -> None:
    current, previous, stranger = generate_secret(), generate_secret(), generate_secret()
    body = b'{"id":"x","type":"transaction.created"}'
    now = int(datetime.now(UTC).timestamp())
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(now),
        "webhook-signature": signature_header([current, previous], "msg_1", now, body),
    }
    assert Webhook(current).verify(body, headers)["id"] == "x"
    assert Webhook(previous).verify(body, headers)["id"] == "x"
    with pytest.raises(WebhookVerificationError):
        Webhook(stranger).verify(body, headers)
    verify(current, headers, body, now=now)
    with pytest.raises(InvalidSignature):
        verify(current, headers, body + b" ", now=now)
    with pytest.raises(InvalidSignature, match="tolerance"):
        verify(current, headers, body, now=now + 301)


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (datetime(2026, 11, 21, 20, 0, tzinfo=UTC), "2026-11-21T20:00:00.000000Z"),
        (
            datetime(2026, 11, 21, 21, 30, 0, 123456, tzinfo=timezone(timedelta(hours=1))),
            "2026-11-21T20:30:00.123456Z",
        ),
        (datetime(999, 1, 2, 3, 4, 5, 6, tzinfo=UTC), "0999-01-02T03:04:05.000006Z"),
    ],
)
def test_timestamps_take_the_contract_form(moment: datetime, expected: str) -> None:
    assert timestamp(moment) == expected
    assert datetime.fromisoformat(timestamp(moment)) == moment


def test_schedule_then_dead_with_injected_jitter() -> None:
    policy = RetryPolicy((5, 300), retry_after_max=60, jitter=lambda d: d * 1.1)
    assert policy.max_attempts == 3
    assert policy.next_delay(1) == pytest.approx(5.5)
    assert policy.next_delay(2) == pytest.approx(330)
    assert policy.next_delay(3) is None


def test_retry_after_is_honoured_within_bounds() -> None:
    policy = RetryPolicy((5, 300), retry_after_max=60, jitter=lambda d: d)
    assert policy.next_delay(1, retry_after=20) == 20
    assert policy.next_delay(1, retry_after=7200) == 60
    assert policy.next_delay(2, retry_after=20) == 20
    assert policy.next_delay(3, retry_after=20) is None
    now = datetime(2026, 11, 21, 20, 0, 0, tzinfo=UTC)
    assert parse_retry_after("120", now) == 120
    assert parse_retry_after("Sat, 21 Nov 2026 20:01:30 GMT", now) == 90
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


@pytest.mark.parametrize(
    "hostile",
    ["-5", "1.5", "\u00b2", "\u0661\u0662", "1\x00", "Mon, 01 Jan 99999 00:00:00 GMT", ""],
)
def test_a_retry_after_that_is_not_one_is_ignored(hostile: str) -> None:
    assert parse_retry_after(hostile, datetime(2026, 11, 21, tzinfo=UTC)) is None


def test_an_absurdly_long_retry_after_is_capped() -> None:
    policy = RetryPolicy((5,), retry_after_max=60, jitter=lambda d: d)
    asked = parse_retry_after("9" * 5000, datetime(2026, 11, 21, tzinfo=UTC))
    assert policy.next_delay(1, asked) == 60


async def test_supervise_names_a_task_that_dies() -> None:
    async def forever() -> None:
        await asyncio.sleep(3600)

    async def crash() -> None:
        await asyncio.sleep(0.01)
        raise RuntimeError("boom")

    tasks = {"steady": asyncio.create_task(forever()), "broken": asyncio.create_task(crash())}
    assert await supervise(tasks, asyncio.Event()) == "broken"
    stop = asyncio.Event()
    stop.set()
    tasks["steady2"] = asyncio.create_task(forever())
    assert await supervise({"steady2": tasks["steady2"]}, stop) is None
    for task in tasks.values():
        task.cancel()
    await asyncio.gather(*tasks.values(), return_exceptions=True)
