"""The layout keeps its promises: the engine does not know which destinations exist."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import psycopg

from notifier.statuses import DELIVERY_STATUSES

ROOT = Path(__file__).resolve().parent.parent


def _importers(module: str) -> set[str]:
    """The package's modules (paths from the root) that import ``module`` anywhere."""
    found = set()
    for path in (ROOT / "notifier").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            if any(name == module or name.startswith(f"{module}.") for name in names):
                found.add(path.relative_to(ROOT).as_posix())
    return found


def test_only_the_http_sink_the_health_server_and_the_dev_tools_use_aiohttp() -> None:
    importers = _importers("aiohttp")
    assert not {m for m in importers if m.startswith("notifier/engine/")}
    allowed = {
        "notifier/sinks/http.py",  # with the resolver that guards its connections
        "notifier/observability/health.py",  # the daemon's /healthz, /readyz, /metrics
    }
    assert {m for m in importers if not m.startswith("notifier/devtools/")} <= allowed


def test_the_engine_reaches_destinations_only_through_the_sink_protocol() -> None:
    for sink in ("http", "amqp", "kafka", "nats"):
        importers = _importers(f"notifier.sinks.{sink}")
        assert not {m for m in importers if m.startswith("notifier/engine/")}, sink


def test_each_broker_library_is_imported_by_its_sink_and_its_consumer_alone() -> None:
    # They are optional extras: anything else importing one would need it installed.
    libraries = (
        ("aio_pika", "rabbitmq"),
        ("aiokafka", "kafka"),
        ("nats", "nats"),
        ("aiobotocore", "aws"),
        ("botocore", "aws"),
    )
    for library, kind in libraries:
        sink = {"rabbitmq": "amqp"}.get(kind, kind)
        allowed = {f"notifier/sinks/{sink}.py", f"notifier/devtools/consumers/{kind}.py"}
        assert _importers(library) <= allowed, library


def test_the_delivery_statuses_are_the_tables(dba: psycopg.Connection[Any]) -> None:
    row = dba.execute(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'deliveries_status'"
    ).fetchone()
    assert row is not None
    assert tuple(re.findall(r"'([a-z_]+)'", row[0])) == DELIVERY_STATUSES
