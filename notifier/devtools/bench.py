"""``notifier bench``: latency, drain rate and write overhead, measured on this machine.

Everything runs here: PostgreSQL (a scratch database on the server you name), one
``notifier run`` process, a receiver in this process that records arrivals and answers
204 without checking signatures (or, with ``--sink``, a consumer of that broker
destination), and the load, whose writers run in processes of their own.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import aiohttp
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
BULK_INSERT = (
    "INSERT INTO transactions (account_id, kind, amount) "
    "SELECT 1 + n % $1, 'top_up', 1 FROM generate_series(1, $2) n"
)
PGBENCH_SCRIPT = (
    "\\set aid random(1, 1000)\n"
    "INSERT INTO transactions (account_id, kind, amount) VALUES (:aid, 'top_up', 1);\n"
)
# The same write in a caller's trace, as the API makes it for a request with a traceparent.
TRACED_PGBENCH_SCRIPT = (
    "\\set aid random(1, 1000)\n"
    "BEGIN;\n"
    "SELECT set_config('notifier.traceparent', "
    "'00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01', true);\n"
    "INSERT INTO transactions (account_id, kind, amount) VALUES (:aid, 'top_up', 1);\n"
    "COMMIT;\n"
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


async def _load(url: str, *args: object, stdin: bytes | None = None) -> dict[str, Any]:
    """Run ``notifier.devtools.load`` as a process of its own; its JSON result."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "notifier.devtools.load",
        *(str(a) for a in args),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "NOTIFIER_DATABASE_URL": url},
    )
    out, _ = await process.communicate(stdin)
    if process.returncode != 0:
        raise RuntimeError(f"the load process failed ({process.returncode})")
    result: dict[str, Any] = json.loads(out)
    return result


async def steady_latency(
    url: str, receiver: Arrivals, daemon: DaemonProcess, rate: float, seconds: float, accounts: int
) -> dict[str, float]:
    """(a) Latency with a steady stream of single-row commits from another process."""
    receiver.clear()
    total = int(rate * seconds)
    load = await _load(url, "steady", rate, total, accounts)
    await _wait_for(receiver, total, 30, daemon)
    # Parsed now, after the run, so that receiving stays as cheap as it can be.
    events = [(r.at, r.event) for r in _first_arrivals(receiver.received)]
    latencies = [at - datetime.fromisoformat(e["timestamp"]).timestamp() for at, e in events]
    arrived_at = {e["data"]["id"]: at for at, e in events}  # transaction id: arrival
    committed = load["committed"]
    warm = int(rate)  # the first second is warm-up
    measured = latencies[warm:]
    from_commit = [arrived_at[tx] - at for tx, at in committed[warm:]]
    return {
        "rate": load["rate"],
        "events": len(measured),
        "copies": len(receiver.received) - len(events),
        "p50_ms": _percentile(measured, 0.50) * 1000,
        "p99_ms": _percentile(measured, 0.99) * 1000,
        "max_ms": max(measured) * 1000,
        "commit_p50_ms": _percentile(from_commit, 0.50) * 1000,
        "commit_p99_ms": _percentile(from_commit, 0.99) * 1000,
    }


async def burst(
    url: str, receiver: Arrivals, daemon: DaemonProcess, rows: int, writers: int, accounts: int
) -> dict[str, float]:
    """(b) Single-row commits from ``writers`` connections as fast as they go, delivered
    while they are written: does delivery keep pace with the writers?"""
    receiver.clear()
    load = await _load(url, "burst", writers, rows, accounts)
    await _wait_for(receiver, rows, 120, daemon)
    arrivals = [r.at for r in _first_arrivals(receiver.received)]
    written = rows / (load["last"] - load["first"])
    delivered = rows / (arrivals[-1] - load["first"])
    return {"written": written, "delivered": delivered, "ratio": delivered / written}


@dataclass(frozen=True)
class Costs:
    """Counters read at one moment of a drain."""

    arrived: int  # requests the receiver has had
    daemon_cpu: float  # the daemon's CPU seconds, user and system
    server_cpu: float | None  # the PostgreSQL server's (None: its /proc is not readable here)
    wal: int  # the server's WAL position, in bytes


