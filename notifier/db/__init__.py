"""Connections, the retryable database errors, named queries and the migration runner."""
