-- name: lock
-- Serialises concurrent `notifier migrate` runs on one database.
SELECT pg_advisory_lock(hashtextextended('notifier.migrate', 0));

-- name: unlock
SELECT pg_advisory_unlock(hashtextextended('notifier.migrate', 0));

-- name: bootstrap
CREATE SCHEMA IF NOT EXISTS notifier;
CREATE TABLE IF NOT EXISTS notifier.schema_migrations (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
);

-- name: applied
SELECT version, name, checksum FROM notifier.schema_migrations ORDER BY version;

-- name: record
INSERT INTO notifier.schema_migrations (version, name, checksum) VALUES ($1, $2, $3);
