"""The ``notifier`` command: one console script, one subcommand per job."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import asyncpg

from notifier import __version__
from notifier.cli_ops import OperatorError, add_operator_commands, add_subscription_operations
from notifier.db import DatabaseUnavailable, connect, load_queries
from notifier.dev import DevError, DevOptions, run_dev
from notifier.filters import InvalidFilter
from notifier.filters import parse as parse_filter
from notifier.healthcheck import health_url, probe
from notifier.logging import configure_logging, get_logger
from notifier.migrate import MigrationError, migrate
from notifier.settings import Settings, SettingsError, load_settings
from notifier.subscriptions import InvalidSubscription, SubscriptionStore, validate_secret

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


def _run_daemon(_args: argparse.Namespace, settings: Settings) -> int:
    from notifier.daemon import run_daemon

    return asyncio.run(run_daemon(settings))


def _run_bench(args: argparse.Namespace, settings: Settings) -> int:
    from notifier.bench import run_bench

    return asyncio.run(
        run_bench(
            args.admin_url or settings.database_url,
            database=args.database,
            rate=args.rate,
            seconds=args.seconds,
            backlog=args.backlog,
            pgbench=args.pgbench,
            write_seconds=args.write_seconds,
            clients=args.clients,
            keep=args.keep,
        )
    )


def _add_bench_command(commands: Any) -> None:
    cmd = commands.add_parser(
        "bench", help="measure latency, drain rate and write overhead on this machine"
    )
    cmd.add_argument(
        "--admin-url", help="server to create the scratch database on (default: database URL)"
    )
    cmd.add_argument("--database", default="notifier_bench", help="scratch database (dropped)")
    cmd.add_argument("--rate", type=float, default=200.0, help="events/s for the latency run")
    cmd.add_argument("--seconds", type=float, default=20.0, help="length of the latency run")
    cmd.add_argument("--backlog", type=int, default=50_000, help="events for the drain run")
    cmd.add_argument("--pgbench", help="path to pgbench (default: found automatically)")
    cmd.add_argument("--write-seconds", type=int, default=10, help="length of each pgbench run")
    cmd.add_argument("--clients", type=int, default=8, help="pgbench clients")
    cmd.add_argument("--keep", action="store_true", help="keep the scratch database")
    cmd.set_defaults(handler=_run_bench)


def _run_receiver(args: argparse.Namespace, _settings: Settings) -> int:
    from notifier.receiver import run_receiver

    try:
        secret = validate_secret(args.secret)
    except InvalidSubscription as exc:
        raise CliError(str(exc)) from None
    run_receiver(args.host, args.port, secret)
    return 0


async def _subscriptions(args: argparse.Namespace, store: SubscriptionStore) -> int:
    action = args.action
    if action == "add":
        if args.if_absent and (existing := await store.find_by_url(args.url)):
            print(json.dumps(existing.as_dict()))
            return 0
        sub = await store.create(
            args.url,
            event_types=args.event_types or None,
            description=args.description,
            secret=args.secret,
            max_in_flight=args.max_in_flight,
            filter=[parse_filter(text) for text in args.filters or []],
        )
        # The secret is shown once, here, so the receiver can be configured with it.
        print(json.dumps({**sub.as_dict(), "secret": sub.secret}))
        return 0
    if action == "list":
        after = 0
        while page := await store.page(after=after, limit=500):
            for sub in page:
                print(json.dumps(sub.as_dict()))
            after = page[-1].id
        return 0
    if action == "remove":
        if not await store.delete(args.id):
            raise CliError(f"no subscription {args.id}")
        print(f"removed subscription {args.id}")
        return 0
    changed = await store.update(
        args.id,
        enabled=action == "enable",
        disabled_reason=args.reason if action == "disable" else None,
    )
    if changed is None:
        raise CliError(f"no subscription {args.id}")
    print(json.dumps(changed.as_dict()))
    return 0


def _run_subscriptions(args: argparse.Namespace, settings: Settings) -> int:
    async def run() -> int:
        conn = await connect(settings.database_url)
        try:
            store = SubscriptionStore(conn, allow_private_targets=settings.allow_private_targets)
            return await _subscriptions(args, store)
        except (InvalidSubscription, InvalidFilter) as exc:
            raise CliError(str(exc)) from None
        finally:
            await conn.close()

    return asyncio.run(run())


def _add_subscription_commands(commands: Any) -> None:
    cmd = commands.add_parser("subscriptions", help="manage delivery targets")
    actions = cmd.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="add a subscription; prints it with its secret")
    add.add_argument("url")
    add.add_argument(
        "--event-type",
        dest="event_types",
        action="append",
        help="'*', 'topic.*' or 'topic.created|updated|deleted' (repeatable; default '*')",
    )
    add.add_argument(
        "--filter",
        dest="filters",
        action="append",
        help="a condition on the row, e.g. 'amount >= 100000', 'kind = debit', "
        "'account_id in [1, 2]' (repeatable; all must hold)",
    )
    add.add_argument("--description", default="")
    add.add_argument("--secret", help="whsec_<base64> signing secret (default: generated)")
    add.add_argument("--max-in-flight", type=int, help="concurrent requests to this endpoint")
    add.add_argument(
        "--if-absent",
        action="store_true",
        help="do nothing if a subscription to this URL exists (for start-up scripts)",
    )
    actions.add_parser("list", help="list subscriptions as JSON lines (no secrets)")
    for name, text in (("enable", "resume deliveries"), ("disable", "pause deliveries")):
        sub = actions.add_parser(name, help=text)
        sub.add_argument("id", type=int)
        if name == "disable":
            sub.add_argument("--reason", default="disabled by an operator")
    remove = actions.add_parser("remove", help="delete a subscription and its deliveries")
    remove.add_argument("id", type=int)
    add_subscription_operations(actions)
    cmd.set_defaults(handler=_run_subscriptions)


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

    cmd = commands.add_parser("run", help="run the delivery daemon")
    cmd.set_defaults(handler=_run_daemon)

    _add_subscription_commands(commands)
    add_operator_commands(commands)
    _add_bench_command(commands)

    cmd = commands.add_parser("receiver", help="demo endpoint: verify signatures, print events")
    cmd.add_argument("--host", default="127.0.0.1")
    cmd.add_argument("--port", type=int, default=9000)
    cmd.add_argument("--secret", required=True, help="the subscription's whsec_ secret")
    cmd.set_defaults(handler=_run_receiver)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``notifier`` console script."""
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
        configure_logging(settings.log_format, settings.log_level)
        handler: Handler = args.handler
        return handler(args, settings)
    except (
        SettingsError,
        DatabaseUnavailable,
        MigrationError,
        CliError,
        DevError,
        OperatorError,
    ) as exc:
        print(f"notifier: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
