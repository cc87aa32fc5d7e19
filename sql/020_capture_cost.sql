-- What a captured row costs the ledger's writer. PostgreSQL plans a table's CHECK
-- constraints again for every statement that writes it, and the capture trigger writes
-- notifier.events once per row: the two trace checks, each a call of an SQL function
-- parsed and planned afresh, took a sixth of a ledger write's throughput (pgbench,
-- 8 clients, 1-row INSERT: 5,370 tx/s with them, 6,430 without, 8,800 with capture off).
-- capture() refuses a malformed trace before it writes (the caller's clear error), and
-- the daemon checks a stored trace again before it becomes a header, so a row written
-- around the trigger cannot put one on the wire either.
ALTER TABLE notifier.events
    DROP CONSTRAINT IF EXISTS events_traceparent,
    DROP CONSTRAINT IF EXISTS events_tracestate;
