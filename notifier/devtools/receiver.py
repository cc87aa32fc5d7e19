"""Webhook receivers for the dev tools.

``notifier receiver`` is a demo endpoint that verifies signatures and prints events.
``Receiver`` records every request it gets, in the caller's own event loop: the
benchmark times arrivals with it, and the tests assert on what arrived.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

from aiohttp import web

from notifier.observability.logging import get_logger
from notifier.sinks.signing import InvalidSignature, verify

log = get_logger("notifier.receiver")

SECRET = web.AppKey("secret", str)
OUTPUT = web.AppKey("output", TextIO)

# A behaviour answers a request to a path (its index among that path's requests, from
# 0) with a status code, or None to hang until the client gives up.
Behaviour = Callable[[int], int | None]


def always(status: int) -> Behaviour:
    return lambda _n: status


def _refusal(secret: str, request: web.Request, body: bytes, now: float) -> web.Response | None:
    """A 401 answer (and a warning) for a request whose signature does not hold."""
    try:
        verify(secret, request.headers, body, now=now)
    except InvalidSignature as exc:
        log.warning(
            "signature_rejected", webhook_id=request.headers.get("webhook-id"), reason=str(exc)
        )
        return web.Response(status=401, text=f"{exc}\n")
    return None


async def _print_event(request: web.Request) -> web.Response:
    body = await request.read()
    if (refusal := _refusal(request.app[SECRET], request, body, time.time())) is not None:
        return refusal
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
    app.router.add_post("/{tail:.*}", _print_event)
    return app


def run_receiver(host: str, port: int, secret: str) -> None:
    """Serve until interrupted."""
    log.info("receiver_listening", host=host, port=port)
    web.run_app(receiver_app(secret), host=host, port=port, print=None, access_log=None)


@dataclass(slots=True)
class Received:
    """One request, as it arrived."""

    path: str
    headers: Mapping[str, str]
    body: bytes
    at: float  # time.time() once the body was read

    @property
    def event(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.body)
        return loaded


@dataclass
class Receiver:
    """An endpoint on 127.0.0.1 that records every request, and answers 204.

    With a ``secret`` it checks each signature first, as a real receiver must: a request
    whose signature does not hold is answered 401 and not recorded. Per path, answers
    can be scripted: ``behaviours`` (the status, by the path's request count), ``judges``
    (the status, by the request itself), ``headers`` (sent with it), ``delays`` (seconds
    to wait first, or a function giving them). ``statuses`` keeps each path's answers
    in the order of its requests. The benchmark times arrivals here, so a request costs no
    more than reading, checking and keeping it: events are parsed only when asked for.
    """

    secret: str | None = None
    behaviours: dict[str, Behaviour] = field(default_factory=dict)
    judges: dict[str, Callable[[Received], int]] = field(default_factory=dict)
    headers: dict[str, dict[str, str]] = field(default_factory=dict)
    delays: dict[str, float | Callable[[], float]] = field(default_factory=dict)
    statuses: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    received: list[Received] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    port: int = 0
    _runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        at = time.time()
        if self.secret and (refusal := _refusal(self.secret, request, body, at)) is not None:
            return refusal
        path = request.path
        n = self.counts[path]
        self.counts[path] = n + 1
        received = Received(path, request.headers, body, at)
        self.received.append(received)
        behaviour = self.behaviours.get(path)
        status = 204 if behaviour is None else behaviour(n)
        if (judge := self.judges.get(path)) is not None:
            status = judge(received)
        self.statuses[path].append(204 if status is None else status)
        if status is None:
            await asyncio.sleep(3600)
            status = 204
        delay = self.delays.get(path)
        if callable(delay):
            delay = delay()
        if delay:
            await asyncio.sleep(delay)
        return web.Response(status=status, headers=self.headers.get(path))

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

    def clear(self) -> None:
        """Forget what has arrived (scripted answers stay)."""
        self.received.clear()
        self.counts.clear()
        self.statuses.clear()

    def ok_event_ids(self, path: str) -> Counter[str]:
        """How many times each event id was received on ``path``, whatever the answer."""
        return Counter(r.headers["webhook-id"] for r in self.received if r.path == path)

    def by_path(self) -> dict[str, list[Received]]:
        grouped: dict[str, list[Received]] = defaultdict(list)
        for r in self.received:
            grouped[r.path].append(r)
        return grouped
