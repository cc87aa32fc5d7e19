"""The ``notifier`` command: one console script, one subcommand per job."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import asyncpg
from pydantic import ValidationError

from api.models import SubscriptionCreate, condition_of, error_list
from notifier import __version__
from notifier.cli.operations import (
    CliError,
    Handler,
    add_operator_commands,
    add_subscription_operations,
    database_command,
    no_subscription,
    positive_int,
    print_json,
)
from notifier.db.migrate import MigrationError, migrate
from notifier.db.pool import DatabaseUnavailable, load_queries
from notifier.devtools import SECRET_ENV
from notifier.observability.healthcheck import health_url, probe
from notifier.observability.logging import configure_logging, get_logger
from notifier.observability.redaction import redact_text
from notifier.observability.sentry import error_reporting
from notifier.settings import Settings, SettingsError, load_settings
from notifier.sinks.registry import WEBHOOK, MissingExtra, kind_of, require
from notifier.subscriptions.store import (
    InvalidSubscription,
    SubscriptionStore,
    validate_secret,
    validate_url,
)


def _seconds(text: str) -> float:
    """A non-negative number of seconds, for argparse."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 <= value <= 86400:
        raise argparse.ArgumentTypeError(f"{text!r} is not between 0 and 86400 seconds")
    return value


async def _migrate(_args: argparse.Namespace, conn: asyncpg.Connection, _: Settings) -> None:
    log = get_logger("notifier.migrate")
    applied = await migrate(conn)
    for migration in applied:
        log.info("migration_applied", file=migration.file_name)
    log.info("migrations_up_to_date", applied=len(applied))


async def _watch(args: argparse.Namespace, conn: asyncpg.Connection, _: Settings) -> None:
    queries = load_queries("capture")
    if args.list:
        for row in await conn.fetch(queries["watched"]):
            print(f"{row['table_name']}\t{row['topic']}")
        return
    if args.topic is None:
        raise CliError("watch needs --topic NAME (events are typed NAME.created, ...)")
    try:
        await conn.execute(queries["watch"], args.table, args.topic)
    except asyncpg.UndefinedTableError:
        raise CliError(f"no table named {args.table}") from None
    except asyncpg.InvalidParameterValueError as exc:
        raise CliError(str(exc)) from None
    print(f"watching {args.table}: events {args.topic}.created|updated|deleted")


async def _unwatch(args: argparse.Namespace, conn: asyncpg.Connection, _: Settings) -> None:
    try:
        await conn.execute(load_queries("capture")["unwatch"], args.table)
    except asyncpg.UndefinedTableError:
        raise CliError(f"no table named {args.table}") from None
    print(f"no longer watching {args.table}")


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
    with error_reporting(settings, "api"):
        run_api(settings, insecure_no_auth=args.insecure_no_auth)
    return 0


def _run_dev(args: argparse.Namespace, settings: Settings) -> int:
    from notifier.devtools.dev import DevError, DevOptions, run_dev

    options = DevOptions(
        data_dir=Path(args.data_dir).resolve(),
        api_port=args.api_port if args.api_port is not None else settings.api_port,
        daemon_port=args.daemon_port if args.daemon_port is not None else settings.daemon_port,
        receiver_port=args.receiver_port,
        db_port=args.db_port,
        sink=_sink_option(args.sink),
    )
    try:
        return run_dev(settings, options)
    except DevError as exc:
        raise CliError(str(exc)) from None


def _sink_option(url: str | None) -> str | None:
    """The broker URL of ``dev --sink`` or ``bench --sink``, checked before anything starts."""
    if url is None:
        return None
    url = _secret_url(url, "--sink")
    try:
        validate_url(url)
        kind = kind_of(url)
        if kind is WEBHOOK:
            raise CliError(
                "--sink: takes a broker or AWS URL (amqp://, kafka://, nats://, sqs://, ...)"
            )
        require(kind)
    except InvalidSubscription as exc:
        raise CliError(f"--sink: {exc.message}") from None
    except MissingExtra as exc:
        raise CliError(f"--sink: {exc}") from None
    return url


def _run_healthcheck(args: argparse.Namespace, settings: Settings) -> int:
    url = health_url(settings, args.target)
    if probe(url):
        return 0
    print(f"notifier: unhealthy: {url} did not answer 200", file=sys.stderr)
    return 1


