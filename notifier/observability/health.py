"""The daemon's own HTTP server: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

# Readiness: a mapping of check name to whether it passed.
ReadinessCheck = Callable[[], Awaitable[dict[str, bool]]]

READINESS: web.AppKey[ReadinessCheck] = web.AppKey("readiness")


async def _healthz(_request: web.Request) -> web.Response:
    # Answering at all proves the event loop is turning.
    return web.json_response({"status": "ok"})


async def _readyz(request: web.Request) -> web.Response:
    checks = await request.app[READINESS]()
    ready = all(checks.values())
    return web.json_response(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status=200 if ready else 503,
    )


async def _metrics(_request: web.Request) -> web.Response:
    response = web.Response(body=generate_latest(REGISTRY))
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


def health_app(readiness: ReadinessCheck) -> web.Application:
    """The probe and metrics application."""
    app = web.Application()
    app[READINESS] = readiness
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    return app


class HealthServer:
    """``health_app`` served on ``host:port`` (port 0: any free port, see ``port``)."""

    def __init__(self, runner: web.AppRunner, port: int) -> None:
        self._runner = runner
        self.port = port

    @classmethod
    async def start(cls, readiness: ReadinessCheck, host: str, port: int) -> HealthServer:
        runner = web.AppRunner(health_app(readiness), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        return cls(runner, runner.addresses[0][1] if runner.addresses else port)

    async def close(self) -> None:
        await self._runner.cleanup()
