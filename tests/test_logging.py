"""Logs: JSON lines that name their logger, follow the configuration, never show secrets."""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = """
from notifier.observability.logging import configure_logging, get_logger
log = get_logger("notifier.example")  # created before the configuration, as modules do
configure_logging("json", "info")
log.info("delivered", token="t0ps3cret", authorization="Bearer t0ps3cret", attempt=2)
log.debug("not shown at info")
"""


def test_module_level_logger_follows_later_configuration_and_redacts() -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True, timeout=30
    )
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert entry["event"] == "delivered"
    assert entry["logger"] == "notifier.example"
    assert entry["attempt"] == 2
    assert (entry["token"], entry["authorization"]) == ("***", "***")
    assert "t0ps3cret" not in result.stderr


URL_SCRIPT = """
from notifier.observability.logging import configure_logging, get_logger
configure_logging("json", "info")
log = get_logger("notifier.example")
url = "postgresql://app:pw-S3cr3t@db:5432/ledger?sslpassword=ssl-S3cr3t"
log.info("connecting", target=url, note=f"retrying {url} in 1 s")
try:
    raise ConnectionError(f"lost {url}")
except ConnectionError:
    log.exception("lost")
"""


def test_urls_are_logged_without_their_credentials_wherever_they_appear() -> None:
    result = subprocess.run(
        [sys.executable, "-c", URL_SCRIPT], capture_output=True, text=True, check=True, timeout=30
    )
    first, second = (json.loads(line) for line in result.stderr.strip().splitlines())
    masked = "postgresql://app:***@db:5432/ledger?sslpassword=***"
    assert first["target"] == masked
    assert first["note"] == f"retrying {masked} in 1 s"
    assert f"ConnectionError: lost {masked}" in second["exception"]
    assert "S3cr3t" not in result.stderr
