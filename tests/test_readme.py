"""The README stays true: every setting is documented, and CI runs its commands."""

from __future__ import annotations

from pathlib import Path

from notifier.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_every_setting_is_documented_with_its_default() -> None:
    defaults = Settings.model_construct()
    for name, field in Settings.model_fields.items():
        variable = f"`NOTIFIER_{name.upper()}`"
        row = next((line for line in README.splitlines() if line.startswith(f"| {variable}")), None)
        assert row is not None, f"{variable} is missing from the README's settings table"
        value = getattr(defaults, name)
        if isinstance(value, tuple):
            value = ",".join(f"{v:g}" for v in value)
        elif isinstance(value, bool):
            value = str(value).lower()
        elif isinstance(value, float):
            value = f"{value:g}"
        documented = "none" if value is None else f"`{value}`"
        assert row.split("|")[2].strip() == documented, (name, field.default)


def test_ci_runs_the_readme_commands_verbatim() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    for command in (
        "python3 -m venv .venv && .venv/bin/pip install -e '.[dev]'",
        ".venv/bin/pytest",
    ):
        assert command in README
        assert command in ci
