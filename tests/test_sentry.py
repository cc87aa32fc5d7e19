"""Sentry: unexpected errors of the API and the daemon arrive as events tagged with their
ids, with no token, secret or credential anywhere; nothing is sent without a DSN, and a
dead delivery sends nothing.

Sentry here is a local HTTP server speaking its envelope endpoint; the errors are real
ones, caused by breaking something in the test's own database.
"""

from __future__ import annotations

import asyncio
import base64
import getpass
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import aiohttp
import asyncpg
import psycopg
import pytest
from aiohttp import web

from notifier import __version__
from notifier.devtools.daemon_process import wait_until
from notifier.devtools.receiver import Receiver, always
from notifier.observability.sentry import Throttle
from notifier.settings import SettingsError, load_settings
from notifier.subscriptions.store import SubscriptionStore
from tests.support import Daemon, start, statuses, write_events
from tests.test_layout import _importers

PUBLIC_KEY = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
PROJECT_ID = 42
API_TOKEN = "api-t0ken-c4f3e1"
HOOK_PASSWORD = "hook-pa55w0rd-91b2"
HOOK_QUERY_TOKEN = "hook-qu3ry-t0ken-5d7a"
HOOK_HEADER = "hook-h3ader-v4lue-0c8e"
# The suites' servers trust local connections, so a made-up password is accepted.
DB_PASSWORD = "db-pa55w0rd-3e6f"


def _secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def _hook_url(port: int, path: str) -> str:
    return f"http://hook-user:{HOOK_PASSWORD}@127.0.0.1:{port}{path}?token={HOOK_QUERY_TOKEN}"


@dataclass
class SentryServer:
    """Sentry's envelope endpoint on 127.0.0.1: keeps every envelope, decompressed."""

    envelopes: list[bytes] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def dsn(self) -> str:
        return f"http://{PUBLIC_KEY}@127.0.0.1:{self.port}/{PROJECT_ID}"

    async def _envelope(self, request: web.Request) -> web.Response:
        assert request.match_info["project"] == str(PROJECT_ID)
        assert f"sentry_key={PUBLIC_KEY}" in request.headers["X-Sentry-Auth"]
        # The SDK compresses the envelope; aiohttp undoes the Content-Encoding.
        self.envelopes.append(await request.read())
        self.headers.append(dict(request.headers))
        return web.json_response({})

    async def start(self) -> SentryServer:
        app = web.Application()
        app.router.add_post("/api/{project}/envelope/", self._envelope)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def items(self) -> Iterator[tuple[dict[str, Any], bytes]]:
        """Every item of every envelope: its header and its payload."""
        for raw in self.envelopes:
            _header, _, rest = raw.partition(b"\n")
            while rest.strip():
                line, _, rest = rest.partition(b"\n")
                item = json.loads(line)
                if "length" in item:
                    payload, rest = rest[: item["length"]], rest[item["length"] :]
                    rest = rest.removeprefix(b"\n")
                else:
                    payload, _, rest = rest.partition(b"\n")
                yield item, payload

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(payload) for item, payload in self.items() if item["type"] == "event"]

    def assert_holds_none_of(self, *secrets: str) -> None:
        """No secret in any envelope, whole or as any string inside one, nor in a header."""
        texts = [raw.decode() for raw in self.envelopes]
        texts += [value for headers in self.headers for value in headers.values()]
        texts += [text for item in self.events() for text in _strings(item)]
        for secret in secrets:
            assert secret
            leaks = [text for text in texts if secret in text]
            assert not leaks, f"{secret!r} reached Sentry: {leaks[0][:2000]}"


