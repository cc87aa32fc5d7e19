"""``notifier bench``: latency, drain rate and write overhead, measured on this machine.

Everything runs here: PostgreSQL (a scratch database on the server you name), one
``notifier run`` process, a signature-verifying receiver in this process (or, with
``--sink``, a consumer of that broker destination), and the load.
"""

from __future__ import annotations

import asyncio
import re
import statistics
import subprocess
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from notifier.db.migrate import migrate
from notifier.db.pool import connect
from notifier.devtools.consume import Message, consumer
from notifier.devtools.daemon_process import DaemonProcess, wait_until
from notifier.devtools.embedded_pg import program
from notifier.devtools.libpq import command_line_url
from notifier.devtools.receiver import Received, Receiver
from notifier.sinks.targets import masked
from notifier.subscriptions.store import SubscriptionStore, generate_secret

ACCOUNTS = 1000
# An ordered subscription is measured over this many accounts, each one key.
ORDERED_ACCOUNTS = 64
INSERT = "INSERT INTO transactions (account_id, kind, amount) VALUES ($1, 'top_up', 1) RETURNING id"
BULK_INSERT = (
    "INSERT INTO transactions (account_id, kind, amount) "
    "SELECT 1 + n % $1, 'top_up', 1 FROM generate_series(1, $2) n"
)
PGBENCH_SCRIPT = (
    "\\set aid random(1, 1000)\n"
    "INSERT INTO transactions (account_id, kind, amount) VALUES (:aid, 'top_up', 1);\n"
)


class Arrivals(Protocol):
    """Where the bench sees events arrive: the receiver, or a broker's consumer."""

    @property
    def received(self) -> list[Received]: ...

    def clear(self) -> None: ...


class BrokerArrivals:
    """What arrives on a broker destination, timed when the consumer hands it over."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.received: list[Received] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def _arrived(self, message: Message) -> None:
        self.received.append(Received("", message.metadata, message.body, time.time()))

    async def start(self) -> BrokerArrivals:
        ready = asyncio.Event()
        self._task = asyncio.create_task(
            consumer(self.url)(self.url, self._arrived, ready, self._stop)
        )
        waiter = asyncio.create_task(ready.wait())
        try:
            async with asyncio.timeout(30):
                await asyncio.wait({self._task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if self._task.done():
            self._task.result()  # what stopped it
        return self

    def clear(self) -> None:
        self.received = []

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            async with asyncio.timeout(10):
                await self._task


def _with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def find_pgbench() -> str:
    """pgbench on PATH, from a PostgreSQL install, or from the pgserver wheel."""
    found = program("pgbench")
    if found is None:
        raise RuntimeError("pgbench not found: pass --pgbench PATH")
    return found


def _daemon(url: str, log_dir: Path) -> DaemonProcess:
    # The bench receiver listens on 127.0.0.1, which the SSRF guard refuses.
    return DaemonProcess(url, log_dir / "daemon.log", NOTIFIER_ALLOW_PRIVATE_TARGETS="true")


def _event_id(received: Received) -> bytes:
    """The event id, read from where the contract's body puts it (``{"id":"<uuid>"``)."""
    return received.body[7:43]


def _distinct(received: list[Received]) -> int:
    return len({_event_id(r) for r in received})


def _first_arrivals(received: list[Received]) -> list[Received]:
    """Each event's first arrival, in arrival order (at least once: copies are dropped)."""
    first: dict[bytes, Received] = {}
    for arrival in received:
        first.setdefault(_event_id(arrival), arrival)
    return list(first.values())


async def _wait_for(receiver: Arrivals, count: int, seconds: float, daemon: DaemonProcess) -> None:
    """Until ``count`` distinct events arrived (at least once: a copy does not count)."""

    def arrived() -> bool:
        if daemon.process.poll() is not None:
            raise RuntimeError("the daemon exited; see its log")
        return len(receiver.received) >= count and _distinct(receiver.received) >= count

    await wait_until(arrived, seconds, what=f"{count} events to arrive")


