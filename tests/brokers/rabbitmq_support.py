"""The shared RabbitMQ the RabbitMQ tests use: names of their own on it, and the
daemon's connections found and cut with ``rabbitmqctl``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aio_pika
from aio_pika.abc import AbstractChannel

from tests.brokers.support import unavailable

BROKER = os.environ.get("NOTIFIER_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
HOW = (
    "run RabbitMQ on 127.0.0.1:5672 with guest/guest (docker run -p 5672:5672 rabbitmq:3), "
    "or point NOTIFIER_TEST_RABBITMQ_URL at one"
)


@dataclass(frozen=True, slots=True)
class Names:
    """A topic exchange and a queue of this test's own (neither durable), and a channel
    to manage them with."""

    exchange: str
    queue: str
    channel: AbstractChannel

    def url(self, query: str) -> str:
        return f"{BROKER}?{query}"


@contextlib.asynccontextmanager
async def names_of_its_own() -> AsyncIterator[Names]:
    """Unique names on the shared broker; the queue is declared, the exchange is declared
    by the test that wants it; both are deleted at the end."""
    try:
        async with asyncio.timeout(5):
            connection = await aio_pika.connect(BROKER)
    except (TimeoutError, OSError, aio_pika.exceptions.AMQPError) as exc:
        unavailable(f"RabbitMQ ({type(exc).__name__})", HOW)
    name = f"notifier-test-{uuid.uuid4().hex[:12]}"
    async with connection:
        channel = await connection.channel()
        await channel.declare_queue(name, durable=False)
        try:
            yield Names(name, name, channel)
        finally:
            channel = await connection.channel()  # a test may have closed the first
            await channel.queue_delete(name)
            await channel.exchange_delete(name)


async def declare_exchange(names: Names) -> aio_pika.abc.AbstractExchange:
    return await names.channel.declare_exchange(
        names.exchange, aio_pika.ExchangeType.TOPIC, durable=False
    )


async def rabbitmqctl(*args: str) -> str:
    """``rabbitmqctl ARGS``'s output; ``unavailable`` when it is missing or fails."""
    if shutil.which("rabbitmqctl") is None:
        unavailable("rabbitmqctl", "install RabbitMQ's CLI tools on the test machine")
    process = await asyncio.create_subprocess_exec(
        "rabbitmqctl",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    if process.returncode != 0:
        unavailable("rabbitmqctl", f"it failed: {output.decode(errors='replace')[:300]}")
    return output.decode(errors="replace")


async def connections_of(pid: int) -> list[str]:
    """The broker's ids of the connections process ``pid`` named ``notifier pid PID``."""
    listing = await rabbitmqctl(
        "list_connections", "pid", "client_properties", "-q", "--no-table-headers"
    )
    named = f'{{"connection_name","notifier pid {pid}"}}'
    return [line.split("\t", 1)[0] for line in listing.splitlines() if named in line]


async def cut_connections_of(pid: int) -> int:
    """Close every connection of process ``pid``; how many there were."""
    found = await connections_of(pid)
    for connection in found:
        # It may be gone already (the daemon closed it): that is not a failure here.
        process = await asyncio.create_subprocess_exec(
            "rabbitmqctl",
            "close_connection",
            connection,
            "notifier test: broker outage",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        await process.wait()
    return len(found)


class Relay:
    """A TCP relay to the broker, on a port of its own: the broker as a daemon sees it.
    ``refuse`` stops it accepting connections (they are refused, as by a broker that is
    down) and ``accept`` starts it again; the connections it carries are left alone."""

    def __init__(self, host: str = "127.0.0.1", port: int = 5672) -> None:
        self._upstream = (host, port)
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.Task[None]] = set()
        self.port = 0

    def url(self, query: str) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/?{query}"

    async def accept(self) -> None:
        self._server = await asyncio.start_server(self._link, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    def refuse(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    async def close(self) -> None:
        self.refuse()
        for link in list(self._links):
            link.cancel()
        await asyncio.gather(*self._links, return_exceptions=True)

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._links.add(task)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._upstream)
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except OSError:
            writer.close()
        finally:
            self._links.discard(task)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()
