"""A PostgreSQL server of this process's own: initdb'd into a directory, run as a child.

``notifier dev`` runs its database this way, and the fault tests stop and crash one.
The server is a direct child that dies with its parent (Linux ``PR_SET_PDEATHSIG``), so
no server outlives a ``notifier dev`` that was killed outright, and it stops and starts
by signals, as ``pg_ctl`` would: SIGINT is a fast shutdown, SIGQUIT an immediate one
(a crash: the next start recovers from the WAL).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import glob
import itertools
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

ShutdownMode = Literal["smart", "fast", "immediate"]
_SIGNALS: dict[ShutdownMode, signal.Signals] = {
    "smart": signal.SIGTERM,
    "fast": signal.SIGINT,
    "immediate": signal.SIGQUIT,
}
# PostgreSQL refuses to run as root; as root, the server runs as this system user.
SYSTEM_USER = "notifier-pg"
PR_SET_PDEATHSIG = 1


class EmbeddedPostgresError(Exception):
    """The embedded server cannot be set up or started; the message says why."""


def bin_dir() -> Path:
    """The server's programs: the installed PostgreSQL's, or the ``pgserver`` wheel's."""
    for candidate in _bin_dirs():
        if (candidate / "initdb").exists() and (candidate / "postgres").exists():
            return candidate
    raise EmbeddedPostgresError(
        "no PostgreSQL server programs found (initdb, postgres): install PostgreSQL, "
        "or pip install 'notifier[embedded]'"
    )


def _bin_dirs() -> Iterator[Path]:
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.CalledProcessError):
            found = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=True
            )
            yield Path(found.stdout.strip())
    with warnings.catch_warnings():
        # platformdirs, imported by pgserver, warns when XDG_RUNTIME_DIR is unset.
        warnings.simplefilter("ignore")
        try:
            import pgserver
        except ImportError:
            return
    yield Path(pgserver.__file__).parent / "pginstall" / "bin"


def program(name: str) -> str | None:
    """A PostgreSQL program (psql, pgbench) to run: the one on PATH, else an installed
    PostgreSQL's or the ``pgserver`` wheel's; None when there is none."""
    if on_path := shutil.which(name):
        return on_path
    # Debian's layout: not every program is on PATH, and pg_config may not be installed.
    installed = (Path(d) for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True))
    for directory in itertools.chain(installed, _bin_dirs()):
        if os.access(directory / name, os.X_OK):
            return str(directory / name)
    return None


def _die_with_parent() -> None:
    """In the child: a fast shutdown as soon as the parent dies, however it dies."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGINT)


def _run_as(data_dir: Path) -> str | None:
    """The system user the server runs as: None (this one) unless this one is root."""
    if os.geteuid() != 0:
        return None
    if data_dir.exists() and data_dir.stat().st_uid != 0:
        return pwd.getpwuid(data_dir.stat().st_uid).pw_name
    # Several test workers start servers at once: one of them makes the user, the others
    # wait for it rather than race it.
    with open(Path(tempfile.gettempdir()) / "notifier-pg-user.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            pwd.getpwnam(SYSTEM_USER)
        except KeyError:
            subprocess.run(
                [
                    "useradd",
                    "--system",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                    SYSTEM_USER,
                ],
                check=True,
                capture_output=True,
            )
    return SYSTEM_USER


def free_port() -> int:
    """A TCP port on the loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _let_traverse(path: Path) -> None:
    """As root: let the server's user pass through every directory above ``path``.

    Only the search bit for others is added, where missing (a home directory is often
    0700); nothing becomes listable or readable that was not.
    """
    for directory in path.resolve().parents:
        mode = directory.stat().st_mode
        if not mode & stat.S_IXOTH:
            directory.chmod(mode | stat.S_IXOTH)


class EmbeddedPostgres:
    """One server: ``start()``, ``stop(mode)``, ``start()`` again, on the same data."""

    def __init__(self, data_dir: Path, port: int, *, settings: dict[str, str] | None = None):
        self.data_dir = data_dir.resolve()
        self.port = port
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}.log"
        self._settings = settings or {}
        self._bin = bin_dir()
        self._user = _run_as(self.data_dir)
        if self._user is not None:
            _let_traverse(self.data_dir)
            _let_traverse(self._bin / "postgres")
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _initdb(self) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._user is not None:
            user = pwd.getpwnam(self._user)
            os.chown(self.data_dir, user.pw_uid, user.pw_gid)
        done = subprocess.run(
            [
                str(self._bin / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-sync",
            ],
            capture_output=True,
            text=True,
            user=self._user,
            group=pwd.getpwnam(self._user).pw_gid if self._user else None,
            extra_groups=[] if self._user else None,
            check=False,
        )
        if done.returncode != 0:
            raise EmbeddedPostgresError(f"initdb failed in {self.data_dir}: {done.stderr.strip()}")

    def start(self, timeout: float = 30.0) -> None:
        """Start the server (initdb first if the directory is new); wait until it answers."""
        self._initdb()
        if (running := self._running_pid()) is not None:
            raise EmbeddedPostgresError(
                f"a PostgreSQL server (pid {running}) already runs on {self.data_dir}: "
                f"stop it (kill -INT {running}) or use another directory"
            )
        settings = {
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": "",
            "port": str(self.port),
            **self._settings,
        }
        args = [str(self._bin / "postgres"), "-D", str(self.data_dir)]
        for name, value in settings.items():
            args += ["-c", f"{name}={value}"]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                args,
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                user=self._user,
                group=pwd.getpwnam(self._user).pw_gid if self._user else None,
                extra_groups=[] if self._user else None,
                # Its own process group: a terminal's Ctrl-C reaches the parent only,
                # which then stops the server after the processes that use it.
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        self._wait_ready(timeout)

    def _running_pid(self) -> int | None:
        """The pid of a server already running on the directory, from its lock file."""
        try:
            first = (self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0]
            pid = int(first)
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None  # a stale lock file: the server removes it at start
        except PermissionError:
            pass
        return pid

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                tail = self.log_path.read_text(errors="replace").splitlines()[-5:]
                raise EmbeddedPostgresError(
                    f"PostgreSQL in {self.data_dir} exited at start: " + " / ".join(tail)
                )
            ready = subprocess.run(
                [str(self._bin / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)],
                check=False,
            )
            if ready.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise EmbeddedPostgresError(f"PostgreSQL in {self.data_dir} did not start")
            time.sleep(0.1)

    def stop(self, mode: ShutdownMode = "fast", timeout: float = 30.0) -> None:
        """Stop the server the way ``pg_ctl stop -m MODE`` does; wait for it to exit."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(_SIGNALS[mode])
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None
