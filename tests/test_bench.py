"""``notifier bench`` runs end to end and reports every figure it promises (at a tiny
scale: the figures themselves are for the operator, not for a test to judge)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid

import psycopg
import pytest

pytestmark = pytest.mark.slow


def test_bench_reports_latency_burst_drain_ceiling_costs_and_write_ratio(pg_server: str) -> None:
    database = f"notifier_bench_{uuid.uuid4().hex[:12]}"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "notifier.cli",
            "bench",
            "--admin-url",
            pg_server,
            "--database",
            database,
            "--seconds",
            "1.5",
            "--rate",
            "100",
            "--burst",
            "300",
            "--backlog",
            "1000",
            "--write-seconds",
            "1",
        ],
        env={k: v for k, v in os.environ.items() if not k.startswith("NOTIFIER_")},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    number = r"[\d.]+"
    for figure in [
        rf"\(a\) latency at {number} events/s .* from its COMMIT returning p50 {number} ms, "
        rf"p99 {number} ms; from capture .* p50 {number} ms, p99 {number} ms",
        rf"\(b\) burst of 300 single-row commits from 8 writers: written {number} rows/s, "
        rf"delivered {number} events/s .* ratio {number}",
        rf"\(c\) drain of 1000 events: {number} events/s .* raw HTTP ceiling .* {number} "
        rf"requests/s, drain/ceiling {number}; peak RSS {number} MB",
        rf"per delivered event: daemon CPU {number} us, PostgreSQL CPU ({number} us|n/a)"
        rf".*, WAL {number} bytes",
        rf"\(d\) pgbench, 8 clients, .* ratio {number} .* in a trace .* ratio {number}",
    ]:
        assert re.search(figure, out), f"no line matches {figure!r} in:\n{out}"
    with psycopg.connect(pg_server, autocommit=True) as admin:
        left = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [database])
        assert left.fetchone() is None  # the scratch database is dropped
