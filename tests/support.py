"""Real pieces for daemon tests: HTTP receivers, `notifier run` processes, waiting."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

# Fast enough for tests, and the same shape as production settings.
FAST_SETTINGS = {
    "NOTIFIER_RETRY_SCHEDULE": "0.2,0.2,0.2",
    "NOTIFIER_LEASE_SECONDS": "2",
    "NOTIFIER_POLL_INTERVAL_SECONDS": "0.5",
    "NOTIFIER_REQUEST_TIMEOUT_SECONDS": "1",
    "NOTIFIER_SHUTDOWN_GRACE_SECONDS": "3",
    "NOTIFIER_LOG_FORMAT": "json",
    # The receivers listen on 127.0.0.1; the SSRF guard has tests of its own.
    "NOTIFIER_ALLOW_PRIVATE_TARGETS": "true",
}

# A behaviour answers a request to a path (its index among that path's requests, from
# 0) with a status code, or None to hang until the client gives up.
Behaviour = Callable[[int], int | None]


def always(status: int) -> Behaviour:
    return lambda _n: status


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def event(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.body)
        return loaded


@dataclass
class Receiver:
    """An aiohttp endpoint in the test's own event loop, recording every request."""

    behaviours: dict[str, Behaviour] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    headers: dict[str, dict[str, str]] = field(default_factory=dict)  # sent with answers
    delays: dict[str, float] = field(default_factory=dict)  # seconds before answering
    port: int = 0
    _runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        n = self.counts[request.path]
        self.counts[request.path] += 1
        self.received.append(Received(request.path, dict(request.headers), body))
        status = self.behaviours.get(request.path, always(204))(n)
        if status is None:
            await asyncio.sleep(3600)
            status = 204
        await asyncio.sleep(self.delays.get(request.path, 0))
        return web.Response(status=status, headers=self.headers.get(request.path))

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def ok_event_ids(self, path: str) -> Counter[str]:
        """How many times each event id was received on ``path`` (accepted or not)."""
        return Counter(r.headers["webhook-id"] for r in self.received if r.path == path)

    def by_path(self) -> dict[str, list[Received]]:
        grouped: dict[str, list[Received]] = defaultdict(list)
        for r in self.received:
            grouped[r.path].append(r)
        return grouped


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Daemon:
    """A real `notifier run` process, its health port, and its log file."""

    def __init__(self, database_url: str, log_path: Path, **settings: str) -> None:
        self.port = free_port()
        self.log_path = log_path
        env = {
            **os.environ,
            **FAST_SETTINGS,
            "NOTIFIER_DATABASE_URL": database_url,
            "NOTIFIER_DAEMON_HOST": "127.0.0.1",
            "NOTIFIER_DAEMON_PORT": str(self.port),
            **settings,
        }
        self._log = log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "notifier.cli", "run"],
            env=env,
            stdout=self._log,
            stderr=self._log,
        )

    def logs(self) -> list[dict[str, Any]]:
        lines = []
        for line in self.log_path.read_text().splitlines():
            try:
                lines.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return lines

    async def metric(self, name: str) -> float | None:
        """The value of an unlabelled sample (or one named with its labels) on /metrics."""
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{self.port}/metrics") as response,
        ):
            for line in (await response.text()).splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[-1])
        return None

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        self._log.close()

    async def terminate(self, seconds: float = 20) -> int:
        """SIGTERM, then wait for the exit status without blocking the event loop
        (the receivers the daemon is finishing requests to run on it)."""
        self.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + seconds
        while (code := self.process.poll()) is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"the daemon did not exit within {seconds:g} s of SIGTERM")
            await asyncio.sleep(0.02)
        self._log.close()
        return code

    def ensure_stopped(self) -> None:
        if self.process.poll() is None:
            self.kill()


async def wait_until(
    predicate: Callable[[], bool] | Callable[[], Awaitable[bool]],
    seconds: float = 20.0,
    what: str = "condition",
) -> None:
    """Poll until ``predicate`` holds, or fail saying what was awaited."""
    deadline = time.monotonic() + seconds
    while True:
        value = predicate()
        if not isinstance(value, bool):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds:g} s waiting for {what}")
        await asyncio.sleep(0.05)


def start(daemons: list[Daemon], database_url: str, tmp_path: Path, **settings: str) -> Daemon:
    """Start one more ``notifier run`` with the test's settings; ``daemons`` stops it."""
    daemon = Daemon(database_url, tmp_path / f"daemon-{len(daemons)}.log", **settings)
    daemons.append(daemon)
    return daemon