def _strings(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


@pytest.fixture
async def sentry() -> AsyncIterator[SentryServer]:
    server = await SentryServer().start()
    yield server
    await server.stop()


@pytest.fixture
def unset_dsn(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever this shell has set, the processes started here see only what tests give."""
    for name in ("NOTIFIER_SENTRY_DSN", "SENTRY_DSN"):
        monkeypatch.delenv(name, raising=False)


def _with_password(url: str) -> tuple[str, str]:
    """The database URL with a password in it (its own, if it has one), and the password."""
    parts = urlsplit(url)
    if parts.password:
        return url, parts.password
    user = quote(parts.username or getpass.getuser(), safe="")
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:{DB_PASSWORD}@{host}")), DB_PASSWORD


async def _healthy(process: Daemon) -> bool:
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{process.port}/healthz") as response,
        ):
            return response.status == 200
    except aiohttp.ClientError:
        return False


# A DBA's audit trigger that fails, quoting what it was given: the subscription's URL
# with its credentials, and its signing secret.
BROKEN_AUDIT = """
CREATE FUNCTION public.audit_subscription() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit: cannot record % (signed with %)', NEW.url, NEW.secret;
END $$;
CREATE TRIGGER audit_subscription BEFORE INSERT ON notifier.subscriptions
    FOR EACH ROW EXECUTE FUNCTION public.audit_subscription();
"""


async def _start_api(
    daemons: list[Daemon], database_url: str, tmp_path: Path, **settings: str
) -> Daemon:
    api = Daemon(
        database_url, tmp_path / "api.log", "api", NOTIFIER_API_TOKEN=API_TOKEN, **settings
    )
    daemons.append(api)
    await wait_until(lambda: _healthy(api), what="the API to answer /healthz")
    return api


async def _create_subscription(api: Daemon, secret: str, request_id: str) -> int:
    """POST /subscriptions with every kind of secret in it; returns the status."""
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"http://127.0.0.1:{api.port}/subscriptions",
            json={
                "url": _hook_url(9, "/in"),
                "secret": secret,
                "headers": {"X-Hook-Key": HOOK_HEADER},
            },
            headers={"Authorization": f"Bearer {API_TOKEN}", "X-Request-ID": request_id},
        ) as response,
    ):
        return response.status


async def test_an_unexpected_api_error_arrives_tagged_and_scrubbed(
    sentry: SentryServer,
    unset_dsn: None,
    database_url: str,
    dba: psycopg.Connection[Any],
    daemons: list[Daemon],
    tmp_path: Path,
) -> None:
    dba.execute(BROKEN_AUDIT)
    url, db_password = _with_password(database_url)
    api = await _start_api(
        daemons,
        url,
        tmp_path,
        NOTIFIER_SENTRY_DSN=sentry.dsn,
        NOTIFIER_SENTRY_ENVIRONMENT="staging",
    )
    secret = _secret()
    assert await _create_subscription(api, secret, "req-sentry-1") == 500
    await wait_until(lambda: bool(sentry.events()), what="an event at Sentry")
    assert await api.terminate() == 0

    [event] = sentry.events()
    assert event["level"] == "error"
    assert event["logger"] == "api.errors"
    assert event["logentry"]["message"] == "unhandled_error"
    assert event["environment"] == "staging"
    assert event["release"] == f"notifier@{__version__}"
    assert event["tags"] == {"request_id": "req-sentry-1", "process": "api"}
    assert event["extra"] == {"method": "POST", "path": "/subscriptions"}
    [exception] = event["exception"]["values"]
    assert exception["type"] == "RaiseError"
    # The message arrives, its credentials and the secret it quotes masked.
    assert exception["value"].startswith(
        "audit: cannot record http://hook-user:***@127.0.0.1:9/in?token=*** (signed with ***"
    )
    assert exception["stacktrace"]["frames"]
    assert all("vars" not in frame for frame in exception["stacktrace"]["frames"])
    sentry.assert_holds_none_of(
        API_TOKEN,
        secret,
        secret.removeprefix("whsec_"),
        HOOK_PASSWORD,
        HOOK_QUERY_TOKEN,
        HOOK_HEADER,
        db_password,
    )


async def _deliveries_dead(pool: asyncpg.Pool, count: int) -> bool:
    return await statuses(pool) == {"dead": count}


async def test_a_crashing_attempt_arrives_with_its_delivery_id_and_its_death_does_not(
    sentry: SentryServer,
    unset_dsn: None,
    database_url: str,
    dba: psycopg.Connection[Any],
    pool: asyncpg.Pool,
    receiver: Receiver,
    daemons: list[Daemon],
    tmp_path: Path,
) -> None:
    subscription = await SubscriptionStore(pool, allow_private_targets=True).create(
        _hook_url(receiver.port, "/hook"), headers={"X-Hook-Key": HOOK_HEADER}
    )
    # Rotated by hand, with a corrupt copy of a secret: signing with it fails where the
    # webhook sink expects nothing to fail.
    corrupt = "whsec_c0rrupt*c0py"
    dba.execute(
        "UPDATE notifier.subscriptions SET previous_secret = %s, "
        "previous_secret_expires_at = now() + interval '1 day'",
        [corrupt],
    )
    url, db_password = _with_password(database_url)
    daemon = start(
        daemons,
        url,
        tmp_path,
        NOTIFIER_SENTRY_DSN=sentry.dsn,
        NOTIFIER_API_TOKEN=API_TOKEN,
    )
    await write_events(database_url, 1, chunk=1, pause=0)
    await wait_until(lambda: _deliveries_dead(pool, 1), what="the delivery to die")
    assert await daemon.terminate() == 0

    # The first attempt was one of a batch; its failure made the event a delivery of its
    # own, under which it and the retries are logged.
    batch_id = await pool.fetchval("SELECT id FROM notifier.batches")
    event_uid = await pool.fetchval("SELECT uid::text FROM notifier.events")
    delivery_id = await pool.fetchval("SELECT id FROM notifier.deliveries")
    attempts = await pool.fetchval("SELECT count(*) FROM notifier.delivery_attempts")
    assert attempts == 4  # the first and the three retries of the tests' schedule
    assert receiver.received == []
    lines = daemon.logs()
    assert [line["level"] for line in lines if line["event"] == "delivery_dead"] == ["warning"]
    crashes = [line for line in lines if line["event"] == "attempt_crashed"]
    assert len(crashes) == attempts
    # Each crash says which attempt it was: of the batch first, then of the delivery.
    assert [(line.get("batch_id"), line.get("delivery_id")) for line in crashes] == [
        (batch_id, None),
        *[(None, delivery_id)] * 3,
    ]
    # The same crash, four times in a minute, is one event (the first: the batch's
    # attempt); the death that followed is none.
    [event] = sentry.events()
    assert event["logentry"]["message"] == "attempt_crashed"
    assert event["logger"] == "notifier.dispatch"
    assert event["environment"] == "production"
    assert event["tags"] == {
        "batch_id": str(batch_id),
        "event_id": event_uid,
        "process": "daemon",
    }
    [exception] = event["exception"]["values"]
    assert exception["type"] == "ValueError"
    assert exception["value"] == "a signing secret must be whsec_ followed by base64"
    sentry.assert_holds_none_of(
        API_TOKEN,
        subscription.secret,
        subscription.secret.removeprefix("whsec_"),
        corrupt,
        HOOK_PASSWORD,
        HOOK_QUERY_TOKEN,
        HOOK_HEADER,
        db_password,
    )


async def test_a_dead_delivery_sends_nothing(
    sentry: SentryServer,
    unset_dsn: None,
    database_url: str,
    pool: asyncpg.Pool,
    receiver: Receiver,
    daemons: list[Daemon],
    tmp_path: Path,
) -> None:
    receiver.behaviours["/down"] = always(500)
    await SubscriptionStore(pool, allow_private_targets=True).create(
        _hook_url(receiver.port, "/down")
    )
    daemon = start(daemons, database_url, tmp_path, NOTIFIER_SENTRY_DSN=sentry.dsn)
    await write_events(database_url, 2, chunk=2, pause=0)
    await wait_until(lambda: _deliveries_dead(pool, 2), what="both deliveries to die")
    assert await daemon.terminate() == 0  # which sends whatever was queued
    assert set(receiver.statuses["/down"]) == {500}
    assert [line["event"] for line in daemon.logs()].count("delivery_dead") == 2
    assert sentry.envelopes == []


async def test_without_a_dsn_nothing_is_sent(
    sentry: SentryServer,
    unset_dsn: None,
    database_url: str,
    dba: psycopg.Connection[Any],
    daemons: list[Daemon],
    tmp_path: Path,
) -> None:
    dba.execute(BROKEN_AUDIT)
    # The SDK's own variable is not ours: it must not switch reporting on.
    api = await _start_api(daemons, database_url, tmp_path, SENTRY_DSN=sentry.dsn)
    assert await _create_subscription(api, _secret(), "req-sentry-2") == 500
    assert await api.terminate() == 0
    assert [line["event"] for line in api.logs() if line["level"] == "error"] == ["unhandled_error"]
    assert sentry.envelopes == []


LINES_SCRIPT = """
import logging
from notifier.observability.logging import configure_logging, get_logger
from notifier.observability.sentry import error_reporting
from notifier.settings import load_settings

settings = load_settings()
configure_logging()
log = get_logger("notifier.example")
with error_reporting(settings, "daemon"):
    log.warning("delivery_failed", delivery_id=3, attempt=1)
    try:
        raise ConnectionResetError("lost amqp://guest:amqp-pa55@rabbit:5672/")
    except ConnectionResetError:
        logging.getLogger("aio_pika.robust_connection").exception("reconnecting failed")
    for _ in range(3):  # the same kind of line again and again: reported once
        log.error("settle_refused", delivery_id=7, attempt=2, token="t0k3n-9f1e", deliveries=1)
    try:
        raise RuntimeError("a bug")
    except RuntimeError:
        log.exception("task_died", task="pump")
        raise
"""


async def test_error_lines_of_ours_and_of_libraries_are_events_and_warnings_are_not(
    sentry: SentryServer, unset_dsn: None, database_url: str
) -> None:
    result = await asyncio.to_thread(
        _run, database_url, LINES_SCRIPT, NOTIFIER_SENTRY_DSN=sentry.dsn
    )
    assert result.returncode == 1  # the bug ends the process, as it would the daemon
    assert "RuntimeError: a bug" in result.stderr
    library, ours, bug = sentry.events()
    assert library["logger"] == "aio_pika.robust_connection"
    assert library["logentry"]["message"] == "reconnecting failed"
    [exception] = library["exception"]["values"]
    assert exception["value"] == "lost amqp://guest:***@rabbit:5672/"
    assert ours["logentry"]["message"] == "settle_refused"
    assert ours["tags"] == {"delivery_id": "7", "attempt": "2", "process": "daemon"}
    assert ours["extra"] == {"token": "***", "deliveries": 1}
    assert "exception" not in ours
    # Logged, then raised out of the process: reported once, not twice.
    assert bug["logentry"]["message"] == "task_died"
    assert bug["extra"] == {"task": "pump"}
    assert bug["exception"]["values"][-1]["value"] == "a bug"
    sentry.assert_holds_none_of("amqp-pa55", "t0k3n-9f1e")


def test_a_repeated_kind_of_line_is_held_back_and_counted_in_the_next_report() -> None:
    throttle = Throttle(seconds=0.2)
    kind = ("claim_failed",)
    assert throttle.admit(kind) == 0
    assert throttle.admit(("listener_disconnected",)) == 0  # another kind: its own clock
    assert [throttle.admit(kind) for _ in range(3)] == [None, None, None]
    time.sleep(0.25)
    assert throttle.admit(kind) == 3
    assert throttle.admit(kind) is None


def _run(database_url: str, script: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "NOTIFIER_DATABASE_URL": database_url, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_dsn_without_the_extra_stops_the_start_with_a_clear_message(
    unset_dsn: None, database_url: str
) -> None:
    # As if notifier[sentry] were not installed: importing sentry_sdk fails.
    script = (
        "import sys; sys.modules['sentry_sdk'] = None\n"
        "from notifier.cli import main\n"
        "sys.exit(main(['run']))\n"
    )
    result = _run(database_url, script, NOTIFIER_SENTRY_DSN=f"https://{PUBLIC_KEY}@s.test/7")
    assert result.returncode == 1
    assert result.stderr == (
        "notifier: error: NOTIFIER_SENTRY_DSN is set, but Sentry's client is not installed: "
        "install notifier[sentry] (pip install 'notifier[sentry]'), or unset it\n"
    )
    assert result.stdout == ""


def test_a_malformed_dsn_is_refused_without_showing_its_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for dsn in (f"https://{PUBLIC_KEY}@sentry.test/project", f"{PUBLIC_KEY}@sentry.test/7"):
        monkeypatch.setenv("NOTIFIER_SENTRY_DSN", dsn)
        with pytest.raises(SettingsError) as refused:
            load_settings()
        assert "NOTIFIER_SENTRY_DSN: must be a Sentry DSN" in str(refused.value)
        assert PUBLIC_KEY not in str(refused.value)
    monkeypatch.setenv("NOTIFIER_SENTRY_DSN", " ")
    assert load_settings().sentry_dsn is None
    monkeypatch.setenv("NOTIFIER_SENTRY_DSN", f"https://{PUBLIC_KEY}@sentry.test/7")
    assert PUBLIC_KEY not in repr(load_settings())


def test_only_the_sentry_module_imports_the_sdk() -> None:
    # The extra is optional: anything else importing it would need it installed.
    assert _importers("sentry_sdk") == {"notifier/observability/sentry.py"}
