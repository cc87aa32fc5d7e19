"""``notifier dev``: the whole system on one machine, in one process tree.

An embedded PostgreSQL (or ``NOTIFIER_DATABASE_URL``), migrations, the API, the daemon and
the demo receiver subscribed to every event. Ctrl-C stops all of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from notifier.db.migrate import migrate
from notifier.db.pool import connect
from notifier.devtools import SECRET_ENV
from notifier.devtools.embedded_pg import (
    EmbeddedPostgres,
    EmbeddedPostgresError,
    free_port,
    program,
)
from notifier.observability.healthcheck import probe
from notifier.observability.redaction import redact_url
from notifier.settings import Settings
from notifier.sinks.targets import masked
from notifier.subscriptions.store import SubscriptionStore

RECEIVER_DESCRIPTION = "notifier dev: demo receiver"
READY_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 15.0


class DevError(Exception):
    """``notifier dev`` cannot start; the message says why."""


@dataclass(frozen=True)
class DevOptions:
    data_dir: Path
    api_port: int
    daemon_port: int
    receiver_port: int
    db_port: int = 0  # 0: any free port
    sink: str | None = None  # a broker URL subscribed instead of the demo receiver


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]


@contextlib.contextmanager
def _database(settings: Settings, options: DevOptions) -> Iterator[tuple[str, str]]:
    """Yield (URL, description): NOTIFIER_DATABASE_URL if set, else an embedded server.

    The embedded server is a child of this process that dies with it: stopped (fast)
    on the way out, and by the kernel if ``notifier dev`` is killed outright.
    """
    if "NOTIFIER_DATABASE_URL" in os.environ:
        yield settings.database_url, "from NOTIFIER_DATABASE_URL"
        return
    try:
        server = EmbeddedPostgres(options.data_dir, options.db_port or free_port())
        server.start()
    except (EmbeddedPostgresError, OSError, subprocess.SubprocessError) as exc:
        raise DevError(f"the embedded PostgreSQL did not start: {exc}") from exc
    try:
        yield server.url(), f"embedded PostgreSQL, data kept in {options.data_dir}"
    finally:
        server.stop("fast")


async def _prepare(database_url: str, receiver_url: str) -> str:
    """Migrate, and subscribe the demo receiver to everything; return its secret."""
    conn = await connect(database_url)
    try:
        await migrate(conn)
        store = SubscriptionStore(conn, allow_private_targets=True)
        for sub in await store.page(limit=10_000):
            if sub.description == RECEIVER_DESCRIPTION:
                updated = await store.update(sub.id, url=receiver_url, enabled=True)
                assert updated is not None
                return updated.secret
        created = await store.create(
            receiver_url, event_types=["*"], description=RECEIVER_DESCRIPTION
        )
        return created.secret
    finally:
        await conn.close()


def _die_with_parent() -> None:
    """In the child: receive SIGTERM if ``notifier dev`` itself dies (Linux only)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _spawn(name: str, args: list[str], env: dict[str, str], stdin: str | None = None) -> Child:
    # A session of its own: a terminal's Ctrl-C reaches only `notifier dev`, which
    # then stops the children in order instead of all of them racing.
    process = subprocess.Popen(
        [sys.executable, "-m", "notifier.cli", *args],
        env=env,
        stdin=None if stdin is None else subprocess.PIPE,
        start_new_session=True,
        preexec_fn=_die_with_parent if sys.platform == "linux" else None,
    )
    if process.stdin is not None:
        process.stdin.write(f"{stdin}\n".encode())
        process.stdin.close()
    return Child(name, process)


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _wait_ready(children: list[Child], checks: dict[str, Callable[[], bool]]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    pending = dict(checks)
    while pending:
        for child in children:
            if child.process.poll() is not None:
                raise DevError(f"{child.name} exited with status {child.process.returncode}")
        for name, check in list(pending.items()):
            if check():
                del pending[name]
        if time.monotonic() > deadline:
            raise DevError(f"not ready after {READY_TIMEOUT_SECONDS:g} s: {', '.join(pending)}")
        time.sleep(0.1)


def _stop(children: list[Child]) -> None:
    for child in children:
        if child.process.poll() is None:
            child.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
    for child in children:
        try:
            child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.process.kill()
            child.process.wait()


def banner(options: DevOptions, database_url: str, database: str, token: str) -> str:
    """What ``notifier dev`` prints once everything is up: addresses and lines to try.

    A database password is not printed: the psql line then reads the URL from the
    environment variable it came from (only a URL given there can carry one).
    """
    api = f"http://127.0.0.1:{options.api_port}"
    shown = redact_url(database_url)
    target = f"'{database_url}'" if shown == database_url else '"$NOTIFIER_DATABASE_URL"'
    auth = f"-H 'Authorization: Bearer {token}' -H 'Content-Type: application/json'"
    if options.sink is None:
        destination = f"""receiver   http://127.0.0.1:{options.receiver_port}/  (subscribed to every event;
             each event it receives is printed below as one JSON line)"""
    else:
        destination = f"""sink       {masked(options.sink)}  (subscribed to every event;
             notifier consume prints each message below as one JSON line)"""
    return f"""
notifier dev is running. Ctrl-C stops everything.

  database   {shown}
             ({database})
  API        {api}    token: {token}
  daemon     http://127.0.0.1:{options.daemon_port}/readyz
  {destination}
  metrics    {api}/metrics  http://127.0.0.1:{options.daemon_port}/metrics

Try:
  curl -s {auth} -d '{{"currency": "USD"}}' {api}/accounts
  curl -s {auth} -d '{{"amount": 500}}' {api}/accounts/1/top-ups
  {program("psql") or "psql"} {target} \\
      -c "INSERT INTO transactions (account_id, kind, amount) VALUES (1, 'debit', 120)"
""".strip("\n")


def run_dev(settings: Settings, options: DevOptions) -> int:
    """Bring everything up, print what to try, and stop it all on SIGINT or SIGTERM."""
    stop = threading.Event()

    def request_stop(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, request_stop)

    token = (
        settings.api_token.get_secret_value() if settings.api_token else secrets.token_urlsafe(18)
    )
    receiver_url = options.sink or f"http://127.0.0.1:{options.receiver_port}/"
    with _database(settings, options) as (database_url, database):
        secret = asyncio.run(_prepare(database_url, receiver_url))
        env = {
            **os.environ,
            "NOTIFIER_DATABASE_URL": database_url,
            "NOTIFIER_API_TOKEN": token,
            "NOTIFIER_API_HOST": "127.0.0.1",
            "NOTIFIER_API_PORT": str(options.api_port),
            "NOTIFIER_DAEMON_HOST": "127.0.0.1",
            "NOTIFIER_DAEMON_PORT": str(options.daemon_port),
            "NOTIFIER_ALLOW_PRIVATE_TARGETS": "true",
            "NOTIFIER_LOG_FORMAT": os.environ.get("NOTIFIER_LOG_FORMAT", "console"),
        }
        checks: dict[str, Callable[[], bool]] = {
            "api": lambda: probe(f"http://127.0.0.1:{options.api_port}/healthz"),
            "daemon": lambda: probe(f"http://127.0.0.1:{options.daemon_port}/healthz"),
        }
        if options.sink is None:
            # The secret goes in the receiver's environment: ps shows command lines.
            first = _spawn(
                "receiver",
                ["receiver", "--port", str(options.receiver_port)],
                {**env, SECRET_ENV: secret},
            )
            checks["receiver"] = lambda: _port_open(options.receiver_port)
        else:
            # The URL goes on the consumer's standard input: it may carry credentials.
            first = _spawn("consumer", ["consume", "-"], env, stdin=options.sink)
        children = [first, _spawn("api", ["api"], env), _spawn("daemon", ["run"], env)]
        try:
            _wait_ready(children, checks)
            print(banner(options, database_url, database, token), flush=True)
            while not stop.wait(0.2):
                for child in children:
                    if child.process.poll() is not None:
                        raise DevError(
                            f"{child.name} exited unexpectedly with status {child.process.returncode}"
                        )
        finally:
            _stop(children)
    return 0
