"""A PostgreSQL-trigger-driven change notifier for a balance ledger."""

__version__ = "0.1.0"
