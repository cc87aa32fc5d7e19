"""An AWS emulator of the test's own: moto's server (``moto[server]``) in a subprocess on a
free port, with the standard AWS environment pointing at it (dummy credentials, no
config files), for this process and the daemons it starts."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.brokers.support import unavailable
from tests.support import free_port

HOW = "pip install 'moto[server]'"
REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account


@dataclass(frozen=True)
class Moto:
    endpoint: str
    log_path: Path

    def environment(self, config_dir: Path) -> dict[str, str]:
        """The standard AWS variables that point a client at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION,
            # Nothing from the machine's own AWS setup: not its config, nor its profile.
            "AWS_CONFIG_FILE": str(config_dir / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(config_dir / "no-aws-credentials"),
            "AWS_EC2_METADATA_DISABLED": "true",
        }


def _command(port: int) -> list[str]:
    beside = Path(sys.executable).parent / "moto_server"
    executable = str(beside) if beside.is_file() else shutil.which("moto_server")
    if executable is None:
        unavailable("moto's server", HOW)
    return [executable, "-H", "127.0.0.1", "-p", str(port)]


def _answers(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1):
            return True
    except (urllib.error.URLError, OSError):
        return False


@contextmanager
def moto_server(log_path: Path, within: float = 20.0) -> Iterator[Moto]:
    """A running moto server, killed on the way out whatever happened; skips when there is none."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with log_path.open("ab") as log:
        process = subprocess.Popen(_command(port), stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + within
        while not _answers(endpoint):
            if process.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace")[-500:]
                unavailable("moto's server", f"{HOW} (its log ends: {tail!r})")
            time.sleep(0.1)
        yield Moto(endpoint, log_path)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
