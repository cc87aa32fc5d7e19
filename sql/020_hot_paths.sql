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

-- A function in SQL that cannot be inlined is planned again each time the statement that
-- calls it runs; one in PL/pgSQL keeps its plans for the session. The claim asks
-- behind() of every position each round, and timestamptz_columns() for each batch's
-- source table: about a quarter of an idle claim's time (0.51 -> 0.37 ms). Same
-- arguments, same answers.
CREATE OR REPLACE FUNCTION notifier.behind(p notifier.positions) RETURNS boolean
LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
BEGIN
    RETURN p.upto IS NOT NULL
        -- An EXISTS would be planned as a scan that stops early, which it never does when
        -- there is nothing new: the newest transaction is read off the index's end instead.
        OR (SELECT max(e.xid) FROM notifier.events e) >= pg_snapshot_xmax(p.since)
        OR EXISTS (SELECT 1 FROM pg_snapshot_xip(p.since) AS x (xid)
                    WHERE EXISTS (SELECT 1 FROM notifier.events e WHERE e.xid = x.xid));
END;
$$;

CREATE OR REPLACE FUNCTION notifier.timestamptz_columns(table_schema text, table_name text)
RETURNS text[] LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
BEGIN
    RETURN array(
        SELECT a.attname::text
          FROM pg_attribute a
         WHERE a.attrelid = to_regclass(format('%I.%I', table_schema, table_name))
           AND a.attnum > 0 AND NOT a.attisdropped
           AND a.atttypid = 'timestamptz'::regtype
         ORDER BY a.attnum);
END;
$$;
