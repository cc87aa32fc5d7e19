"""``notifier bench``: latency, drain rate and write overhead, measured on this machine.

Everything runs here: PostgreSQL (a scratch database on the server you name), one
``notifier run`` process, a signature-verifying receiver in this process, and the load.
"""

from __future__ import annotations

import asyncio
import glob
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from aiohttp import web

from notifier.db import connect
from notifier.migrate import migrate
from notifier.signing import verify
from notifier.subscriptions import SubscriptionStore, generate_secret

ACCOUNTS = 1000
INSERT = "INSERT INTO transactions (account_id, kind, amount) VALUES ($1, 'top_up', 1) RETURNING id"
BULK_INSERT = (
    "INSERT INTO transactions (account_id, kind, amount) "
    "SELECT 1 + n % $1, 'top_up', 1 FROM generate_series(1, $2) n"
)
PGBENCH_SCRIPT = (
    "\\set aid random(1, 1000)\n"
    "INSERT INTO transactions (account_id, kind, amount) VALUES (:aid, 'top_up', 1);\n"
)


@dataclass
class Sink:
    """The receiving end: verifies each signature, notes arrival time and latency."""

    secret: str
    arrivals: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)  # seconds, capture to arrival
    by_transaction: dict[int, float] = field(default_factory=dict)  # transaction id: arrival

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        now = time.time()
        verify(self.secret, request.headers, body, now=now)
        event = json.loads(body)
        captured = datetime.fromisoformat(event["timestamp"]).timestamp()
        self.by_transaction[event["data"]["id"]] = now
        self.arrivals.append(now)
        self.latencies.append(now - captured)
        return web.Response(status=204)

    def reset(self) -> None:
        self.arrivals.clear()
        self.latencies.clear()
        self.by_transaction.clear()


def _with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def find_pgbench() -> str:
    """pgbench on PATH, from a PostgreSQL install, or from the pgserver wheel."""
    candidates = [shutil.which("pgbench") or ""]
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin/pgbench"), reverse=True)
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    try:
        import pgserver
    except ImportError:
        raise RuntimeError("pgbench not found: pass --pgbench PATH") from None
    bundled = Path(pgserver.__file__).parent / "pginstall" / "bin" / "pgbench"
    if os.access(bundled, os.X_OK):
        return str(bundled)
    raise RuntimeError("pgbench not found: pass --pgbench PATH")


class DaemonProcess:
    def __init__(self, database_url: str, log_dir: Path) -> None:
        env = {
            **os.environ,
            "NOTIFIER_DATABASE_URL": database_url,
            "NOTIFIER_DAEMON_HOST": "127.0.0.1",
            "NOTIFIER_DAEMON_PORT": "0",
            # The bench receiver listens on 127.0.0.1, which the SSRF guard refuses.
            "NOTIFIER_ALLOW_PRIVATE_TARGETS": "true",
        }
        self._log = (log_dir / "daemon.log").open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "notifier.cli", "run"],
            env=env,
            stdout=self._log,
            stderr=self._log,
        )
        self.peak_rss_mb = 0.0

    def sample_rss(self) -> None:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        match = re.search(r"VmHWM:\s+(\d+) kB", status)
        if match:
            self.peak_rss_mb = max(self.peak_rss_mb, int(match.group(1)) / 1024)

    async def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        await asyncio.to_thread(self.process.wait)
        self._log.close()


async def _wait_for(sink: Sink, count: int, seconds: float, daemon: DaemonProcess) -> None:
    deadline = time.monotonic() + seconds
    while len(sink.arrivals) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"only {len(sink.arrivals)} of {count} events arrived in {seconds} s"
            )
        if daemon.process.poll() is not None:
            raise RuntimeError("the daemon exited; see its log")
        daemon.sample_rss()
        await asyncio.sleep(0.05)


