"""``notifier healthcheck``: probe a local process's /healthz, for container HEALTHCHECKs."""

from __future__ import annotations

import urllib.error
import urllib.request

from notifier.settings import Settings


def probe(url: str, timeout: float = 3.0) -> bool:
    """Whether ``url`` answers 200 within ``timeout`` seconds."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - local probe
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def health_url(settings: Settings, target: str) -> str:
    """The liveness URL of the API (``api``) or of the daemon (``daemon``) on this host."""
    port = settings.api_port if target == "api" else settings.daemon_port
    return f"http://127.0.0.1:{port}/healthz"
