"""What every command shares (CliError, database_command, argument types), and the
operator's subcommands: events, deliveries, subscription stats/recover/replay, retention."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg

from api.models import MAX_BIGINT
from notifier.db.pool import connect, connect_waiting
from notifier.ops.operator import OperationError, Operations
from notifier.settings import Settings, duration_seconds
from notifier.statuses import DELIVERY_STATUSES
from notifier.subscriptions.filters import InvalidFilter
from notifier.subscriptions.store import InvalidSubscription

Handler = Callable[[argparse.Namespace, Settings], int]
Job = Callable[[argparse.Namespace, asyncpg.Connection, Settings], Awaitable[None]]

# What the domain refuses to do, with a message that says why: shown as one line.
_REFUSALS = (OperationError, InvalidSubscription, InvalidFilter)


class CliError(Exception):
    """A user-facing failure of any command: printed as one line, exit status 1."""


def no_subscription(subscription_id: int) -> CliError:
    """The one way every command says that a subscription does not exist."""
    return CliError(f"subscription {subscription_id} does not exist")


def database_command(job: Job, *, waits: bool = False) -> Handler:
    """The handler of a command that works on the database: connect, run ``job``, close.

    A refusal of the domain becomes a CliError. With ``waits``, connecting is tried
    again for up to ``args.wait`` seconds.
    """

    async def run(args: argparse.Namespace, settings: Settings) -> None:
        url = settings.database_url
        conn = await (connect_waiting(url, args.wait) if waits else connect(url))
        try:
            await job(args, conn, settings)
        except _REFUSALS as exc:
            raise CliError(str(exc)) from None
        finally:
            await conn.close()

    def handle(args: argparse.Namespace, settings: Settings) -> int:
        asyncio.run(run(args, settings))
        return 0

    return handle


def positive_int(text: str) -> int:
    """An id or a count, for argparse: a whole number from 1 to the API's bigint bound."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_BIGINT:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number from 1 to {MAX_BIGINT}")
    return value


def moment(text: str) -> datetime:
    """An ISO 8601 moment with a time zone, or a duration ago: ``2h`` is two hours ago."""
    try:
        return datetime.now(UTC) - timedelta(seconds=duration_seconds(text))
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither an ISO 8601 moment (2026-11-21T20:00:00Z) nor a duration "
            "ago (2h, 3d)"
        ) from None
    if parsed.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} needs a time zone, e.g. Z or +02:00")
    return parsed


def print_json(value: Any) -> None:
    """One JSON line on stdout."""
    print(json.dumps(value))


async def _events(args: argparse.Namespace, conn: asyncpg.Connection, _: Settings) -> None:
    try:
        uid = UUID(args.id)
    except ValueError:
        raise CliError(f"{args.id!r} is not an event id (a UUID)") from None
    event = await Operations(conn).event(uid)
    if event is None:
        raise CliError(f"no event {uid}")
    print_json(event)


async def _retry(args: argparse.Namespace, conn: asyncpg.Connection, _: Settings) -> None:
    print_json(await Operations(conn).retry(args.id))


async def _deliveries(args: argparse.Namespace, conn: asyncpg.Connection, _: Settings) -> None:
    ops = Operations(conn)
    after, left = 0, args.limit
    while left > 0:
        page = await ops.deliveries(
            status=args.status,
            subscription_id=args.subscription_id,
            since=args.since,
            after=after,
            limit=min(left, 500),
        )
        for delivery in page:
            print_json(delivery)
        if not page:
            return
        after, left = page[-1]["id"], left - len(page)


async def _subscription_operation(
    args: argparse.Namespace, ops: Operations
) -> dict[str, Any] | None:
    """What ``subscriptions stats|recover|replay`` shows; None if there is no such one."""
    if args.action == "stats":
        return await ops.stats(args.id)
    try:
        if args.action == "recover":
            return (await ops.recover(args.id, args.since)).as_dict()
        return (await ops.replay(args.id, args.since, args.until, again=args.again)).as_dict()
    except OperationError as exc:
        if exc.kind != "not-found":
            raise
        return None


async def _subscriptions(args: argparse.Namespace, conn: asyncpg.Connection, _: Settings) -> None:
    result = await _subscription_operation(args, Operations(conn))
    if result is None:
        raise no_subscription(args.id)
    print_json(result)


async def _retention(
    _args: argparse.Namespace, conn: asyncpg.Connection, settings: Settings
) -> None:
    from notifier.engine.upkeep import retention_policy
    from notifier.ops.retention import run_retention

    result = await run_retention(conn, retention_policy(settings))
    if not result.ran:
        raise CliError("another retention run is under way; try again later")
    print_json(result.as_dict())


def add_subscription_operations(actions: Any) -> None:
    """``notifier subscriptions stats|recover|replay``."""
    handler = database_command(_subscriptions)
    stats = actions.add_parser("stats", help="delivery counts, last success and failure")
    stats.add_argument("id", type=positive_int)
    stats.set_defaults(handler=handler)
    recover = actions.add_parser(
        "recover", help="send again what failed or died since a moment, and what was missed"
    )
    recover.add_argument("id", type=positive_int)
    recover.add_argument("--since", type=moment, required=True, help="ISO 8601, or 2h, 3d ago")
    recover.set_defaults(handler=handler)
    replay = actions.add_parser("replay", help="send the events of a time range")
    replay.add_argument("id", type=positive_int)
    replay.add_argument("--since", type=moment, required=True, help="ISO 8601, or 2h, 3d ago")
    replay.add_argument("--until", type=moment, help="default: now")
    replay.add_argument("--again", action="store_true", help="also events it was sent already")
    replay.set_defaults(handler=handler)


def add_operator_commands(commands: Any) -> None:
    """``notifier events``, ``notifier deliveries``, ``notifier retention``."""
    cmd = commands.add_parser("events", help="inspect an event and its deliveries")
    actions = cmd.add_subparsers(dest="action", required=True, metavar="ACTION")
    show = actions.add_parser("show", help="the event, its deliveries and every attempt (JSON)")
    show.add_argument("id", help="the event id (webhook-id)")
    show.set_defaults(handler=database_command(_events))

    cmd = commands.add_parser("deliveries", help="list or retry deliveries")
    actions = cmd.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="deliveries as JSON lines, in id order")
    listing.add_argument("--status", choices=DELIVERY_STATUSES)
    listing.add_argument("--subscription", dest="subscription_id", type=positive_int)
    listing.add_argument("--since", type=moment, help="created since: ISO 8601, or 2h, 3d ago")
    listing.add_argument(
        "--limit", type=positive_int, default=1000, help="at most this many (default: %(default)s)"
    )
    listing.set_defaults(handler=database_command(_deliveries))
    retry = actions.add_parser("retry", help="send one delivery again now")
    retry.add_argument("id", type=positive_int)
    retry.set_defaults(handler=database_command(_retry))

    cmd = commands.add_parser("retention", help="delete old, finished events now")
    actions = cmd.add_subparsers(dest="action", required=True, metavar="ACTION")
    run = actions.add_parser("run", help="one retention run, in batches (see NOTIFIER_RETENTION)")
    run.set_defaults(handler=database_command(_retention))
