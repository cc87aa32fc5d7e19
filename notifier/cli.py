"""The ``notifier`` command: one console script, one subcommand per job."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import asyncpg

from notifier import __version__
from notifier.db import DatabaseUnavailable, connect, load_queries
from notifier.dev import DevError, DevOptions, run_dev
from notifier.healthcheck import health_url, probe
from notifier.logging import configure_logging, get_logger
from notifier.migrate import MigrationError, migrate
from notifier.settings import Settings, SettingsError, load_settings

Handler = Callable[[argparse.Namespace, Settings], int]


class CliError(Exception):
    """A user-facing failure: printed as one line, exit status 1."""


def _run_migrate(_args: argparse.Namespace, settings: Settings) -> int:
    log = get_logger("notifier.migrate")

    async def run() -> int:
        conn = await connect(settings.database_url)
        try:
            applied = await migrate(conn)
        finally:
            await conn.close()
        for migration in applied:
            log.info("migration_applied", file=migration.file_name)
        log.info("migrations_up_to_date", applied=len(applied))
        return 0

    return asyncio.run(run())


def _run_watch(args: argparse.Namespace, settings: Settings) -> int:
    queries = load_queries("capture")

    async def run() -> int:
        conn = await connect(settings.database_url)
        try:
            if args.list or args.table is None:
                for row in await conn.fetch(queries["watched"]):
                    print(f"{row['table_name']}\t{row['topic']}")
                return 0
            if args.topic is None:
                raise CliError("watch needs --topic NAME (events are typed NAME.created, ...)")
            await conn.execute(queries["watch"], args.table, args.topic)
            print(f"watching {args.table}: events {args.topic}.created|updated|deleted")
            return 0
        except asyncpg.UndefinedTableError:
            raise CliError(f"no table named {args.table}") from None
        except asyncpg.InvalidParameterValueError as exc:
            raise CliError(str(exc)) from None
        finally:
            await conn.close()

    return asyncio.run(run())


def _run_unwatch(args: argparse.Namespace, settings: Settings) -> int:
    async def run() -> int:
        conn = await connect(settings.database_url)
        try:
            await conn.execute(load_queries("capture")["unwatch"], args.table)
        except asyncpg.UndefinedTableError:
            raise CliError(f"no table named {args.table}") from None
        finally:
            await conn.close()
        print(f"no longer watching {args.table}")
        return 0

    return asyncio.run(run())


def _run_dev(args: argparse.Namespace, settings: Settings) -> int:
    options = DevOptions(
        data_dir=Path(args.data_dir).resolve(),
        api_port=args.api_port if args.api_port is not None else settings.api_port,
        daemon_port=args.daemon_port if args.daemon_port is not None else settings.daemon_port,
        receiver_port=args.receiver_port,
    )
    return run_dev(settings, options)


def _run_healthcheck(args: argparse.Namespace, settings: Settings) -> int:
    url = health_url(settings, args.target)
    if probe(url):
        return 0
    print(f"notifier: unhealthy: {url} did not answer 200", file=sys.stderr)
    return 1


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="notifier",
        description="Change notifier for a balance ledger. Settings come from NOTIFIER_* "
        "environment variables (see the README).",
    )
    parser.add_argument("--version", action="version", version=f"notifier {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    cmd = commands.add_parser("migrate", help="apply pending schema migrations")
    cmd.set_defaults(handler=_run_migrate)

    cmd = commands.add_parser("watch", help="capture changes of a table as events")
    cmd.add_argument("table", nargs="?", help="table to watch, e.g. public.orders")
    cmd.add_argument("--topic", help="event topic: events are typed TOPIC.created|updated|deleted")
    cmd.add_argument("--list", action="store_true", help="list the watched tables")
    cmd.set_defaults(handler=_run_watch)

    cmd = commands.add_parser("unwatch", help="stop capturing changes of a table")
    cmd.add_argument("table")
    cmd.set_defaults(handler=_run_unwatch)

    cmd = commands.add_parser(
        "dev", help="run everything locally: database, API, daemon and a demo receiver"
    )
    cmd.add_argument(
        "--data-dir",
        default=".notifier-dev",
        help="where the embedded PostgreSQL keeps its data between runs (default: %(default)s)",
    )
    cmd.add_argument("--api-port", type=int, help="default: NOTIFIER_API_PORT (8080)")
    cmd.add_argument("--daemon-port", type=int, help="default: NOTIFIER_DAEMON_PORT (8081)")
    cmd.add_argument("--receiver-port", type=int, default=8082, help="default: %(default)s")
    cmd.set_defaults(handler=_run_dev)

    cmd = commands.add_parser(
        "healthcheck", help="exit 0 if the local API or daemon answers /healthz (for containers)"
    )
    cmd.add_argument("target", nargs="?", choices=["daemon", "api"], default="daemon")
    cmd.set_defaults(handler=_run_healthcheck)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``notifier`` console script."""
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
        configure_logging(settings.log_format, settings.log_level)
        handler: Handler = args.handler
        return handler(args, settings)
    except (SettingsError, DatabaseUnavailable, MigrationError, CliError, DevError) as exc:
        print(f"notifier: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
