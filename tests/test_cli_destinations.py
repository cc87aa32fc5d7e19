"""Broker destinations from the CLI: URLs with credentials kept off the command line,
webhook headers from a file, and clear one-line refusals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

Conn = psycopg.Connection[Any]
URL = "amqp://notifier:s3cret-pw@127.0.0.1:5672/?exchange=amq.topic&routing_key=wallet.{type}"


def cli(
    database_url: str, *args: str, stdin: str = "", **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "notifier.cli", *args],
        env={**os.environ, "NOTIFIER_DATABASE_URL": database_url, **env},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _refused(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr
    assert "s3cret" not in result.stderr + result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize("how", ["stdin", "env"])
def test_a_url_with_credentials_is_read_from_stdin_or_the_environment(
    database_url: str, dba: Conn, how: str
) -> None:
    argument = "-" if how == "stdin" else "env:SINK_URL"
    result = cli(database_url, "subscriptions", "add", argument, stdin=URL + "\n", SINK_URL=URL)
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["url"] == URL.replace("s3cret-pw", "***")
    assert "s3cret" not in result.stdout + result.stderr
    assert dba.execute("SELECT url FROM notifier.subscriptions").fetchone() == (URL,)
    listed = cli(database_url, "subscriptions", "list")
    assert "s3cret" not in listed.stdout
    assert json.loads(listed.stdout)["url"] == shown["url"]


def test_an_unset_environment_variable_is_said_plainly(database_url: str, dba: Conn) -> None:
    result = cli(database_url, "subscriptions", "add", "env:NOT_SET_ANYWHERE")
    assert _refused(result) == (
        "notifier: error: url: the environment variable NOT_SET_ANYWHERE is not set"
    )


def test_a_bad_broker_url_is_refused_in_one_line_without_its_password(
    database_url: str, dba: Conn
) -> None:
    result = cli(database_url, "subscriptions", "add", "-", stdin="amqp://u:s3cret@h/?x=1")
    assert "takes the parameters exchange and routing_key" in _refused(result)
    assert dba.execute("SELECT count(*) FROM notifier.subscriptions").fetchone() == (0,)


def test_webhook_headers_come_from_a_file_and_are_never_printed(
    database_url: str, dba: Conn, tmp_path: Path
) -> None:
    headers = tmp_path / "headers.json"
    headers.write_text(json.dumps({"Authorization": "Bearer s3cret-token"}))
    result = cli(
        database_url,
        "subscriptions",
        "add",
        "https://8.8.8.8/hook",
        "--headers-file",
        str(headers),
        "--format",
        "cloudevents",
    )
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert (shown["headers"], shown["format"]) == ({"Authorization": "***"}, "cloudevents")
    assert "s3cret" not in result.stdout
    stored = dba.execute("SELECT headers FROM notifier.subscriptions").fetchone()
    assert stored == ({"Authorization": "Bearer s3cret-token"},)


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("[1, 2]", "--headers-file: must hold a JSON object"),
        ("{not json", "--headers-file: must hold a JSON object"),
        ('{"Host": "x"}', "--headers-file: Host is set by the notifier itself"),
    ],
)
def test_bad_headers_files_are_refused(
    database_url: str, dba: Conn, tmp_path: Path, content: str, says: str
) -> None:
    headers = tmp_path / "headers.json"
    headers.write_text(content)
    result = cli(
        database_url, "subscriptions", "add", "https://8.8.8.8/", "--headers-file", str(headers)
    )
    assert says in _refused(result)
    assert dba.execute("SELECT count(*) FROM notifier.subscriptions").fetchone() == (0,)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["consume", "https://example.com/"], "for webhooks run `notifier receiver`"),
        (["consume", "ftp://example.com/"], "no destination is served by ftp scheme"),
        (["dev", "--sink", "https://example.com/"], "--sink: takes a broker or AWS URL"),
        (["dev", "--sink", "kafka://h:9092"], "--sink: must name a topic"),
    ],
)
def test_consume_and_dev_refuse_what_they_cannot_read(
    database_url: str, args: list[str], says: str
) -> None:
    assert says in _refused(cli(database_url, *args))


def test_consume_names_the_broker_it_cannot_reach_without_its_password(
    database_url: str,
) -> None:
    from tests.support import free_port

    url = f"nats://user:s3cret@127.0.0.1:{free_port()}/wallet.events"
    line = _refused(cli(database_url, "consume", "-", "--seconds", "5", stdin=url))
    assert line.startswith(f"notifier: error: cannot consume {url.replace('s3cret', '***')}: ")
