"""The ``notifier`` command."""

from notifier.cli.main import main

__all__ = ["main"]
