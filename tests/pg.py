"""Where the test suite's PostgreSQL comes from, chosen in this order:

1. ``NOTIFIER_TEST_DATABASE_URL``: an existing server (any database on it; the suite
   creates and drops its own databases there);
2. a throwaway container through testcontainers, when a Docker engine answers;
3. an embedded PostgreSQL (``notifier.devtools.embedded_pg``: the installed server's
   programs, or the ``pgserver`` wheel's), so a machine with Python and nothing else
   runs the suite.
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from notifier.devtools.embedded_pg import EmbeddedPostgres, free_port

DOCKER_IMAGE = "postgres:16-alpine"


def with_database(url: str, database: str) -> str:
    """The same server URL, pointing at another database."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{database}"))


def _docker_answers() -> bool:
    """Whether a Docker engine answers its ping (the client alone is not enough)."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    parts = urlsplit(host)
    try:
        if parts.scheme == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            address: str | tuple[str, int] = parts.path
        elif parts.scheme == "tcp" and parts.hostname:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            address = (parts.hostname, parts.port or 2375)
        else:
            return False
        with sock:
            sock.settimeout(3)
            sock.connect(address)
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            return sock.recv(64).split(b"\r\n", 1)[0].endswith(b" 200 OK")
    except OSError:
        return False


@contextlib.contextmanager
def _container() -> Iterator[str]:
    from testcontainers.postgres import PostgresContainer

    with PostgresContainer(DOCKER_IMAGE, driver=None) as container:
        yield container.get_connection_url()


@contextlib.contextmanager
def embedded_server() -> Iterator[EmbeddedPostgres]:
    """A throwaway PostgreSQL server in a temporary directory, not yet started; stopped
    (immediately: nothing in it is kept) and removed at the end."""
    with tempfile.TemporaryDirectory(prefix="notifier-test-pg-") as parent:
        os.chmod(parent, 0o755)  # noqa: S103 (as root, the server runs as another user)
        # fsync off: a crash of this server loses nothing anyone needs.
        server = EmbeddedPostgres(Path(parent) / "data", free_port(), settings={"fsync": "off"})
        try:
            yield server
        finally:
            server.stop("immediate")


@contextlib.contextmanager
def _embedded() -> Iterator[str]:
    with embedded_server() as server:
        server.start()
        yield server.url()


@contextlib.contextmanager
def postgres_server() -> Iterator[tuple[str, str]]:
    """Yield (how it was found, admin URL) of a server the tests may create databases on."""
    url = os.environ.get("NOTIFIER_TEST_DATABASE_URL")
    if url:
        yield "NOTIFIER_TEST_DATABASE_URL", url
    elif _docker_answers():
        with _container() as url:
            yield "testcontainers", url
    else:
        with _embedded() as url:
            yield "embedded PostgreSQL", url