def _run_daemon(_args: argparse.Namespace, settings: Settings) -> int:
    from notifier.engine.daemon import run_daemon

    with (
        error_reporting(settings, "daemon"),
        asyncio.Runner(loop_factory=_loop(settings)) as runner,
    ):
        return runner.run(run_daemon(settings))


def _loop(settings: Settings) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The daemon's event loop factory (None: asyncio's own)."""
    if settings.event_loop == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if settings.event_loop == "uvloop":
            raise CliError("NOTIFIER_EVENT_LOOP=uvloop, but uvloop is not installed") from None
        return None
    return uvloop.new_event_loop


def _run_bench(args: argparse.Namespace, settings: Settings) -> int:
    from notifier.devtools.bench import run_bench

    return asyncio.run(
        run_bench(
            args.admin_url or settings.database_url,
            database=args.database,
            rate=args.rate,
            seconds=args.seconds,
            backlog=args.backlog,
            burst_rows=args.burst,
            writers=args.writers,
            pgbench=args.pgbench,
            write_seconds=args.write_seconds,
            clients=args.clients,
            keep=args.keep,
            sink=_sink_option(args.sink),
            ordered=args.ordered,
            history=args.history,
        )
    )


def _add_bench_command(commands: Any) -> None:
    cmd = commands.add_parser(
        "bench", help="measure latency, burst, drain, costs per event and write overhead here"
    )
    cmd.add_argument(
        "--admin-url", help="server to create the scratch database on (default: database URL)"
    )
    cmd.add_argument("--database", default="notifier_bench", help="scratch database (dropped)")
    cmd.add_argument("--rate", type=float, default=200.0, help="events/s for the latency run")
    cmd.add_argument(
        "--seconds",
        type=float,
        default=21.0,
        help="length of the latency run (the first second is warm-up)",
    )
    cmd.add_argument("--backlog", type=int, default=50_000, help="events for the drain run")
    cmd.add_argument("--burst", type=int, default=10_000, help="rows for the burst run")
    cmd.add_argument("--writers", type=int, default=8, help="writers for the burst run")
    cmd.add_argument("--pgbench", help="path to pgbench (default: found automatically)")
    cmd.add_argument("--write-seconds", type=int, default=10, help="length of each pgbench run")
    cmd.add_argument("--clients", type=int, default=8, help="pgbench clients")
    cmd.add_argument("--keep", action="store_true", help="keep the scratch database")
    cmd.add_argument(
        "--history",
        type=int,
        default=0,
        help="delivered events to keep in the outbox before measuring (e.g. 10000000): "
        "does the cost grow with history?",
    )
    cmd.add_argument(
        "--sink",
        metavar="URL",
        help="measure a broker destination (amqp://, kafka://, nats://), read back by its "
        f"consumer, instead of a webhook receiver; {URL_SOURCES_HELP}",
    )
    cmd.add_argument(
        "--ordered",
        action="store_true",
        help="measure a subscription ordered by account, over 64 accounts",
    )
    cmd.set_defaults(handler=_run_bench)


def _run_receiver(args: argparse.Namespace, _settings: Settings) -> int:
    from notifier.devtools.receiver import run_receiver

    secret = args.secret or os.environ.get(SECRET_ENV)
    if not secret:
        raise CliError(f"no signing secret: set {SECRET_ENV} (or pass --secret)")
    try:
        secret = validate_secret(secret)
    except InvalidSubscription as exc:
        raise CliError(str(exc)) from None
    run_receiver(args.host, args.port, secret)
    return 0


def _run_consume(args: argparse.Namespace, _settings: Settings) -> int:
    from notifier.devtools.consume import ConsumeError, print_messages

    url = _secret_url(args.url, "url")
    try:
        asyncio.run(print_messages(url, count=args.count, seconds=args.seconds))
    except ConsumeError as exc:
        raise CliError(str(exc)) from None
    return 0


# The options of `subscriptions add` that the fields of SubscriptionCreate come from.
_ADD_OPTIONS = {
    "event_types": "--event-type",
    "filter": "--filter",
    "description": "--description",
    "secret": "--secret",
    "max_in_flight": "--max-in-flight",
    "headers": "--headers-file",
    "format": "--format",
    "ordering": "--ordered",
    "ordering_key": "--ordering-key",
}


def _read_text(source: str, what: str) -> str:
    """``source``'s text: standard input for ``-``, else the file it names."""
    try:
        return sys.stdin.read() if source == "-" else Path(source).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"{what}: cannot read {source}: {exc.__class__.__name__}") from None


