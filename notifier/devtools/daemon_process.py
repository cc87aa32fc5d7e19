"""A real ``notifier run`` (or ``notifier api``) process, for the benchmark and the tests,
and waiting until what it does can be seen."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp

from notifier.devtools.embedded_pg import free_port


class DaemonProcess:
    """One process on 127.0.0.1: its port and its log file.

    ``settings`` (``NOTIFIER_...`` variables) are laid over this process's environment.
    Used as ``async with``, it is stopped with SIGTERM on the way out.
    """

    def __init__(
        self, database_url: str, log_path: Path, command: str = "run", **settings: str
    ) -> None:
        self.port = free_port()
        self.log_path = log_path
        prefix = {"run": "NOTIFIER_DAEMON", "api": "NOTIFIER_API"}[command]
        env = {
            **os.environ,
            "NOTIFIER_DATABASE_URL": database_url,
            f"{prefix}_HOST": "127.0.0.1",
            f"{prefix}_PORT": str(self.port),
            **settings,
        }
        self._log = log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "notifier.cli", command],
            env=env,
            stdout=self._log,
            stderr=self._log,
        )

    async def __aenter__(self) -> DaemonProcess:
        return self

    async def __aexit__(
        self,
        _type: type[BaseException] | None,
        _error: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        await self.terminate()

    def logs(self) -> list[dict[str, Any]]:
        """The JSON lines of its log (``NOTIFIER_LOG_FORMAT=json``), skipping any other."""
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

    def peak_rss_mb(self) -> float:
        """The most memory it has held resident so far (Linux's VmHWM), in MB."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        match = re.search(r"VmHWM:\s+(\d+) kB", status)
        return int(match.group(1)) / 1024 if match else 0.0

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        self._log.close()

    async def terminate(self, seconds: float = 20) -> int:
        """SIGTERM, then the exit status, awaited without blocking the event loop (a
        receiver the process is finishing requests to may run on it). Past ``seconds``
        the process is killed and TimeoutError raised."""
        self.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + seconds
        while (code := self.process.poll()) is None:
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(f"the daemon did not exit within {seconds:g} s of SIGTERM")
            await asyncio.sleep(0.02)
        self._log.close()
        return code

    def ensure_stopped(self) -> None:
        if self.process.poll() is None:
            self.kill()
        self._log.close()


async def wait_until(
    predicate: Callable[[], bool] | Callable[[], Awaitable[bool]],
    seconds: float = 20.0,
    what: str = "condition",
) -> None:
    """Poll until ``predicate`` holds, or raise TimeoutError saying what was awaited."""
    deadline = time.monotonic() + seconds
    while True:
        value = predicate()
        if not isinstance(value, bool):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {seconds:g} s waiting for {what}")
        await asyncio.sleep(0.05)
