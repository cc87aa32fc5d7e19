"""The operator's subcommands: events, deliveries, subscription stats/recover/replay, retention."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg

from notifier.db import connect
from notifier.operations import DELIVERY_STATUSES, OperationError, Operations
from notifier.settings import Settings, duration_seconds


class OperatorError(Exception):
    """A user-facing failure of an operator command (printed as one line, exit 1)."""


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


def _print(value: Any) -> None:
    print(json.dumps(value))


async def _events(args: argparse.Namespace, ops: Operations, _conn: asyncpg.Connection) -> None:
    try:
        uid = UUID(args.id)
    except ValueError:
        raise OperatorError(f"{args.id!r} is not an event id (a UUID)") from None
    event = await ops.event(uid)
    if event is None:
        raise OperatorError(f"no event {uid}")
    _print(event)


async def _deliveries(args: argparse.Namespace, ops: Operations, _conn: asyncpg.Connection) -> None:
    if args.action == "retry":
        _print(await ops.retry(args.id))
        return
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
            _print(delivery)
        if not page:
            return
        after, left = page[-1]["id"], left - len(page)


async def _subscriptions(
    args: argparse.Namespace, ops: Operations, _conn: asyncpg.Connection
) -> None:
    if args.action == "stats":
        stats = await ops.stats(args.id)
        if stats is None:
            raise OperatorError(f"no subscription {args.id}")
        _print(stats)
    elif args.action == "recover":
        _print((await ops.recover(args.id, args.since)).as_dict())
    else:
        result = await ops.replay(args.id, args.since, args.until, again=args.again)
        _print(result.as_dict())


def _handler(
    job: Callable[[argparse.Namespace, Operations, asyncpg.Connection], Awaitable[None]],
) -> Callable[[argparse.Namespace, Settings], int]:
    def handle(args: argparse.Namespace, settings: Settings) -> int:
        async def run() -> int:
            conn = await connect(settings.database_url)
            try:
                await job(args, Operations(conn), conn)
            except OperationError as exc:
                raise OperatorError(str(exc)) from None
            finally:
                await conn.close()
            return 0

        return asyncio.run(run())

    return handle


def _run_retention(args: argparse.Namespace, settings: Settings) -> int:
    from notifier.retention import run_retention
    from notifier.upkeep import retention_policy

    async def run() -> int:
        conn = await connect(settings.database_url)
        try:
            result = await run_retention(conn, retention_policy(settings))
        finally:
            await conn.close()
        if not result.ran:
            raise OperatorError("another retention run is under way; try again later")
        _print(result.as_dict())
        return 0

    return asyncio.run(run())


def add_subscription_operations(actions: Any) -> None:
    """``notifier subscriptions stats|recover|replay``."""
    handler = _handler(_subscriptions)
    stats = actions.add_parser("stats", help="delivery counts, last success and failure")
    stats.add_argument("id", type=int)
    stats.set_defaults(handler=handler)
    recover = actions.add_parser(
        "recover", help="send again what failed or died since a moment, and what was missed"
    )
    recover.add_argument("id", type=int)
    recover.add_argument("--since", type=moment, required=True, help="ISO 8601, or 2h, 3d ago")
    recover.set_defaults(handler=handler)
    replay = actions.add_parser("replay", help="send the events of a time range")
    replay.add_argument("id", type=int)
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
    cmd.set_defaults(handler=_handler(_events))

    cmd = commands.add_parser("deliveries", help="list or retry deliveries")
    actions = cmd.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="deliveries as JSON lines, in id order")
    listing.add_argument("--status", choices=DELIVERY_STATUSES)
    listing.add_argument("--subscription", dest="subscription_id", type=int)
    listing.add_argument("--since", type=moment, help="created since: ISO 8601, or 2h, 3d ago")
    listing.add_argument("--limit", type=int, default=1000, help="default: %(default)s")
    retry = actions.add_parser("retry", help="send one delivery again now")
    retry.add_argument("id", type=int)
    cmd.set_defaults(handler=_handler(_deliveries))

    cmd = commands.add_parser("retention", help="delete old, finished events now")
    actions = cmd.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("run", help="one retention run, in batches (see NOTIFIER_RETENTION)")
    cmd.set_defaults(handler=_run_retention)