async def steady_latency(
    url: str, sink: Sink, log_dir: Path, rate: float, seconds: float
) -> dict[str, float]:
    """(a) Latency from capture to arrival with a steady stream of single-row commits."""
    daemon = DaemonProcess(url, log_dir)
    conn = await asyncpg.connect(url)
    try:
        await asyncio.sleep(1.5)  # the daemon connects and parks
        total = int(rate * seconds)
        loop = asyncio.get_running_loop()
        start = loop.time()
        committed: list[tuple[int, float]] = []  # transaction id, when its commit returned
        for n in range(total):
            delay = start + n / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            committed.append((await conn.fetchval(INSERT, 1 + n % ACCOUNTS), time.time()))
        achieved = total / (loop.time() - start)
        await _wait_for(sink, total, 30, daemon)
    finally:
        await conn.close()
        await daemon.stop()
    warm = int(rate)  # the first second is warm-up
    measured = sink.latencies[warm:]
    from_commit = [sink.by_transaction[tx] - at for tx, at in committed[warm:]]
    return {
        "rate": achieved,
        "events": len(measured),
        "p50_ms": _percentile(measured, 0.50) * 1000,
        "p99_ms": _percentile(measured, 0.99) * 1000,
        "max_ms": max(measured) * 1000,
        "commit_p50_ms": _percentile(from_commit, 0.50) * 1000,
        "commit_p99_ms": _percentile(from_commit, 0.99) * 1000,
    }


async def drain(url: str, sink: Sink, log_dir: Path, backlog: int) -> dict[str, float]:
    """(b) One daemon started on a backlog written while none was running."""
    conn = await asyncpg.connect(url)
    try:
        for done in range(0, backlog, 5000):
            await conn.execute(BULK_INSERT, ACCOUNTS, min(5000, backlog - done))
    finally:
        await conn.close()
    sink.reset()
    started = time.time()
    daemon = DaemonProcess(url, log_dir)
    try:
        await _wait_for(sink, backlog, 600, daemon)
        daemon.sample_rss()
    finally:
        await daemon.stop()
    first, last = sink.arrivals[0], sink.arrivals[-1]
    return {
        "events": len(sink.arrivals),
        "seconds_from_start": last - started,
        "rate_from_start": len(sink.arrivals) / (last - started),
        "rate": len(sink.arrivals) / (last - first),
        "peak_rss_mb": daemon.peak_rss_mb,
    }


