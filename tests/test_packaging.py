"""The built wheel carries the migrations: a non-editable install migrates from anywhere."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from notifier.db.migrate import discover

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_wheel_install_migrates_from_another_directory(
    tmp_path: Path, empty_database_url: str
) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True,
    )
    (wheel,) = tmp_path.glob("notifier-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert "notifier/sql/001_ledger.sql" in names
    assert "notifier/db/queries/migrate.sql" in names

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    subprocess.run([env_dir / "bin" / "pip", "install", "-q", str(wheel)], check=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = subprocess.run(
        [env_dir / "bin" / "notifier", "migrate"],
        cwd=elsewhere,
        env={**os.environ, "NOTIFIER_DATABASE_URL": empty_database_url},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert f'"applied": {len(discover())}' in result.stderr