def _cpu_seconds(pid: int, *, reaped: bool = False) -> float:
    """A process's CPU seconds from /proc; with ``reaped``, its exited children's too."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    if reaped:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def _server_cpu(backend_pid: int) -> float | None:
    """CPU seconds of every process of the PostgreSQL server (the postmaster, each live
    child, and those that exited) when it runs on this machine; None otherwise."""
    try:
        postmaster = int(Path(f"/proc/{backend_pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        total = _cpu_seconds(postmaster, reaped=True)
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # exited meanwhile
            if int(stat[1]) == postmaster:
                total += (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")
        return total
    except (OSError, ValueError, IndexError):
        return None


async def _costs(conn: asyncpg.Connection, daemon: DaemonProcess, arrived: int) -> Costs:
    row = await conn.fetchrow(
        "SELECT pg_backend_pid() AS pid,"
        " pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint AS wal"
    )
    assert row is not None
    return Costs(arrived, _cpu_seconds(daemon.process.pid), _server_cpu(row["pid"]), row["wal"])


async def drain(
    url: str, receiver: Arrivals, log_dir: Path, backlog: int, accounts: int
) -> dict[str, float]:
    """(c) One daemon started on a backlog written while none was running, and what each
    delivered event costs: the daemon's CPU time, the server's, and WAL."""
    conn = await asyncpg.connect(url)
    try:
        for done in range(0, backlog, 5000):
            await conn.execute(BULK_INSERT, accounts, min(5000, backlog - done))
        await conn.execute("VACUUM ANALYZE")
        await conn.execute("CHECKPOINT")
        receiver.clear()
        started = time.time()
        async with _daemon(url, log_dir) as daemon:
            # Costs are counted from the first arrival, past the daemon's start-up.
            await wait_until(lambda: bool(receiver.received), 60, what="the first event")
            before = await _costs(conn, daemon, len(receiver.received))
            await _wait_for(receiver, backlog, 600, daemon)
            after = await _costs(conn, daemon, len(receiver.received))
            peak_rss_mb = daemon.peak_rss_mb()
            statements = await _statement_percentiles(daemon)
    finally:
        await conn.close()
    arrivals = [r.at for r in _first_arrivals(receiver.received)]
    first, last = arrivals[0], arrivals[-1]
    counted = max(1, after.arrived - before.arrived)  # a tiny backlog may be gone at once
    server_cpu = (
        None
        if after.server_cpu is None or before.server_cpu is None
        else (after.server_cpu - before.server_cpu) / counted * 1e6
    )
    return {
        "events": len(arrivals),
        "copies": len(receiver.received) - len(arrivals),
        "seconds_from_start": last - started,
        "rate_from_start": len(arrivals) / (last - started),
        "rate": len(arrivals) / (last - first),
        "peak_rss_mb": peak_rss_mb,
        "daemon_cpu_us": (after.daemon_cpu - before.daemon_cpu) / counted * 1e6,
        "server_cpu_us": -1.0 if server_cpu is None else server_cpu,
        "wal_bytes": (after.wal - before.wal) / counted,
        **statements,
    }


async def http_ceiling(receiver: Receiver, concurrency: int, count: int) -> float:
    """Requests per second a plain aiohttp client, in a process of its own, gets from the
    same receiver with the same body and concurrency as the daemon had: the ceiling."""
    body = receiver.received[0].body
    receiver.clear()
    result = await _load("", "ceiling", receiver.url("/"), concurrency, count, stdin=body)
    if result["failures"]:
        raise RuntimeError(f"the receiver refused {result['failures']} ceiling requests")
    return float(result["requests"] / result["seconds"])


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
    """(d) INSERT throughput with capture on (doorbell not armed) and off.

    The two alternate over several rounds, starting from a vacuumed, checkpointed
    database, and the medians are compared, so neither side pays for the other's
    leftovers (dead rows, a checkpoint, autovacuum) more than the other does.
    """
    script = log_dir / "insert.sql"
    script.write_text(PGBENCH_SCRIPT)
    traced_script = log_dir / "traced_insert.sql"
    traced_script.write_text(TRACED_PGBENCH_SCRIPT)
    conn = await asyncpg.connect(url)

    async def run(capture: bool, traced: bool = False) -> float:
        state = "ENABLE" if capture else "DISABLE"
        await conn.execute(f"ALTER TABLE transactions {state} TRIGGER notifier_capture")
        return _pgbench_tps(pgbench, url, traced_script if traced else script, seconds, clients)

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
        traced_on, traced_off = await run(True, traced=True), await run(False, traced=True)
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
        "traced_on": traced_on,
        "traced_off": traced_off,
        "traced_ratio": traced_on / traced_off,
        "armed_no_daemon": armed,
        "rounds_on": " ".join(f"{tps:.0f}" for tps in on),
        "rounds_off": " ".join(f"{tps:.0f}" for tps in off),
    }


# Delivered history, written straight into the outbox (as months of traffic leave it):
# events of one transaction per chunk, recorded as delivered in batches of 200, and the
# subscription's position past them.
HISTORY_EVENTS = """
    INSERT INTO notifier.events (type, topic, table_schema, table_name, op, data, created_at)
    SELECT 'transaction.created', 'transaction', 'public', 'transactions', 'INSERT',
           jsonb_build_object('id', n, 'account_id', 1 + n % 1000, 'kind', 'top_up',
                              'amount', 1, 'currency', 'USD', 'balance_after', n,
                              'idempotency_key', NULL, 'metadata', '{}'::jsonb,
                              'created_at', now()),
           now()
      FROM generate_series($1::bigint, $2::bigint) AS n