def _pgbench_tps(pgbench: str, url: str, script: Path, seconds: int, clients: int) -> float:
    result = subprocess.run(
        [
            pgbench,
            "-n",
            "-M",
            "prepared",
            "-c",
            str(clients),
            "-j",
            "2",
            "-T",
            str(seconds),
            "-f",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    match = re.search(r"tps = ([\d.]+)", result.stdout)
    if not match:
        raise RuntimeError(f"unexpected pgbench output:\n{result.stdout}\n{result.stderr}")
    return float(match.group(1))


async def write_overhead(
    url: str, pgbench: str, log_dir: Path, seconds: int, clients: int, rounds: int = 3
) -> dict[str, Any]:
    """(c) INSERT throughput with capture on (doorbell not armed) and off.

    The two alternate over several rounds, starting from a vacuumed, checkpointed
    database, and the medians are compared, so neither side pays for the other's
    leftovers (dead rows, a checkpoint, autovacuum) more than the other does.
    """
    script = log_dir / "insert.sql"
    script.write_text(PGBENCH_SCRIPT)
    conn = await asyncpg.connect(url)

    async def run(capture: bool) -> float:
        state = "ENABLE" if capture else "DISABLE"
        await conn.execute(f"ALTER TABLE transactions {state} TRIGGER notifier_capture")
        return _pgbench_tps(pgbench, url, script, seconds, clients)

    try:
        await conn.execute("UPDATE notifier.doorbell SET armed = false")
        await conn.execute("VACUUM ANALYZE")
        await conn.execute("CHECKPOINT")
        on: list[float] = []
        off: list[float] = []
        for round_ in range(rounds):
            first = round_ % 2 == 0
            for capture in (first, not first):
                (on if capture else off).append(await run(capture))
        await conn.execute("ALTER TABLE transactions ENABLE TRIGGER notifier_capture")
        await conn.execute("UPDATE notifier.doorbell SET armed = true")
        armed = _pgbench_tps(pgbench, url, script, seconds, clients)
        await conn.execute("UPDATE notifier.doorbell SET armed = false")
    finally:
        await conn.close()
    on_tps, off_tps = statistics.median(on), statistics.median(off)
    return {
        "capture_on": on_tps,
        "capture_off": off_tps,
        "ratio": on_tps / off_tps,
        "armed_no_daemon": armed,
        "rounds_on": " ".join(f"{tps:.0f}" for tps in on),
        "rounds_off": " ".join(f"{tps:.0f}" for tps in off),
    }


async def _prepare(admin_url: str, name: str) -> tuple[str, str]:
    admin = await connect(admin_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = _with_database(admin_url, name)
    conn = await connect(url)
    try:
        await migrate(conn)
        await conn.execute(
            "INSERT INTO accounts (currency) SELECT 'USD' FROM generate_series(1, $1)", ACCOUNTS
        )
        secret = generate_secret()
        return url, secret
    finally:
        await conn.close()


async def run_bench(
    admin_url: str,
    *,
    database: str,
    rate: float,
    seconds: float,
    backlog: int,
    pgbench: str | None,
    write_seconds: int,
    clients: int,
    keep: bool,
) -> int:
    """Run the three measurements and print their figures."""
    url, secret = await _prepare(admin_url, database)
    sink = Sink(secret)
    app = web.Application()
    app.router.add_post("/", sink.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    conn = await connect(url)
    await SubscriptionStore(conn, allow_private_targets=True).create(
        f"http://127.0.0.1:{port}/", secret=secret
    )
    await conn.close()
    log_dir = Path(tempfile.mkdtemp(prefix="notifier-bench-"))
    print(f"bench database {database}; daemon logs in {log_dir}", flush=True)
    try:
        a = await steady_latency(url, sink, log_dir, rate, seconds)
        print(
            f"(a) latency at {a['rate']:.0f} events/s ({a['events']:.0f} events): "
            f"from capture (the event timestamp, before COMMIT) p50 {a['p50_ms']:.2f} ms, "
            f"p99 {a['p99_ms']:.2f} ms, max {a['max_ms']:.2f} ms; from the writer's COMMIT "
            f"returning p50 {a['commit_p50_ms']:.2f} ms, p99 {a['commit_p99_ms']:.2f} ms",
            flush=True,
        )
        b = await drain(url, sink, log_dir, backlog)
        print(
            f"(b) drain of {b['events']:.0f} events: {b['rate']:.0f} events/s "
            f"(first to last delivery; {b['rate_from_start']:.0f}/s counting daemon start-up, "
            f"{b['seconds_from_start']:.1f} s), peak RSS {b['peak_rss_mb']:.1f} MB",
            flush=True,
        )
        c = await write_overhead(url, pgbench or find_pgbench(), log_dir, write_seconds, clients)
        print(
            f"(c) pgbench, {clients} clients, 1-row INSERT into transactions, medians of 3 "
            "alternating runs: "
            f"capture on {c['capture_on']:.0f} tx/s, capture off {c['capture_off']:.0f} tx/s, "
            f"ratio {c['ratio']:.2f} (doorbell armed with no daemon to hear it: "
            f"{c['armed_no_daemon']:.0f} tx/s); rounds on: {c['rounds_on']}, "
            f"off: {c['rounds_off']}",
            flush=True,
        )
    finally:
        await runner.cleanup()
        if not keep:
            admin = await connect(admin_url)
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            finally:
                await admin.close()
    return 0
