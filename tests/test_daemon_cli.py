"""`notifier subscriptions ...` and `notifier receiver` as a user runs them."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp
import psycopg

from notifier.devtools.daemon_process import wait_until
from notifier.subscriptions.store import generate_secret
from tests.support import Daemon, free_port


def notifier(
    database_url: str, *args: str, allow_private: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run the CLI; targets on private networks are allowed unless told otherwise."""
    env = {
        **os.environ,
        "NOTIFIER_DATABASE_URL": database_url,
        "NOTIFIER_ALLOW_PRIVATE_TARGETS": str(allow_private).lower(),
    }
    return subprocess.run(
        [sys.executable, "-m", "notifier.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def start_receiver(port: int, secret: str, out_path: Path) -> subprocess.Popen[bytes]:
    with out_path.open("w") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "notifier.cli",
                "receiver",
                "--port",
                str(port),
                "--secret",
                secret,
            ],
            stdout=out,
            stderr=subprocess.DEVNULL,
        )


def test_subscription_commands(database_url: str) -> None:
    added = notifier(
        database_url,
        "subscriptions",
        "add",
        "http://example.com/hook",
        "--event-type",
        "transaction.created",
    )
    assert added.returncode == 0, added.stderr
    sub = json.loads(added.stdout)
    assert sub["secret"].startswith("whsec_")
    assert sub["event_types"] == ["transaction.created"]
    sub_id = str(sub["id"])
    again = notifier(database_url, "subscriptions", "add", "http://example.com/hook", "--if-absent")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["id"] == sub["id"]
    assert "secret" not in json.loads(again.stdout)

    disabled = notifier(database_url, "subscriptions", "disable", sub_id, "--reason", "maintenance")
    assert json.loads(disabled.stdout)["disabled_reason"] == "maintenance"
    listed = notifier(database_url, "subscriptions", "list")
    assert [json.loads(line)["enabled"] for line in listed.stdout.splitlines()] == [False]
    assert sub["secret"] not in listed.stdout
    enabled = notifier(database_url, "subscriptions", "enable", sub_id)
    assert json.loads(enabled.stdout)["enabled"] is True
    assert notifier(database_url, "subscriptions", "remove", sub_id).returncode == 0
    missing = notifier(database_url, "subscriptions", "remove", sub_id)
    assert (missing.returncode, missing.stderr.strip()) == (
        1,
        f"notifier: error: subscription {sub_id} does not exist",
    )
    bad = notifier(database_url, "subscriptions", "add", "ftp://example.com")
    assert bad.returncode == 1
    assert "url: must start with one of http://, https://, amqp://" in bad.stderr


async def test_demo_receiver_verifies_and_prints_events(database_url: str, tmp_path: Path) -> None:
    secret = generate_secret()
    port = free_port()
    added = notifier(
        database_url, "subscriptions", "add", f"http://127.0.0.1:{port}/", "--secret", secret
    )
    assert added.returncode == 0, added.stderr
    out_path = tmp_path / "receiver.out"
    receiver = start_receiver(port, secret, out_path)
    daemon = Daemon(database_url, tmp_path / "daemon.log")
    try:
        # Else, on a slow start, the fast test schedule runs out before it listens.
        await wait_until(lambda: _listening(port), what="the receiver to listen")
        with psycopg.connect(database_url, autocommit=True) as dba:
            dba.execute("INSERT INTO accounts (currency) VALUES ('EUR')")
            dba.execute(
                "INSERT INTO transactions (account_id, kind, amount) VALUES (1, 'top_up', 9)"
            )
        await wait_until(lambda: out_path.read_text().count("\n") >= 1, what="a printed event")
        event = json.loads(out_path.read_text().splitlines()[0])
        assert (event["type"], event["data"]["amount"]) == ("transaction.created", 9)

        async with aiohttp.ClientSession() as http:
            forged = {"webhook-id": "x", "webhook-timestamp": "1", "webhook-signature": "v1,AAAA"}
            async with http.post(f"http://127.0.0.1:{port}/", data=b"{}", headers=forged) as r:
                assert r.status == 401
        assert await daemon.terminate() == 0
    finally:
        daemon.ensure_stopped()
        receiver.terminate()
        receiver.wait(10)
    assert len(out_path.read_text().splitlines()) == 1
