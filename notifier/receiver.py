"""``notifier receiver``: a demo endpoint that verifies signatures and prints events."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from aiohttp import web

from notifier.logging import get_logger
from notifier.signing import InvalidSignature, verify

log = get_logger("notifier.receiver")

SECRET = web.AppKey("secret", str)
OUTPUT = web.AppKey("output", TextIO)


async def _receive(request: web.Request) -> web.Response:
    body = await request.read()
    try:
        verify(request.app[SECRET], request.headers, body, now=time.time())
    except InvalidSignature as exc:
        log.warning(
            "signature_rejected", webhook_id=request.headers.get("webhook-id"), reason=str(exc)
        )
        return web.Response(status=401, text=f"{exc}\n")
    output = request.app[OUTPUT]
    # The body is printed as it came (one line of JSON), so what is shown is what was signed.
    output.write(body.decode("utf-8", "replace").replace("\n", " ") + "\n")
    output.flush()
    return web.Response(status=204)


def receiver_app(secret: str, output: TextIO = sys.stdout) -> web.Application:
    """Accepts POSTs on any path."""
    app = web.Application()
    app[SECRET] = secret
    app[OUTPUT] = output
    app.router.add_post("/{tail:.*}", _receive)
    return app


def run_receiver(host: str, port: int, secret: str) -> None:
    """Serve until interrupted."""
    log.info("receiver_listening", host=host, port=port)
    web.run_app(receiver_app(secret), host=host, port=port, print=None, access_log=None)
