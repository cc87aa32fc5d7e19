"""The NATS JetStream sink: one publish per attempt, done when the stream's PubAck comes.

``nats://[user:pass@ or token@]host:port[,host:port]/SUBJECT``. The event id is the
``Nats-Msg-Id``: a stream drops a re-publish of the same event within its duplicate
window (and answers with a PubAck marked duplicate, which is a success here). The
CloudEvents attributes travel as ``ce-`` headers, per the CloudEvents NATS binding.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext

from notifier.envelope import Envelope
from notifier.sinks.base import Attempt, Destination, Outcome, Result
from notifier.sinks.clients import Clients, Unreachable
from notifier.sinks.message import CONTENT_TYPE, cloudevents_attributes, render
from notifier.sinks.registry import SinkOptions
from notifier.sinks.targets import NatsTarget, parse_nats

Key = tuple[object, ...]

# A connection that has gone quiet (a server frozen, a network path dropped) is found
# out by the client's PINGs: after this many seconds times two unanswered, it closes.
PING_INTERVAL_SECONDS = 10


@dataclass(frozen=True, slots=True)
class _Connection:
    client: Client
    js: JetStreamContext


def make(options: SinkOptions) -> NatsSink:
    return NatsSink(options)


def _servers(target: NatsTarget) -> list[str]:
    return [f"nats://{server}" for server in target.servers]


def _describe(key: Key) -> str:
    servers = key[0]
    assert isinstance(servers, tuple)
    return "nats://" + ",".join(str(server) for server in servers)


async def _connect(target: NatsTarget, seconds: float) -> _Connection:
    # nats-py's own reconnects are off; ``Clients`` reconnects instead. Tried against
    # a real server: with allow_reconnect, a first connect to a server that refuses is
    # retried (forever with max_reconnect_attempts=-1) and hangs until the attempt's
    # timeout, and while reconnecting, publishes are buffered up to pending_size (2 MB)
    # with no one waiting for them. Without it, a lost connection closes the client:
    # the next publish fails at once (ConnectionClosedError), the sink discards the
    # client, and ``Clients`` connects again behind its backoff (at most 2 s): after a
    # 10 s outage the first PubAck came about 1.5 s after the server was back. A
    # connect to a server that refuses fails at once: each server is tried, and
    # retried once at once (max_reconnect_attempts=1, counting from the first try,
    # reconnect_time_wait=0). Publishes in flight when the connection drops get no
    # PubAck: they end at the attempt's timeout, as a connection error.
    # nats-py passes each failed try to error_cb, then raises NoServersError, which
    # does not say why: the last try's error is raised instead. The errors of a live
    # connection reach the attempts, which classify them; error_cb keeps nats-py from
    # logging each a second time, with a traceback.
    errors: list[Exception] = []

    async def remember(error: Exception) -> None:
        errors[:] = [error]

    client = Client()
    try:
        await client.connect(
            _servers(target),
            user=target.user,
            password=target.password,
            token=target.token,
            name="notifier",
            allow_reconnect=False,
            max_reconnect_attempts=1,
            reconnect_time_wait=0,
            connect_timeout=max(1, round(seconds)),
            ping_interval=PING_INTERVAL_SECONDS,
            error_cb=remember,
        )
    except BaseException as exc:
        # A connect refused after the TCP handshake (bad credentials) leaves its socket
        # open: it is closed here.
        with contextlib.suppress(Exception):
            await client.close()
        if isinstance(exc, nats.errors.NoServersError) and errors:
            raise errors[0] from None
        raise
    return _Connection(client, client.jetstream(timeout=seconds))


async def _close(connection: _Connection) -> None:
    await connection.client.close()


class NatsSink:
    """Publishes to ``nats://`` targets: one connection per server list and credentials,
    with as many publishes in flight on it as the engine hands over."""

    def __init__(self, options: SinkOptions) -> None:
        self._timeout = options.timeout_seconds
        self._source = options.source
        self._targets: dict[str, NatsTarget] = {}
        self._by_key: dict[Key, NatsTarget] = {}
        self._clients: Clients[Key, _Connection] = Clients(
            self._connect_key,
            _close,
            attempt_timeout=options.timeout_seconds,
            describe=_describe,
        )

    async def _connect_key(self, key: Key) -> _Connection:
        return await _connect(self._by_key[key], self._timeout)

    def _target(self, url: str) -> NatsTarget:
        target = self._targets.get(url)
        if target is None:
            target = self._targets[url] = parse_nats(url)
            self._by_key.setdefault(target.connection_key, target)
        return target

    async def close(self) -> None:
        await self._clients.close()

    async def deliver(self, destination: Destination, envelope: Envelope) -> Outcome:
        """Publish the event once and wait for its PubAck; classify any failure."""
        attempt = Attempt()
        target = self._target(destination.target)
        key = target.connection_key
        subject = render(target.subject, envelope.type)
        connection: _Connection | None = None
        try:
            async with asyncio.timeout(self._timeout):
                connection = await self._clients.get(key)
                ack = await connection.js.publish(
                    subject, envelope.body, timeout=self._timeout, headers=self._headers(envelope)
                )
        except Unreachable as exc:
            return attempt.failed(Result.CONNECTION_ERROR, str(exc))
        except nats.js.errors.NoStreamResponseError:
            return attempt.failed(
                Result.REJECTED, f"no stream captures subject {subject}", "nats_no_stream"
            )
        except nats.js.errors.APIError as exc:
            detail = f"{exc.err_code}: {exc.description}" if exc.err_code else str(exc)
            return attempt.failed(Result.REJECTED, detail[:200], "nats_api_error")
        except (nats.errors.BadSubjectError, nats.errors.MaxPayloadError) as exc:
            return attempt.failed(Result.REJECTED, f"{exc} ({subject})", "nats_invalid")
        except TimeoutError:
            if connection is not None and connection.client.is_closed:
                await self._clients.discard(key, connection)
                return attempt.failed(Result.CONNECTION_ERROR, "connection lost before the PubAck")
            return attempt.failed(Result.TIMEOUT, f"no PubAck within {self._timeout:g} s")
        except (nats.errors.Error, OSError) as exc:
            if connection is not None and not connection.client.is_connected:
                await self._clients.discard(key, connection)
            return attempt.failed(Result.CONNECTION_ERROR, type(exc).__name__)
        duplicate = " (duplicate: the stream already had it)" if ack.duplicate else ""
        return attempt.succeeded("nats_ack", f"stream {ack.stream} seq {ack.seq}{duplicate}")

    def _headers(self, envelope: Envelope) -> dict[str, str]:
        attributes = cloudevents_attributes(envelope, self._source)
        headers = {f"ce-{name}": value for name, value in attributes.items()}
        headers["content-type"] = CONTENT_TYPE
        headers["Nats-Msg-Id"] = str(envelope.id)
        return headers
