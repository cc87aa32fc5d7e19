"""The ``notifier`` command: one console script, one subcommand per job."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence

import asyncpg

from notifier import __version__
from notifier.db import DatabaseUnavailable, connect, load_queries
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


def _run_api(args: argparse.Namespace, settings: Settings) -> int:
    # Imported here so that the other subcommands do not load the web application.
    from api.app import run_api

    token = settings.api_token.get_secret_value() if settings.api_token else ""
    if not token:
        if not args.insecure_no_auth:
            raise CliError(
                "NOTIFIER_API_TOKEN is not set: the API refuses to run without a bearer "
                "token (pass --insecure-no-auth to run without one, for local development)"
            )
        get_logger("api").warning(
            "api_auth_disabled",
            detail="--insecure-no-auth: every route is open to anyone who can connect",
        )
    run_api(settings, insecure_no_auth=args.insecure_no_auth)
    return 0


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

    cmd = commands.add_parser("api", help="serve the HTTP API (accounts, subscriptions)")
    cmd.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="run without NOTIFIER_API_TOKEN: no authentication (local development only)",
    )
    cmd.set_defaults(handler=_run_api)

    cmd = commands.add_parser("unwatch", help="stop capturing changes of a table")
    cmd.add_argument("table")
    cmd.set_defaults(handler=_run_unwatch)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``notifier`` console script."""
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
        configure_logging(settings.log_format, settings.log_level)
        handler: Handler = args.handler
        return handler(args, settings)
    except (SettingsError, DatabaseUnavailable, MigrationError, CliError) as exc:
        print(f"notifier: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
