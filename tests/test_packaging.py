"""The built wheel carries the migrations: a non-editable install migrates from anywhere."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
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

    # A fresh environment with the wheel installed as a user installs it. Its dependencies
    # are this environment's, added to its path (resolving them again from the index is
    # pip's business, not the wheel's, and costs a minute).
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "-q", wheel],
        check=True,
    )
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    (Path(site) / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    imported = subprocess.run(
        [python, "-c", "import notifier; print(notifier.__file__)"],
        cwd=elsewhere,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert Path(imported.strip()).is_relative_to(env_dir)  # the wheel, not this checkout
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
