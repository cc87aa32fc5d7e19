"""The operator's commands as a user runs them: events, deliveries, subscription stats,
recover and replay, retention, filters and the SSRF guard on `subscriptions add`."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

from tests.ops_support import fanned_events, subscription
from tests.support import IPV6_FORMS_OF_PRIVATE_TARGETS
from tests.test_daemon_cli import notifier

Conn = psycopg.Connection[Any]


def _ok(result: Any) -> str:
    assert result.returncode == 0, result.stderr
    return str(result.stdout)


def _error(result: Any) -> str:
    assert result.returncode == 1, result.stdout
    assert result.stderr.startswith("notifier: error: "), result.stderr
    return str(result.stderr)


def test_inspect_and_retry(database_url: str, dba: Conn) -> None:
    sub = subscription(dba)
    [uid] = fanned_events(dba, sub, 1, status="dead")
    event = json.loads(_ok(notifier(database_url, "events", "show", uid)))
    assert event["id"] == uid
    assert event["deliveries"][0]["attempt_log"][0]["status_code"] == 500
    assert "no event" in _error(
        notifier(database_url, "events", "show", "0190a0c4-8f2e-7c1a-9b3d-5e6f7a8b9c0d")
    )
    assert "not an event id" in _error(notifier(database_url, "events", "show", "nope"))

    listed = _ok(
        notifier(database_url, "deliveries", "list", "--status", "dead", "--subscription", str(sub))
    )
    [delivery] = [json.loads(line) for line in listed.splitlines()]
    assert delivery["event_id"] == uid
    assert (
        _ok(notifier(database_url, "deliveries", "list", "--since", "1h", "--status", "pending"))
        == ""
    )
    retried = json.loads(_ok(notifier(database_url, "deliveries", "retry", str(delivery["id"]))))
    assert retried["status"] == "pending"
    assert "does not exist" in _error(notifier(database_url, "deliveries", "retry", "999"))
    bad = notifier(database_url, "deliveries", "list", "--since", "last tuesday")
    assert bad.returncode == 2
    assert "neither an ISO 8601 moment" in bad.stderr


def test_stats_recover_replay(database_url: str, dba: Conn) -> None:
    sub = subscription(dba)
    dba.execute("UPDATE notifier.subscriptions SET created_at = now() - interval '1 day'")
    fanned_events(dba, sub, 4, status="dead", age="1 hour")
    stats = json.loads(_ok(notifier(database_url, "subscriptions", "stats", str(sub))))
    assert stats["deliveries"]["dead"] == 4
    recovered = json.loads(
        _ok(notifier(database_url, "subscriptions", "recover", str(sub), "--since", "2h"))
    )
    assert (recovered["reset"], recovered["created"]) == (4, 0)
    late = subscription(dba, "https://example.com/late")
    replayed = json.loads(
        _ok(
            notifier(
                database_url,
                "subscriptions",
                "replay",
                str(late),
                "--since",
                "2000-01-01T00:00:00Z",
                "--until",
                "2100-01-01T00:00:00+00:00",
            )
        )
    )
    assert (replayed["created"], replayed["reset"]) == (4, 0)
    again = json.loads(
        _ok(
            notifier(database_url, "subscriptions", "replay", str(late), "--since", "1d", "--again")
        )
    )
    assert again["reset"] == 4
    assert "does not exist" in _error(
        notifier(database_url, "subscriptions", "recover", "99", "--since", "1h")
    )
    assert "subscription 99 does not exist" in _error(
        notifier(database_url, "subscriptions", "stats", "99")
    )
    naive = notifier(database_url, "subscriptions", "recover", str(sub), "--since", "2026-01-01")
    assert naive.returncode == 2
    assert "time zone" in naive.stderr


@pytest.mark.parametrize(
    "bounds",
    [
        ["--since", "2026-01-02T00:00:00Z", "--until", "2026-01-01T00:00:00Z"],
        ["--since", "1h", "--until", "2h"],  # until two hours ago is before since
    ],
)
def test_replay_refuses_a_range_that_ends_before_it_starts(
    database_url: str, dba: Conn, bounds: list[str]
) -> None:
    sub = subscription(dba)
    error = _error(notifier(database_url, "subscriptions", "replay", str(sub), *bounds))
    assert "until" in error
    assert "later than since" in error
    assert dba.execute("SELECT count(*) FROM notifier.deliveries").fetchone() == (0,)


def test_retention_run(database_url: str, dba: Conn) -> None:
    sub = subscription(dba)
    fanned_events(dba, sub, 30, status="succeeded", age="8 days")
    fanned_events(dba, sub, 5, status="succeeded", age="1 day")
    result = json.loads(_ok(notifier(database_url, "retention", "run")))
    assert (result["ran"], result["deleted"]) == (True, 30)
    row = dba.execute("SELECT count(*) FROM notifier.events").fetchone()
    assert row == (5,)


def test_filters_on_subscriptions_add(database_url: str) -> None:
    added = json.loads(
        _ok(
            notifier(
                database_url,
                "subscriptions",
                "add",
                "https://example.com/big",
                "--filter",
                "amount >= 100000",
                "--filter",
                "kind = debit",
            )
        )
    )
    assert added["filter"] == [
        {"field": "amount", "op": ">=", "value": 100000},
        {"field": "kind", "op": "=", "value": "debit"},
    ]
    error = _error(
        notifier(
            database_url, "subscriptions", "add", "https://example.com/x", "--filter", "amount"
        )
    )
    assert "'amount' is not 'field operator value'" in error


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:9000/hook", "http://169.254.169.254/latest/meta-data"]
)
def test_private_targets_refused_by_default_and_allowed_by_override(
    database_url: str, url: str
) -> None:
    refused = _error(notifier(database_url, "subscriptions", "add", url, allow_private=False))
    assert "not a public address" in refused
    assert "NOTIFIER_ALLOW_PRIVATE_TARGETS" in refused
    added = json.loads(_ok(notifier(database_url, "subscriptions", "add", url, allow_private=True)))
    assert added["url"] == url


@pytest.mark.parametrize("url", IPV6_FORMS_OF_PRIVATE_TARGETS)
def test_ipv6_forms_carrying_loopback_or_metadata_are_refused(
    database_url: str, dba: Conn, url: str
) -> None:
    refused = _error(notifier(database_url, "subscriptions", "add", url, allow_private=False))
    assert "not a public address" in refused
    assert dba.execute("SELECT count(*) FROM notifier.subscriptions").fetchone() == (0,)