# How a URL with credentials is given without showing it in the process list.
URL_SOURCES_HELP = "'-' reads it from standard input, 'env:NAME' from the variable NAME"


def _secret_url(value: str, what: str) -> str:
    """A URL argument, or the URL it points to: ``-`` (standard input) or ``env:NAME``,
    which keep credentials in it off the command line, where ps shows them."""
    if value == "-":
        return _read_text("-", what).strip()
    if value.startswith("env:"):
        name = value.removeprefix("env:")
        if not os.environ.get(name):
            raise CliError(f"{what}: the environment variable {name} is not set")
        return os.environ[name].strip()
    return value


def _headers(source: str | None) -> dict[str, Any]:
    if source is None:
        return {}
    try:
        headers = json.loads(_read_text(source, "--headers-file"))
    except ValueError:
        raise CliError(
            "--headers-file: must hold a JSON object of header names and values"
        ) from None
    if not isinstance(headers, dict):
        raise CliError("--headers-file: must hold a JSON object of header names and values")
    return headers


def _refusal(exc: ValidationError) -> CliError:
    """pydantic's errors as one line, each led by the option (or argument) it is about."""
    shown = []
    for error in error_list(exc):
        field = error["field"].split(".")[0]
        message = error["message"].removeprefix(f"{field}: ")
        shown.append(f"{_ADD_OPTIONS.get(field, field)}: {message}")
    return CliError("; ".join(dict.fromkeys(shown)))


def _add_request(args: argparse.Namespace) -> SubscriptionCreate:
    """What `subscriptions add` asks for, checked as the API checks POST /subscriptions."""
    if args.url == "-" and args.headers_file == "-":
        raise CliError("url and --headers-file cannot both be read from standard input")
    args.url = _secret_url(args.url, "url")
    fields: dict[str, Any] = {
        "url": args.url,
        "description": args.description,
        "secret": args.secret,
        "max_in_flight": args.max_in_flight,
        "filter": args.filters or [],
        "headers": _headers(args.headers_file),
        "format": args.format,
        "ordering": "key" if args.ordered or args.ordering_key else "none",
        "ordering_key": args.ordering_key,
    }
    if args.event_types:
        fields["event_types"] = args.event_types
    try:
        return SubscriptionCreate.model_validate(fields)
    except ValidationError as exc:
        raise _refusal(exc) from None


def _store(conn: asyncpg.Connection, settings: Settings) -> SubscriptionStore:
    return SubscriptionStore(conn, allow_private_targets=settings.allow_private_targets)


async def _add(args: argparse.Namespace, conn: asyncpg.Connection, settings: Settings) -> None:
    request = _add_request(args)
    store = _store(conn, settings)
    if args.if_absent and (existing := await store.find_by_url(request.url)):
        print_json(existing.as_dict())
        return
    sub = await store.create(
        request.url,
        event_types=request.event_types,
        description=request.description,
        secret=request.secret,
        max_in_flight=request.max_in_flight,
        filter=[condition_of(item) for item in request.filter],
        headers=request.headers,
        format=request.format,
        ordering=request.ordering,
        ordering_key=request.ordering_key,
    )
    # The secret is shown once, here, so the receiver can be configured with it.
    print_json({**sub.as_dict(), "secret": sub.secret})


async def _list(_args: argparse.Namespace, conn: asyncpg.Connection, settings: Settings) -> None:
    store, after = _store(conn, settings), 0
    while page := await store.page(after=after, limit=500):
        for sub in page:
            print_json(sub.as_dict())
        after = page[-1].id


async def _remove(args: argparse.Namespace, conn: asyncpg.Connection, settings: Settings) -> None:
    if not await _store(conn, settings).delete(args.id):
        raise no_subscription(args.id)
    print(f"removed subscription {args.id}")


async def _set_enabled(
    args: argparse.Namespace, conn: asyncpg.Connection, settings: Settings
) -> None:
    changed = await _store(conn, settings).update(
        args.id,
        enabled=args.action == "enable",
        disabled_reason=args.reason if args.action == "disable" else None,
    )
    if changed is None:
        raise no_subscription(args.id)
    print_json(changed.as_dict())