"""
HISTORY_BATCHES = """
    INSERT INTO notifier.batches (subscription_id, event_ids, claimed_at, finished_at,
                                  succeeded, sent_at, durations_ms, outcomes)
    SELECT $1, array_agg(id ORDER BY id), now(), now(), count(*),
           array_agg(now() ORDER BY id), array_agg(1.0::real ORDER BY id),
           array_agg('http_204'::text ORDER BY id)
      FROM notifier.events WHERE id > $2
     GROUP BY id / 200
"""


async def fill_history(url: str, events: int) -> None:
    """``events`` delivered events in the outbox, their batches, the position past them."""
    conn = await asyncpg.connect(url)
    try:
        subscription = await conn.fetchval("SELECT min(id) FROM notifier.subscriptions")
        chunk = 1_000_000
        for start in range(1, events + 1, chunk):
            before = await conn.fetchval("SELECT coalesce(max(id), 0) FROM notifier.events")
            await conn.execute(HISTORY_EVENTS, start, min(events, start + chunk - 1))
            await conn.execute(HISTORY_BATCHES, subscription, before)
        await conn.execute(
            "UPDATE notifier.positions SET since = pg_current_snapshot(), upto = NULL,"
            " after_id = NULL, last_id = NULL"
        )
        await conn.execute("VACUUM ANALYZE")
        await conn.execute("CHECKPOINT")
        size = await conn.fetchval(
            "SELECT pg_size_pretty(sum(pg_total_relation_size(c.oid)))"
            "  FROM pg_class c WHERE c.relnamespace = 'notifier'::regnamespace AND c.relkind = 'r'"
        )
        print(f"history: {events} delivered events in the outbox ({size} on disk)", flush=True)
    finally:
        await conn.close()


async def _statement_percentiles(daemon: DaemonProcess) -> dict[str, float]:
    """p50 and p99 of the daemon's claims and settlements, from its histograms."""
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{daemon.port}/metrics") as response,
    ):
        text = await response.text()
    result: dict[str, float] = {}
    for name in ("claim", "settle"):
        buckets = [
            (float(m.group(1)), float(m.group(2)))
            for m in re.finditer(
                rf'^notifier_{name}_duration_seconds_bucket{{le="([^"]+)"}} (\S+)$', text, re.M
            )
        ]
        for q in (0.5, 0.99):
            result[f"{name}_p{int(q * 100)}_ms"] = _bucket_percentile(buckets, q) * 1000
    return result