async def steady_latency(
    url: str, receiver: Arrivals, log_dir: Path, rate: float, seconds: float, accounts: int
) -> dict[str, float]:
    """(a) Latency from capture to arrival with a steady stream of single-row commits."""
    async with _daemon(url, log_dir) as daemon:
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
                committed.append((await conn.fetchval(INSERT, 1 + n % accounts), time.time()))
            achieved = total / (loop.time() - start)
            await _wait_for(receiver, total, 30, daemon)
        finally:
            await conn.close()
    # Parsed now, after the run, so that receiving stays as cheap as it can be.
    events = [(r.at, r.event) for r in _first_arrivals(receiver.received)]
    latencies = [at - datetime.fromisoformat(e["timestamp"]).timestamp() for at, e in events]
    arrived_at = {e["data"]["id"]: at for at, e in events}  # transaction id: arrival
    warm = int(rate)  # the first second is warm-up
    measured = latencies[warm:]
    from_commit = [arrived_at[tx] - at for tx, at in committed[warm:]]
    return {
        "rate": achieved,
        "events": len(measured),
        "copies": len(receiver.received) - len(events),
        "p50_ms": _percentile(measured, 0.50) * 1000,
        "p99_ms": _percentile(measured, 0.99) * 1000,
        "max_ms": max(measured) * 1000,
        "commit_p50_ms": _percentile(from_commit, 0.50) * 1000,
        "commit_p99_ms": _percentile(from_commit, 0.99) * 1000,
    }


async def drain(
    url: str, receiver: Arrivals, log_dir: Path, backlog: int, accounts: int
) -> dict[str, float]:
    """(b) One daemon started on a backlog written while none was running."""
    conn = await asyncpg.connect(url)
    try:
        for done in range(0, backlog, 5000):
            await conn.execute(BULK_INSERT, accounts, min(5000, backlog - done))
    finally:
        await conn.close()
    receiver.clear()
    started = time.time()
    async with _daemon(url, log_dir) as daemon:
        await _wait_for(receiver, backlog, 600, daemon)
        peak_rss_mb = daemon.peak_rss_mb()
    arrivals = [r.at for r in _first_arrivals(receiver.received)]
    first, last = arrivals[0], arrivals[-1]
    return {
        "events": len(arrivals),
        "copies": len(receiver.received) - len(arrivals),
        "seconds_from_start": last - started,
        "rate_from_start": len(arrivals) / (last - started),
        "rate": len(arrivals) / (last - first),
        "peak_rss_mb": peak_rss_mb,
    }


def _pgbench_tps(pgbench: str, url: str, script: Path, seconds: int, clients: int) -> float:
    shown, env = command_line_url(url)
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
            shown,
        ],
        capture_output=True,
        text=True,
        env=env,
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
    sink: str | None = None,
    ordered: bool = False,
) -> int:
    """Run the three measurements and print their figures."""
    url, secret = await _prepare(admin_url, database)
    receiver: Receiver | BrokerArrivals
    if sink is None:
        receiver = await Receiver(secret).start()
        target = receiver.url("/")
    else:
        receiver = await BrokerArrivals(sink).start()
        target = sink
    conn = await connect(url)
    await SubscriptionStore(conn, allow_private_targets=True).create(
        target,
        secret=secret,
        event_types=["transaction.*"],
        ordering="key" if ordered else "none",
    )
    accounts = ORDERED_ACCOUNTS if ordered else ACCOUNTS
    await conn.close()
    log_dir = Path(tempfile.mkdtemp(prefix="notifier-bench-"))
    shown = "a webhook receiver" if sink is None else masked(sink)
    how = f"ordered by account over {accounts} accounts" if ordered else "unordered"
    print(
        f"bench database {database}, destination {shown}, {how}; daemon logs in {log_dir}",
        flush=True,
    )
    try:
        a = await steady_latency(url, receiver, log_dir, rate, seconds, accounts)
        print(
            f"(a) latency at {a['rate']:.0f} events/s ({a['events']:.0f} events): "
            f"from capture (the event timestamp, before COMMIT) p50 {a['p50_ms']:.2f} ms, "
            f"p99 {a['p99_ms']:.2f} ms, max {a['max_ms']:.2f} ms; from the writer's COMMIT "
            f"returning p50 {a['commit_p50_ms']:.2f} ms, p99 {a['commit_p99_ms']:.2f} ms; "
            f"{a['copies']:.0f} arrived twice",
            flush=True,
        )
        b = await drain(url, receiver, log_dir, backlog, accounts)
        print(
            f"(b) drain of {b['events']:.0f} events: {b['rate']:.0f} events/s "
            f"(first to last delivery; {b['rate_from_start']:.0f}/s counting daemon start-up, "
            f"{b['seconds_from_start']:.1f} s), peak RSS {b['peak_rss_mb']:.1f} MB; "
            f"{b['copies']:.0f} arrived twice",
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
        await receiver.stop()
        if not keep:
            admin = await connect(admin_url)
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            finally:
                await admin.close()
    return 0
