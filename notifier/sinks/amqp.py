"""The RabbitMQ sink (``amqp://``, ``amqps://``): persistent, mandatory messages, and the
publisher confirm as the answer.

One connection per broker and vhost (``AmqpTarget.connection_url``), named
``notifier pid <pid>`` so an operator can tell this process's connections apart. Over
it, one channel per exchange, in confirm mode, opened with a passive check that the
exchange exists. Why a channel each: a broker error closes the channel it happens on
(a missing exchange is a 404 that closes it), failing every confirm still awaited there;
with a channel per exchange, a subscription whose exchange is missing fails only its
own publishes. Why the check first: publishes queued behind such a 404 reach the broker
after the channel's close handshake, and the broker answers that by closing the whole
connection (504), which would fail every subscription on this broker. The check is one
request on a fresh channel, so nothing else is queued behind it.
"""

from __future__ import annotations

import asyncio
import os

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange
from aiormq.exceptions import (
    AMQPError,
    ChannelAccessRefused,
    ChannelClosed,
    ChannelInvalidStateError,
    ChannelNotFoundEntity,
    DeliveryError,
    PublishError,
)

from notifier.envelope import Envelope
from notifier.observability.redaction import redact_urls_in
from notifier.sinks.base import Attempt, Destination, Outcome, Result
from notifier.sinks.clients import Clients, Unreachable
from notifier.sinks.message import CONTENT_TYPE, cloudevents_attributes, render
from notifier.sinks.registry import SinkOptions
from notifier.sinks.targets import masked, parse_amqp

APP_ID = "notifier"
# The CloudEvents AMQP binding's prefix for attributes carried as application properties.
HEADER_PREFIX = "cloudEvents_"


def connection_name() -> str:
    """The name this process gives its broker connections (``client_properties``)."""
    return f"notifier pid {os.getpid()}"


def make(options: SinkOptions) -> AmqpSink:
    return AmqpSink(options)


class _Route:
    """One channel, in confirm mode, to one exchange that was found to exist."""

    def __init__(self, channel: AbstractChannel, exchange: AbstractExchange) -> None:
        self.channel = channel
        self._exchange = exchange
        # Publishes in flight here, by message id. aiormq matches a returned message to
        # its publish by message id, so two publishes of one event (two subscriptions
        # to one exchange) must not be in flight on one channel at once.
        self._in_flight: dict[str, asyncio.Event] = {}

    async def publish(self, message: aio_pika.Message, routing_key: str) -> None:
        """Publish and wait for the confirm; a return or nack raises ``DeliveryError``."""
        key = message.message_id or ""
        while (busy := self._in_flight.get(key)) is not None:
            await busy.wait()
        done = self._in_flight[key] = asyncio.Event()
        try:
            await self._exchange.publish(message, routing_key, mandatory=True)
        finally:
            del self._in_flight[key]
            done.set()


class _Broker:
    """A connection, and its channels by exchange, each opened on first use."""

    def __init__(self, connection: AbstractConnection) -> None:
        self.connection = connection
        self._routes: dict[str, _Route] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def route(self, exchange: str) -> _Route:
        """The channel to ``exchange``; ``ChannelNotFoundEntity`` if it does not exist."""
        route = self._routes.get(exchange)
        if route is not None and not route.channel.is_closed:
            return route
        async with self._locks.setdefault(exchange, asyncio.Lock()):
            route = self._routes.get(exchange)
            if route is not None and not route.channel.is_closed:
                return route
            channel = await self.connection.channel(publisher_confirms=True, on_return_raises=True)
            try:
                # Passive: the sink never declares an exchange, it uses one that exists.
                found = (
                    channel.default_exchange
                    if exchange == ""
                    else await channel.get_exchange(exchange, ensure=True)
                )
            except BaseException:
                if not channel.is_closed:
                    await channel.close()
                raise
            route = self._routes[exchange] = _Route(channel, found)
            return route

    @property
    def closed(self) -> bool:
        """Whether the connection is gone. (aio-pika's own ``is_closed`` turns true only
        once this process closes it, not when the broker does.)"""
        transport = self.connection.transport
        return transport is None or transport.connection.is_closed

    async def close(self) -> None:
        await self.connection.close()