def _bucket_percentile(buckets: list[tuple[float, float]], q: float) -> float:
    """A percentile from cumulative histogram buckets, linear within a bucket."""
    total = buckets[-1][1] if buckets else 0.0
    if not total:
        return 0.0
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= q * total:
            if bound == float("inf"):
                return lower_bound
            share = (q * total - lower_count) / max(count - lower_count, 1e-9)
            return lower_bound + (bound - lower_bound) * share
        lower_bound, lower_count = bound, count
    return lower_bound


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
    burst_rows: int,
    writers: int,
    pgbench: str | None,
    write_seconds: int,
    clients: int,
    keep: bool,
    sink: str | None = None,
    ordered: bool = False,
    history: int = 0,
) -> int:
    """Run the measurements and print their figures."""
    url, secret = await _prepare(admin_url, database)
    receiver: Receiver | BrokerArrivals
    if sink is None:
        # Signatures are the receiver's cost, not the notifier's: not checked here, as the
        # plain client that measures the HTTP ceiling against this receiver does not sign.
        receiver = await Receiver().start()
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
    if history:
        await fill_history(url, history)
    log_dir = Path(tempfile.mkdtemp(prefix="notifier-bench-"))
    shown = "a webhook receiver" if sink is None else masked(sink)
    how = f"ordered by account over {accounts} accounts" if ordered else "unordered"
    print(
        f"bench database {database}, destination {shown}, {how}; daemon logs in {log_dir}",
        flush=True,
    )
    try:
        async with _daemon(url, log_dir) as daemon:
            await wait_until(lambda: _listening(url), what="the daemon to listen")
            a = await steady_latency(url, receiver, daemon, rate, seconds, accounts)
            print(
                f"(a) latency at {a['rate']:.0f} events/s ({a['events']:.0f} events), writer in "
                f"a process of its own: from its COMMIT returning p50 {a['commit_p50_ms']:.2f} "
                f"ms, p99 {a['commit_p99_ms']:.2f} ms; from capture (the event timestamp, "
                f"before COMMIT) p50 {a['p50_ms']:.2f} ms, p99 {a['p99_ms']:.2f} ms, max "
                f"{a['max_ms']:.2f} ms; {a['copies']:.0f} arrived twice",
                flush=True,
            )
            b = await burst(url, receiver, daemon, burst_rows, writers, accounts)
            print(
                f"(b) burst of {burst_rows} single-row commits from {writers} writers: written "
                f"{b['written']:.0f} rows/s, delivered {b['delivered']:.0f} events/s (first "
                f"COMMIT to last arrival), ratio {b['ratio']:.2f}",
                flush=True,
            )
        c = await drain(url, receiver, log_dir, backlog, accounts)
        server = (
            "n/a (the server's /proc is not readable here)"
            if c["server_cpu_us"] < 0
            else f"{c['server_cpu_us']:.0f} us"
        )
        ceiling = ""
        if isinstance(receiver, Receiver):
            limit = int(os.environ.get("NOTIFIER_MAX_IN_FLIGHT_PER_SUBSCRIPTION", "8"))
            raw = await http_ceiling(receiver, limit, min(backlog, 20_000))
            ceiling = (
                f"; raw HTTP ceiling (aiohttp client, {limit} in flight, same receiver and "
                f"body) {raw:.0f} requests/s, drain/ceiling {c['rate'] / raw:.2f}"
            )
        print(
            f"(c) drain of {c['events']:.0f} events: {c['rate']:.0f} events/s (first to last "
            f"delivery; {c['rate_from_start']:.0f}/s counting daemon start-up, "
            f"{c['seconds_from_start']:.1f} s){ceiling}; peak RSS {c['peak_rss_mb']:.1f} MB; "
            f"{c['copies']:.0f} arrived twice\n"
            f"    per delivered event: daemon CPU {c['daemon_cpu_us']:.0f} us, PostgreSQL CPU "
            f"{server} (all server processes, from /proc), WAL {c['wal_bytes']:.0f} bytes\n"
            f"    claim p50 {c['claim_p50_ms']:.2f} ms, p99 {c['claim_p99_ms']:.2f} ms; "
            f"recording outcomes p50 {c['settle_p50_ms']:.2f} ms, p99 {c['settle_p99_ms']:.2f} ms "
            "(the daemon's histograms)",
            flush=True,
        )
        d = await write_overhead(url, pgbench or find_pgbench(), log_dir, write_seconds, clients)
        print(
            f"(d) pgbench, {clients} clients, 1-row INSERT into transactions, medians of 3 "
            "alternating runs: "
            f"capture on {d['capture_on']:.0f} tx/s, capture off {d['capture_off']:.0f} tx/s, "
            f"ratio {d['ratio']:.2f} (doorbell armed with no daemon to hear it: "
            f"{d['armed_no_daemon']:.0f} tx/s); rounds on: {d['rounds_on']}, "
            f"off: {d['rounds_off']}; in a trace (SET LOCAL notifier.traceparent, "
            f"one run each): on {d['traced_on']:.0f}, off {d['traced_off']:.0f}, "
            f"ratio {d['traced_ratio']:.2f}",
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


async def _listening(url: str) -> bool:
    conn = await asyncpg.connect(url)
    try:
        return bool(
            await conn.fetchval(
                "SELECT count(*) > 0 FROM pg_stat_activity"
                " WHERE application_name = 'notifier-listener' AND datname = current_database()"
            )
        )
    finally:
        await conn.close()
