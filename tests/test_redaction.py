"""Database credentials are never shown: not in messages, logs or errors of any command."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import traceback

import pytest

from notifier.db.pool import DatabaseUnavailable, connect
from notifier.devtools.libpq import command_line_url
from notifier.observability.redaction import redact_text, redact_url
from tests.support import free_port


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:S3cr3t@h:5432/db", "postgresql://u:***@h:5432/db"),
        ("postgresql://u@h/db?password=S3cr3t", "postgresql://u@h/db?password=***"),
        (
            "postgresql://u@h/db?sslmode=require&sslpassword=S3cr3t",
            "postgresql://u@h/db?sslmode=require&sslpassword=***",
        ),
        ("postgresql://u@h/db?PassWord=S3cr3t", "postgresql://u@h/db?PassWord=***"),
        ("postgresql://u@h/db?pass%77ord=S3cr3t", "postgresql://u@h/db?pass%77ord=***"),
        ("postgres://u@h/db?SSLPASSWORD=S3cr3t", "postgres://u@h/db?SSLPASSWORD=***"),
        (
            "postgresql://u@h/db?oauth_client_secret=S3cr3t&oauth_client_id=app",
            "postgresql://u@h/db?oauth_client_secret=***&oauth_client_id=app",
        ),
        ("postgresql://u:S3cr3t@h/db?password=S3cr3t", "postgresql://u:***@h/db?password=***"),
        # Passwords holding characters that end a URL's parts early.
        ("postgresql://u:S3cr/3t@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u:S3cr?3t@h/db?sslmode=disable", "postgresql://u:***@h/db?sslmode=disable"),
        ("postgresql://u:S3cr#3t@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u:S3c@r3t@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u:p%40ss@[::1]:5432/db", "postgresql://u:***@[::1]:5432/db"),
        (
            "postgresql://u@h/db?password=S3cr&3t&sslmode=disable",
            "postgresql://u@h/db?password=***&***&sslmode=disable",
        ),
        ("postgresql://u@h/db?password=S3cr#3t", "postgresql://u@h/db?password=***"),
        ("postgresql://h/db?password=S3c@r3t", "postgresql://h/db?password=***"),
        # Nothing secret: shown as given.
        ("postgresql://postgres:@/postgres?host=/tmp/s", "postgresql://postgres:@/postgres?host=/tmp/s"),
        ("postgresql://u@h/db?passfile=/home/u/.pgpass", "postgresql://u@h/db?passfile=/home/u/.pgpass"),
        ("postgresql://u@h/db?application_name=me@laptop", "postgresql://u@h/db?application_name=me@laptop"),
        ("https://hooks.example.com/in?token=abc", "https://hooks.example.com/in?token=***"),
        ("host=h password=S3cr3t", "***"),  # not a URL: nothing of it can be trusted
    ],
)  # fmt: skip
def test_redact_url_masks_every_credential(url: str, shown: str) -> None:
    assert redact_url(url) == shown


@pytest.mark.parametrize(
    ("text", "url", "shown"),
    [
        (
            "bad query field: 'T41lS3cr3t'",
            "postgresql://u@h/db?password=S3cr3t&T41lS3cr3t",
            "bad query field: '***'",
        ),
        ("at postgresql://u:S3cr3t@h/db: refused", "postgresql://u:S3cr3t@h/db", "at postgresql://u:***@h/db: refused"),
        ("password p@ss rejected", "postgresql://u:p%40ss@h/db", "password *** rejected"),
        ("[Errno 111] Connect call failed", "postgresql://u:S3cr3t@h/db", "[Errno 111] Connect call failed"),
    ],
)  # fmt: skip
def test_redact_text_masks_the_credentials_of_a_url(text: str, url: str, shown: str) -> None:
    assert redact_text(text, url) == shown


SECRET = "S3cr3tPw"
TAIL = "T41lS3cr3t"
# Every way a secret can ride in NOTIFIER_DATABASE_URL, including malformed ones.
UNREACHABLE_URLS = [
    "postgresql://postgres:{secret}@127.0.0.1:{port}/db",
    "postgresql://postgres@127.0.0.1:{port}/db?password={secret}",
    "postgresql://postgres:{secret}@127.0.0.1:{port}/db?password={secret}",
    "postgresql://postgres@127.0.0.1:{port}/db?sslmode=disable&sslpassword={secret}",
    "postgresql://postgres@127.0.0.1:{port}/db?PassWord={secret}",
    "postgresql://postgres@127.0.0.1:{port}/db?pass%77ord={secret}",
    "postgresql://postgres@127.0.0.1:{port}/db?password=S3cr%33tPw",
    "postgresql://postgres@127.0.0.1:{port}/db?password={secret}&" + TAIL,
    "postgresql://postgres:{secret}/x@127.0.0.1:{port}/db",
    "postgresql://postgres:{secret}#x@127.0.0.1:{port}/db",
]


def _notifier(command: str, url: str) -> tuple[int, str]:
    """Run ``notifier <command>``; return its exit status and all it printed.

    ``run`` waits for an unreachable database: it is stopped once it says so.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFIER_")}
    env.update(NOTIFIER_DATABASE_URL=url, NOTIFIER_LOG_FORMAT="json", NOTIFIER_DAEMON_PORT="0")
    process = subprocess.Popen(
        [sys.executable, "-m", "notifier.cli", command],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    seen = []
    try:
        for line in process.stderr:
            seen.append(line)
            if "waiting_for_database" in line:
                process.send_signal(signal.SIGTERM)
                break
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return process.returncode, out + "".join(seen) + err


@pytest.mark.parametrize("command", ["migrate", "run"])
@pytest.mark.parametrize("template", UNREACHABLE_URLS)
def test_no_command_shows_the_database_password(command: str, template: str) -> None:
    code, output = _notifier(command, template.format(secret=SECRET, port=free_port()))
    # Every secret above starts with S3cr, raw, percent-decoded or cut in pieces.
    assert "S3cr" not in output
    if "waiting_for_database" in output:
        assert command == "run"
        # The reason is shown (asyncio's words or uvloop's), only without the password.
        assert "Connect call failed" in output or "Connection refused" in output
    else:
        assert code == 1, output
        [line] = output.strip().splitlines()
        assert line.startswith("notifier: error: ")


async def test_a_connection_error_and_its_traceback_carry_no_piece_of_the_password() -> None:
    # asyncpg quotes the malformed query field, here the tail of the password.
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/db?password={SECRET}&{TAIL}"
    with pytest.raises(DatabaseUnavailable) as caught:
        await connect(url)
    shown = "".join(traceback.format_exception(caught.value))
    assert "bad query field: '***'" in shown
    assert "S3cr" not in shown


CRASH = """
import sys
import notifier.engine.daemon

async def crash(settings):
    raise ValueError(f"bad query field: '{sys.argv[1]}' in {settings.database_url}")

notifier.engine.daemon.run_daemon = crash
from notifier.cli.main import main
sys.exit(main(["run"]))
"""


def test_an_unexpected_error_is_shown_with_its_traceback_but_no_credentials() -> None:
    url = f"postgresql://postgres:{SECRET}@127.0.0.1:{free_port()}/db?sslpassword={TAIL}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFIER_")}
    env.update(NOTIFIER_DATABASE_URL=url)
    result = subprocess.run(
        [sys.executable, "-c", CRASH, TAIL], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert result.stderr.startswith("Traceback (most recent call last):")
    masked = "postgresql://postgres:***@127.0.0.1:"
    assert f"ValueError: bad query field: '***' in {masked}" in result.stderr
    assert "S3cr" not in result.stderr


def test_postgres_programs_get_the_password_from_their_environment() -> None:
    # pg_dump and pgbench run with the URL on their command line, which ps shows.
    shown, env = command_line_url("postgresql://app:p%40ss@db:5432/ledger?sslmode=disable")
    assert shown == "postgresql://app@db:5432/ledger?sslmode=disable"
    assert env["PGPASSWORD"] == "p@ss"
    assert command_line_url("postgresql://app@db/ledger")[0] == "postgresql://app@db/ledger"
