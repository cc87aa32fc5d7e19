"""``notifier api`` as a real process: refuses to run without a token, stops gracefully."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest

from notifier.observability.redaction import redact_url
from tests.support import free_port

COMMAND = [sys.executable, "-m", "notifier.cli", "api"]


def _env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFIER_")}
    env.update(overrides)
    return env


def _request(
    url: str, *, body: dict[str, Any] | None = None, token: str | None = None
) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


@contextlib.contextmanager
def _running_api(
    database_url: str, args: list[str], env: dict[str, str]
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """A ``notifier api`` process on a free port, answering /healthz; killed at the end."""
    port = free_port()
    process = subprocess.Popen(
        [*COMMAND, *args],
        env=_env(
            NOTIFIER_DATABASE_URL=database_url,
            NOTIFIER_API_HOST="127.0.0.1",
            NOTIFIER_API_PORT=str(port),
            NOTIFIER_SHUTDOWN_GRACE_SECONDS="20",
            **env,
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if _request(f"{base}/healthz")[0] == 200:
                    break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"notifier api did not start: {process.communicate()}")
            time.sleep(0.1)
        yield process, base
    finally:
        if process.poll() is None:
            process.kill()
        if process.stdout is not None and not process.stdout.closed:
            process.communicate()


@pytest.fixture
def api_process(
    database_url: str, request: pytest.FixtureRequest
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """A running ``notifier api``; the indirect parameter gives its arguments and env."""
    args, env = request.param
    with _running_api(database_url, args, env) as running:
        yield running


def test_api_without_a_token_exits_non_zero_with_a_clear_message() -> None:
    result = subprocess.run(
        COMMAND,
        env=_env(NOTIFIER_DATABASE_URL="postgresql://nobody@127.0.0.1:1/none"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("notifier: error: NOTIFIER_API_TOKEN is not set")
    assert "--insecure-no-auth" in lines[0]


def test_api_with_an_unreachable_database_stays_up_and_not_ready() -> None:
    # An orchestrator starts the API and its database together: the API waits for the
    # database, alive but not ready, and answers requests with a 503 problem meanwhile.
    unreachable = "postgresql://nobody:S3cr3t@127.0.0.1:1/none"
    with _running_api(unreachable, [], {"NOTIFIER_API_TOKEN": "t"}) as (process, base):
        status, ready = _request(f"{base}/readyz")
        assert status == 503
        assert ready["type"].endswith("database-unavailable")
        status, problem = _request(f"{base}/accounts/1", token="t")
        assert status == 503
        assert problem["status"] == 503
        assert "S3cr3t" not in json.dumps([ready, problem])
        assert "127.0.0.1:1" not in json.dumps([ready, problem])
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert "S3cr3t" not in stderr


@pytest.mark.parametrize("way", ["userinfo", "query"])
def test_api_starting_line_masks_the_database_password(database_url: str, way: str) -> None:
    parts = urlsplit(database_url)
    if way == "userinfo":
        if parts.password:
            pytest.skip("the test server's URL has a password of its own")
        host = parts.netloc.rpartition("@")[2]
        url = parts._replace(netloc=f"{parts.username}:S3cr3t-userinfo@{host}").geturl()
        masked = parts._replace(netloc=f"{parts.username}:***@{host}").geturl()
    else:
        # A password in the user information, if any, is the one used; the server of
        # the tests checks that one (or trusts), and ignores these.
        extra = ["sslpassword=S3cr3t-ssl", "pass%77ord=S3cr3t-query"]
        url = parts._replace(query="&".join(filter(None, [parts.query, *extra]))).geturl()
        masked = redact_url(url)
        assert masked.endswith("sslpassword=***&pass%77ord=***")
    with _running_api(url, [], {"NOTIFIER_API_TOKEN": "t"}) as (process, _base):
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    [starting] = [json.loads(line) for line in stderr.splitlines() if "api_starting" in line]
    assert starting["database"] == masked
    assert "S3cr3t" not in stderr


@pytest.mark.parametrize("api_process", [(["--insecure-no-auth"], {})], indirect=True)
def test_insecure_no_auth_runs_open_and_says_so(
    api_process: tuple[subprocess.Popen[str], str],
) -> None:
    process, base = api_process
    status, body = _request(f"{base}/accounts", body={"currency": "USD"})
    assert (status, body["balance"]) == (201, 0)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0
    warnings = [json.loads(line) for line in stderr.splitlines() if "api_auth_disabled" in line]
    assert warnings, stderr
    assert warnings[0]["level"] == "warning"


@pytest.mark.parametrize(
    "api_process", [([], {"NOTIFIER_API_TOKEN": "s3cret-token"})], indirect=True
)
def test_sigterm_lets_an_in_flight_request_finish(
    api_process: tuple[subprocess.Popen[str], str], dba: psycopg.Connection[Any]
) -> None:
    process, base = api_process
    token = "s3cret-token"
    assert _request(f"{base}/accounts", body={"currency": "USD"})[0] == 401
    status, account = _request(f"{base}/accounts", body={"currency": "USD"}, token=token)
    assert status == 201
    url = f"{base}/accounts/{account['id']}/top-ups"
    results: list[tuple[int, dict[str, Any]]] = []

    with dba.transaction():
        # Hold the account row so that the top-up is stuck inside the server.
        dba.execute("SELECT 1 FROM accounts WHERE id = %s FOR UPDATE", (account["id"],))
        worker = threading.Thread(
            target=lambda: results.append(_request(url, body={"amount": 7}, token=token))
        )
        worker.start()
        deadline = time.monotonic() + 15
        waiting = (
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE wait_event_type = 'Lock' AND datname = current_database()"
        )
        while dba.execute(waiting).fetchone() != (1,):
            assert time.monotonic() < deadline, "the top-up never reached the database"
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert process.poll() is None, "the server exited with a request in flight"

    worker.join(timeout=30)
    assert len(results) == 1
    assert results[0][0] == 201
    assert results[0][1]["balance_after"] == 7
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0
    assert token not in stderr
    assert '"event": "api_stopped"' in stderr
