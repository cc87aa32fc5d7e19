"""`notifier dev` brings the whole system up on a bare machine and takes it all down."""

from __future__ import annotations

import contextlib
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

from notifier.devtools import SECRET_ENV
from notifier.devtools.dev import RECEIVER_DESCRIPTION, DevOptions, banner
from tests.brokers.support import unavailable

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
    # The stream is closed here, at its end, never by another thread: closing it while
    # this one is blocked reading would wait for this one, and no signal undoes that.
    with stream:
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


class Dev:
    """A running ``notifier dev`` and the lines it prints."""

    def __init__(self, data_dir: Path, *options: str, **environment: str) -> None:
        self.api_port, self.daemon_port, receiver_port = _free_ports(3)
        env = {
            key: value
            for key, value in os.environ.items()
            if key not in ("NOTIFIER_DATABASE_URL", "NOTIFIER_TEST_DATABASE_URL")
        }
        env.update(NOTIFIER_API_TOKEN=TOKEN, NOTIFIER_LOG_FORMAT="json", **environment)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "notifier.cli", "dev", "--data-dir", str(data_dir),
             "--api-port", str(self.api_port), "--daemon-port", str(self.daemon_port),
             "--receiver-port", str(receiver_port), *options],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )  # fmt: skip
        assert self.process.stdout is not None
        self.lines: queue.Queue[str] = queue.Queue()
        self._pump = threading.Thread(
            target=_pump, args=(self.process.stdout, self.lines), daemon=True
        )
        self._pump.start()
        self._seen: set[psutil.Process] = set()

    def banner(self) -> list[str]:
        """The lines up to the end of the banner, once everything is up."""
        shown = _wait_for(self.lines, lambda seen: any("ctrl-c" in s.lower() for s in seen), 90)
        shown += _wait_for(self.lines, lambda seen: any("INSERT INTO" in s for s in seen), 10)
        self.descendants()
        return shown

    def descendants(self) -> list[psutil.Process]:
        found = psutil.Process(self.process.pid).children(recursive=True)
        self._seen.update(found)
        return found

    def children(self) -> dict[str, psutil.Process]:
        """The ``notifier`` children by subcommand: receiver, api and run (the daemon)."""
        found = {}
        for child in psutil.Process(self.process.pid).children():
            command = child.cmdline()
            if command[1:3] == ["-m", "notifier.cli"]:
                found[command[3]] = child
        return found

    def close(self) -> None:
        """Kill it and anything of its that is still running (a test may have failed
        because something outlived it: it must not outlive the test as well)."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for process in _gone(list(self._seen), 0):
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        self._pump.join(timeout=10)


def _command_line(process: psutil.Process) -> list[str]:
    """What ``ps`` shows for ``process``; nothing for one that has just exited (a
    PostgreSQL backend ends at any moment)."""
    try:
        return process.cmdline()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return []


def _gone(processes: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """The processes still running (not zombies) after up to ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        alive = [p for p in processes if _running(p)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


def _running(process: psutil.Process) -> bool:
    """Running and not a zombie; a process may exit between the two questions."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_dev_runs_everything_and_stops_cleanly_on_sigint(tmp_path: Path) -> None:
    data_dir = tmp_path / "pg"
    dev = Dev(data_dir)
    try:
        banner = dev.banner()
        database_url = next(s.split()[1] for s in banner if s.strip().startswith("database"))
        assert TOKEN in "\n".join(banner)
        assert f"http://127.0.0.1:{dev.daemon_port}/metrics" in "\n".join(banner)

        api = f"http://127.0.0.1:{dev.api_port}"
        account = _post(f"{api}/accounts", {"currency": "USD"})
        _post(f"{api}/accounts/{account['id']}/top-ups", {"amount": 500})
        with psycopg.connect(database_url, autocommit=True) as dba:
            dba.execute(
                "INSERT INTO transactions (account_id, kind, amount) VALUES (%s, 'debit', 120)",
                [account["id"]],
            )

        seen = _wait_for(dev.lines, lambda seen: len(_events(seen)) >= 2, 30)
        events = _events(seen)
        assert sorted((e["data"]["kind"], e["data"]["amount"]) for e in events) == [
            ("debit", 120),
            ("top_up", 500),
        ]
        descendants = dev.descendants()
        assert len(descendants) >= 4  # PostgreSQL, receiver, api, daemon
        dev.process.send_signal(signal.SIGINT)
        code = dev.process.wait(timeout=60)
    finally:
        dev.close()
    assert code == 0
    assert _gone(descendants, 0) == []
    assert not (data_dir / "postmaster.pid").exists()


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_dev_killed_outright_leaves_nothing_running_and_starts_again(tmp_path: Path) -> None:
    data_dir = tmp_path / "pg"
    dev = Dev(data_dir)
    try:
        dev.banner()
        descendants = dev.descendants()
        names = {p.name() for p in descendants}
        assert "postgres" in names, names
        dev.process.kill()
        dev.process.wait(timeout=10)
        assert _gone(descendants, 30) == []
    finally:
        dev.close()
    # The same directory serves the next run, which stops cleanly in its turn.
    again = Dev(data_dir)
    try:
        again.banner()
        again.process.send_signal(signal.SIGINT)
        assert again.process.wait(timeout=60) == 0
    finally:
        again.close()
    assert not (data_dir / "postmaster.pid").exists()


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_dev_gives_the_receiver_its_secret_in_the_environment_not_on_a_command_line(
    tmp_path: Path,
) -> None:
    dev = Dev(tmp_path / "pg")
    try:
        banner = dev.banner()
        database_url = next(s.split()[1] for s in banner if s.strip().startswith("database"))
        with psycopg.connect(database_url) as conn:
            row = conn.execute(
                "SELECT secret FROM notifier.subscriptions WHERE description = %s",
                [RECEIVER_DESCRIPTION],
            ).fetchone()
        assert row is not None
        secret = row[0]
        children = dev.children()
        assert set(children) == {"receiver", "api", "run"}
        # Compared as a list of pids: a failure must not print the secret itself.
        shown_by_ps = [p.pid for p in dev.descendants() if secret in " ".join(_command_line(p))]
        assert shown_by_ps == []
        assert children["receiver"].environ()[SECRET_ENV] == secret
        assert SECRET_ENV not in children["api"].environ()
        assert SECRET_ENV not in children["run"].environ()
        dev.process.send_signal(signal.SIGINT)
        assert dev.process.wait(timeout=60) == 0
    finally:
        dev.close()


def test_banner_masks_a_database_password_and_still_gives_a_working_psql_line() -> None:
    options = DevOptions(Path("pg"), api_port=8080, daemon_port=8081, receiver_port=8082)
    url = "postgresql://app:S3cr3t@db:5432/ledger?sslpassword=S3cr3t2"
    shown = banner(options, url, "from NOTIFIER_DATABASE_URL", TOKEN)
    assert "S3cr3t" not in shown
    assert "database   postgresql://app:***@db:5432/ledger?sslpassword=***" in shown
    assert 'psql "$NOTIFIER_DATABASE_URL" \\\n' in shown
    embedded = "postgresql://postgres:@/postgres?host=/tmp/pg"
    assert f"psql '{embedded}' \\\n" in banner(options, embedded, "embedded", TOKEN)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_dev_with_a_sink_subscribes_the_broker_and_prints_what_arrives_there(
    tmp_path: Path,
) -> None:
    if not _answers(5672):
        unavailable("RabbitMQ on 127.0.0.1:5672", "start a RabbitMQ server (guest/guest)")
    # The URL carries a password: given through the environment, never on a command line.
    key = f"devtest-{os.getpid()}"
    url = f"amqp://guest:guest@127.0.0.1:5672/?exchange=amq.topic&routing_key={key}.{{type}}"
    dev = Dev(tmp_path / "pg", "--sink", "env:DEV_SINK", DEV_SINK=url)
    try:
        banner = "\n".join(dev.banner())
        assert "sink       amqp://guest:***@127.0.0.1:5672/" in banner
        assert "guest:guest" not in banner
        children = dev.children()
        assert "consume" in children
        assert "receiver" not in children
        for process in dev.descendants():
            assert not any("guest:guest" in word for word in _command_line(process))

        api = f"http://127.0.0.1:{dev.api_port}"
        account = _post(f"{api}/accounts", {"currency": "USD"})
        _post(f"{api}/accounts/{account['id']}/top-ups", {"amount": 700})
        seen = _wait_for(dev.lines, lambda seen: _messages(seen), 30)
        message = _messages(seen)[0]
        assert message["body"]["data"]["amount"] == 700
        assert message["metadata"]["routing_key"] == f"{key}.transaction.created"
        assert message["metadata"]["message_id"] == message["body"]["id"]
        dev.process.send_signal(signal.SIGINT)
        assert dev.process.wait(timeout=60) == 0
    finally:
        dev.close()


def _answers(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _messages(lines: list[str]) -> list[dict[str, Any]]:
    """What ``notifier consume`` printed: {"metadata": ..., "body": ...} lines."""
    found = []
    for line in lines:
        try:
            parsed = json.loads(line)
        except ValueError:
            continue
        if isinstance(parsed, dict) and {"metadata", "body"} <= parsed.keys():
            found.append(parsed)
    return found
