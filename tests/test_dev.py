"""`notifier dev` brings the whole system up on a bare machine and takes it all down."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import IO, Any

import psutil
import psycopg
import pytest

TOKEN = "dev-test-token"


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _pump(stream: IO[str], lines: queue.Queue[str]) -> None:
    for line in stream:
        lines.put(line.rstrip("\n"))


def _wait_for(lines: queue.Queue[str], predicate: Any, timeout: float) -> list[str]:
    """Read lines until ``predicate(seen)`` holds; return every line seen."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while not predicate(seen):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError("timed out; output so far:\n" + "\n".join(seen))
        try:
            seen.append(lines.get(timeout=remaining))
        except queue.Empty:
            continue
    return seen


def _post(url: str, body: dict[str, object]) -> dict[str, Any]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 201
        result: dict[str, Any] = json.loads(response.read())
        return result


def _events(lines: list[str]) -> list[dict[str, Any]]:
    events = []
    for line in lines:
        try:
            parsed = json.loads(line)
        except ValueError:
            continue
        if isinstance(parsed, dict) and parsed.get("type") == "transaction.created":
            events.append(parsed)
    return events


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_dev_runs_everything_and_stops_cleanly_on_sigint(tmp_path: Path) -> None:
    api_port, daemon_port, receiver_port = _free_ports(3)
    data_dir = tmp_path / "pg"
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("NOTIFIER_DATABASE_URL", "NOTIFIER_TEST_DATABASE_URL")
    }
    env.update(NOTIFIER_API_TOKEN=TOKEN, NOTIFIER_LOG_FORMAT="json")
    proc = subprocess.Popen(
        [sys.executable, "-m", "notifier.cli", "dev", "--data-dir", str(data_dir),
         "--api-port", str(api_port), "--daemon-port", str(daemon_port),
         "--receiver-port", str(receiver_port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    lines: queue.Queue[str] = queue.Queue()
    pump = threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True)
    pump.start()
    try:
        banner = _wait_for(lines, lambda seen: any("ctrl-c" in s.lower() for s in seen), 90)
        banner += _wait_for(lines, lambda seen: any("INSERT INTO" in s for s in seen), 10)
        database_url = next(s.split()[1] for s in banner if s.strip().startswith("database"))
        assert TOKEN in "\n".join(banner)
        assert f"http://127.0.0.1:{daemon_port}/metrics" in "\n".join(banner)

        api = f"http://127.0.0.1:{api_port}"
        account = _post(f"{api}/accounts", {"currency": "USD"})
        _post(f"{api}/accounts/{account['id']}/top-ups", {"amount": 500})
        with psycopg.connect(database_url, autocommit=True) as dba:
            dba.execute(
                "INSERT INTO transactions (account_id, kind, amount) VALUES (%s, 'debit', 120)",
                [account["id"]],
            )

        seen = _wait_for(lines, lambda seen: len(_events(seen)) >= 2, 30)
        events = _events(seen)
        assert sorted((e["data"]["kind"], e["data"]["amount"]) for e in events) == [
            ("debit", 120),
            ("top_up", 500),
        ]
        descendants = psutil.Process(proc.pid).children(recursive=True)
        assert len(descendants) >= 3  # receiver, api, daemon
    except BaseException:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        raise

    proc.send_signal(signal.SIGINT)
    code = proc.wait(timeout=60)
    pump.join(timeout=10)
    proc.stdout.close()
    assert code == 0
    for child in descendants:
        assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE, child
    assert not (data_dir / "postmaster.pid").exists()