async def _connect(url: str) -> _Broker:
    connection = await aio_pika.connect(
        url, client_properties={"connection_name": connection_name()}
    )
    return _Broker(connection)


async def _close(broker: _Broker) -> None:
    await broker.close()


def message(envelope: Envelope, source: str) -> aio_pika.Message:
    """The event as an AMQP message: the webhook body, persistent, the CloudEvents
    attributes as ``cloudEvents_*`` application properties, the event id as message id."""
    attributes = cloudevents_attributes(envelope, source)
    return aio_pika.Message(
        envelope.body,
        content_type=CONTENT_TYPE,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=str(envelope.id),
        timestamp=envelope.created_at,
        type=envelope.type,
        app_id=APP_ID,
        headers={HEADER_PREFIX + name: value for name, value in attributes.items()},
    )


def _reply_text(exc: BaseException) -> str:
    text = exc.args[0] if exc.args and isinstance(exc.args[0], str) else ""
    return redact_urls_in(text)[:200]


class AmqpSink:
    """Publishes to ``amqp(s)://`` targets, one connection per broker and vhost."""

    def __init__(self, options: SinkOptions) -> None:
        self._timeout = options.timeout_seconds
        self._source = options.source
        self._clients: Clients[str, _Broker] = Clients(
            _connect, _close, attempt_timeout=options.timeout_seconds, describe=masked
        )

    async def close(self) -> None:
        await self._clients.close()

    async def deliver(self, destination: Destination, envelope: Envelope) -> Outcome:
        """Publish the event once and await its confirm; never raises for a failed
        attempt, it classifies it."""
        attempt = Attempt()
        target = parse_amqp(destination.target)
        key = target.connection_url
        routing_key = render(target.routing_key, envelope.type)
        broker: _Broker | None = None
        try:
            async with asyncio.timeout(self._timeout):
                broker = await self._clients.get(key)
                if broker.closed:  # by the broker, since the last attempt
                    await self._clients.discard(key, broker)
                    broker = await self._clients.get(key)
                route = await broker.route(target.exchange)
                await route.publish(message(envelope, self._source), routing_key)
        except Unreachable as exc:
            return attempt.failed(Result.CONNECTION_ERROR, str(exc))
        except TimeoutError:
            return attempt.failed(Result.TIMEOUT)
        except PublishError as exc:
            return attempt.failed(Result.REJECTED, _reply_text(exc), "amqp_unroutable")
        except DeliveryError:
            return attempt.failed(Result.REJECTED, "the broker nacked the message", "amqp_nack")
        # aiormq raises a bare RuntimeError for a channel asked of a closed connection.
        except (AMQPError, ChannelInvalidStateError, ConnectionError, OSError, RuntimeError) as exc:
            return await self._broken(attempt, key, broker, target.exchange, exc)
        where = f"exchange {target.exchange!r}" if target.exchange else "the default exchange"
        return attempt.succeeded("amqp_ack", f"{where}, routing key {routing_key!r}")

    async def _broken(
        self, attempt: Attempt, key: str, broker: _Broker | None, exchange: str, exc: Exception
    ) -> Outcome:
        """The outcome of a channel or connection error; a broken connection is let go."""
        if broker is not None and broker.closed:
            await self._clients.discard(key, broker)
            return attempt.failed(Result.CONNECTION_ERROR, type(exc).__name__)
        if isinstance(exc, ChannelNotFoundEntity):
            detail = _reply_text(exc) or f"no exchange {exchange!r}"
            return attempt.failed(Result.REJECTED, detail, "amqp_not_found")
        if isinstance(exc, ChannelAccessRefused):
            return attempt.failed(Result.REJECTED, _reply_text(exc), "amqp_access_refused")
        if isinstance(exc, ChannelClosed | ChannelInvalidStateError):
            # The channel is gone (its route is reopened on the next attempt).
            return attempt.failed(Result.CONNECTION_ERROR, "the channel was closed")
        return attempt.failed(Result.CONNECTION_ERROR, type(exc).__name__)