def _add_subscription_commands(commands: Any) -> None:
    cmd = commands.add_parser("subscriptions", help="manage delivery targets")
    actions = cmd.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="add a subscription; prints it with its secret")
    add.add_argument(
        "url",
        help="http(s)://, amqp(s)://, kafka:// or nats:// (see the README); "
        f"{URL_SOURCES_HELP}, which keeps credentials in it out of the process list",
    )
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
        "--headers-file",
        metavar="FILE",
        help="webhooks: a JSON object of HTTP headers to send with every delivery ('-' for "
        "standard input); the values are secrets, never shown again",
    )
    add.add_argument(
        "--ordered",
        action="store_true",
        help="send each key's events one at a time, in order (by account for transactions)",
    )
    add.add_argument(
        "--ordering-key",
        metavar="FIELD",
        help="the field of the row that is the key (implies --ordered; default account_id "
        "for transaction events)",
    )
    add.add_argument(
        "--format",
        choices=["standard-webhooks", "cloudevents"],
        default="standard-webhooks",
        help="webhooks: the body is the event (default) or a CloudEvent in structured mode",
    )
    add.add_argument(
        "--if-absent",
        action="store_true",
        help="do nothing if a subscription to this URL exists (for start-up scripts)",
    )
    add.set_defaults(handler=database_command(_add))
    listing = actions.add_parser("list", help="list subscriptions as JSON lines (no secrets)")
    listing.set_defaults(handler=database_command(_list))
    for name, text in (("enable", "resume deliveries"), ("disable", "pause deliveries")):
        sub = actions.add_parser(name, help=text)
        sub.add_argument("id", type=positive_int)
        if name == "disable":
            sub.add_argument("--reason", default="disabled by an operator")
        sub.set_defaults(handler=database_command(_set_enabled))
    remove = actions.add_parser("remove", help="delete a subscription and its deliveries")
    remove.add_argument("id", type=positive_int)
    remove.set_defaults(handler=database_command(_remove))
    add_subscription_operations(actions)


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
    cmd.add_argument(
        "--wait",
        type=_seconds,
        default=0.0,
        metavar="SECONDS",
        help="wait up to this long for the database to answer (container start-up order)",
    )
    cmd.set_defaults(handler=database_command(_migrate, waits=True))

    cmd = commands.add_parser("watch", help="capture changes of a table as events")
    what = cmd.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "table", nargs="?", metavar="TABLE", help="table to watch, e.g. public.orders"
    )
    what.add_argument("--list", action="store_true", help="list the watched tables")
    cmd.add_argument("--topic", help="event topic: events are typed TOPIC.created|updated|deleted")
    cmd.set_defaults(handler=database_command(_watch))

    cmd = commands.add_parser("api", help="serve the HTTP API (accounts, subscriptions)")
    cmd.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="run without NOTIFIER_API_TOKEN: no authentication (local development only)",
    )
    cmd.set_defaults(handler=_run_api)

    cmd = commands.add_parser("unwatch", help="stop capturing changes of a table")
    cmd.add_argument("table")
    cmd.set_defaults(handler=database_command(_unwatch))

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
    cmd.add_argument(
        "--db-port",
        type=int,
        default=0,
        help="the embedded PostgreSQL's port on 127.0.0.1 (default: any free port)",
    )
    cmd.add_argument(
        "--sink",
        metavar="URL",
        help="subscribe this broker (amqp://, kafka://, nats://) instead of the demo "
        f"receiver, and print what arrives there; {URL_SOURCES_HELP}",
    )
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

    cmd = commands.add_parser(
        "consume", help="print what arrives on a broker destination, one JSON line a message"
    )
    cmd.add_argument(
        "url", help="a subscription's amqp(s)://, kafka:// or nats:// URL; '-' reads stdin"
    )
    cmd.add_argument("--count", type=positive_int, help="stop after this many messages")
    cmd.add_argument("--seconds", type=float, help="stop after this long")
    cmd.set_defaults(handler=_run_consume)

    cmd = commands.add_parser("receiver", help="demo endpoint: verify signatures, print events")
    cmd.add_argument("--host", default="127.0.0.1")
    cmd.add_argument("--port", type=int, default=9000)
    cmd.add_argument(
        "--secret",
        help=f"the subscription's whsec_ secret (default: ${SECRET_ENV}); "
        "a command line is visible to every user of the machine in ps, the environment is not",
    )
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
    ) as exc:
        print(f"notifier: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        # A bug: shown with its traceback, as Python would, but without the credentials
        # of the database URL, which a driver's message can quote.
        shown = "".join(traceback.format_exception(exc))
        url = os.environ.get("NOTIFIER_DATABASE_URL", "")
        print(redact_text(shown, url), end="", file=sys.stderr)
        return 1
