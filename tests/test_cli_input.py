"""What the CLI does with input it cannot use: one clear line, never a traceback or a secret.

Each command runs as a user runs it, against the real database.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from typing import Any

import psycopg
import pytest

from notifier.devtools import SECRET_ENV
from notifier.sinks.signing import signature_header
from notifier.subscriptions.store import generate_secret
from tests.support import free_port
from tests.test_daemon_cli import notifier

Conn = psycopg.Connection[Any]


def _one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr
    assert "whsec_" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize("value", ["0", "-3", "99999999999"])
def test_subscriptions_add_refuses_max_in_flight_out_of_the_api_bounds(
    database_url: str, dba: Conn, value: str
) -> None:
    result = notifier(
        database_url, "subscriptions", "add", "https://8.8.8.8/hook", "--max-in-flight", value
    )
    assert result.returncode == 1
    assert _one_line_error(result).startswith("notifier: error: --max-in-flight: ")
    assert dba.execute("SELECT count(*) FROM notifier.subscriptions").fetchone() == (0,)


@pytest.mark.parametrize("value", ["1", "1000"])
def test_subscriptions_add_takes_max_in_flight_within_the_api_bounds(
    database_url: str, value: str
) -> None:
    result = notifier(
        database_url, "subscriptions", "add", "https://8.8.8.8/hook", "--max-in-flight", value
    )
    assert result.returncode == 0, result.stderr


def test_subscriptions_add_checks_every_field_as_the_api_does(database_url: str) -> None:
    too_long = "x" * 1001
    result = notifier(
        database_url, "subscriptions", "add", "https://8.8.8.8/hook", "--description", too_long
    )
    assert result.returncode == 1
    assert _one_line_error(result).startswith("notifier: error: --description: ")


@pytest.mark.parametrize("value", ["-5", "0", "ten"])
def test_deliveries_list_refuses_a_limit_that_is_not_a_positive_integer(
    database_url: str, value: str
) -> None:
    result = notifier(database_url, "deliveries", "list", "--limit", value)
    assert result.returncode == 2
    assert result.stdout == ""
    assert f"argument --limit: {value!r} is not a whole number from 1 to" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "command",
    [
        ["subscriptions", "stats", "99999999999999999999"],
        ["deliveries", "retry", "99999999999999999999"],
        ["deliveries", "list", "--subscription", "99999999999999999999"],
    ],
)
def test_ids_beyond_a_bigint_are_usage_errors(database_url: str, command: list[str]) -> None:
    result = notifier(database_url, *command)
    assert result.returncode == 2
    assert "is not a whole number from 1 to" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "command",
    [
        ["stats", "999"],
        ["recover", "999", "--since", "1h"],
        ["replay", "999", "--since", "1h"],
        ["enable", "999"],
        ["disable", "999"],
        ["remove", "999"],
    ],
)
def test_every_subscription_command_says_not_found_the_same_way(
    database_url: str, command: list[str]
) -> None:
    result = notifier(database_url, "subscriptions", *command)
    assert (result.returncode, result.stderr) == (
        1,
        "notifier: error: subscription 999 does not exist\n",
    )


def test_watch_needs_a_table_or_list(database_url: str) -> None:
    result = notifier(database_url, "watch")
    assert result.returncode == 2
    assert result.stdout == ""
    assert "one of the arguments TABLE --list is required" in result.stderr
    listed = notifier(database_url, "watch", "--list")
    assert (listed.returncode, listed.stdout) == (0, "transactions\ttransaction\n")


def test_receiver_without_a_secret_says_where_to_give_one() -> None:
    env = {k: v for k, v in os.environ.items() if k != SECRET_ENV}
    result = subprocess.run(
        [sys.executable, "-m", "notifier.cli", "receiver", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert _one_line_error(result) == (
        f"notifier: error: no signing secret: set {SECRET_ENV} (or pass --secret)"
    )


def _wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, "the receiver exited"
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError("the receiver did not listen")


def test_receiver_reads_its_secret_from_the_environment() -> None:
    secret, port = generate_secret(), free_port()
    receiver = subprocess.Popen(
        [sys.executable, "-m", "notifier.cli", "receiver", "--port", str(port)],
        env={**os.environ, SECRET_ENV: secret},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_port(port, receiver)
        body, now = b'{"type": "demo.created"}', int(time.time())
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/",
            data=body,
            headers={
                "webhook-id": "msg_1",
                "webhook-timestamp": str(now),
                "webhook-signature": signature_header([secret], "msg_1", now, body),
            },
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 204
    finally:
        receiver.terminate()
        receiver.wait(10)
