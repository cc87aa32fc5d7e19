-- W3C Trace Context: the trace a change was made in travels with its event, so one trace
-- spans the caller, the ledger and every receiver. A writer names its trace with
--     SET LOCAL notifier.traceparent = '00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>';
--     SET LOCAL notifier.tracestate = 'vendor=value,...';   -- optional
-- (the API does this for a request that sends a traceparent header); every change the
-- transaction then makes keeps them, and every delivery of those events carries them.

-- The one definition of a well-formed value, for the capture trigger and the columns.
CREATE FUNCTION notifier.is_traceparent(value text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    -- Version 00: an all-zero trace id or parent id is invalid.
    SELECT value ~ '^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$'
       AND substr(value, 4, 32) <> repeat('0', 32)
       AND substr(value, 37, 16) <> repeat('0', 16)
$$;

CREATE FUNCTION notifier.is_tracestate(value text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    -- Printable ASCII only (it becomes a header and message metadata), and no longer than
    -- the 512 characters every tracer is asked to carry.
    SELECT value ~ '^[ -~]+$' AND length(value) <= 512
$$;

-- Nullable without a default: adding them rewrites nothing. The checks are NOT VALID so
-- that adding them does not read a large outbox through: the rows before them hold NULL.
ALTER TABLE notifier.events
    ADD COLUMN traceparent text,
    ADD COLUMN tracestate text,
    ADD CONSTRAINT events_traceparent CHECK (notifier.is_traceparent(traceparent)) NOT VALID,
    ADD CONSTRAINT events_tracestate
        CHECK (tracestate IS NULL OR (notifier.is_tracestate(tracestate) AND traceparent IS NOT NULL))
        NOT VALID;

COMMENT ON COLUMN notifier.events.traceparent IS
    'W3C traceparent of the transaction that made the change (SET LOCAL notifier.traceparent), sent with every delivery.';
COMMENT ON COLUMN notifier.events.tracestate IS
    'W3C tracestate that came with the traceparent (SET LOCAL notifier.tracestate).';

CREATE OR REPLACE FUNCTION notifier.capture() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    topic       text := TG_ARGV[0];
    in_utc      boolean := current_setting('TimeZone') IN ('UTC', 'Etc/UTC', 'GMT', 'Etc/GMT', 'UCT', 'Zulu');
    -- Unset, and reset by the end of a transaction that set it locally: NULL or ''.
    traceparent text := nullif(current_setting('notifier.traceparent', true), '');
    tracestate  text := nullif(current_setting('notifier.tracestate', true), '');
    captured    bigint;
BEGIN
    IF topic IS NULL OR topic = '' THEN
        RAISE EXCEPTION 'notifier.capture() needs a topic argument on table %.%', TG_TABLE_SCHEMA, TG_TABLE_NAME;
    END IF;
    IF traceparent IS NOT NULL AND NOT notifier.is_traceparent(traceparent) THEN
        RAISE EXCEPTION 'notifier.traceparent is not a W3C traceparent: %', traceparent
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use 00-<32 lowercase hex trace id>-<16 lowercase hex parent id>-<2 hex flags>, neither id all zeros.';
    END IF;
    IF tracestate IS NOT NULL AND NOT (traceparent IS NOT NULL AND notifier.is_tracestate(tracestate)) THEN
        RAISE EXCEPTION 'notifier.tracestate is not a W3C tracestate, or came without notifier.traceparent'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Set it with notifier.traceparent: printable ASCII, at most 512 characters.';
    END IF;

    INSERT INTO notifier.events (type, topic, table_schema, table_name, op, data, previous,
                                 traceparent, tracestate)
    VALUES (
        topic || CASE TG_OP WHEN 'INSERT' THEN '.created' WHEN 'UPDATE' THEN '.updated' ELSE '.deleted' END,
        topic, TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_OP,
        CASE WHEN TG_OP = 'DELETE'
             THEN CASE WHEN in_utc THEN to_jsonb(OLD) ELSE notifier.to_jsonb_utc(OLD) END
             ELSE CASE WHEN in_utc THEN to_jsonb(NEW) ELSE notifier.to_jsonb_utc(NEW) END
        END,
        CASE WHEN TG_OP = 'UPDATE'
             THEN CASE WHEN in_utc THEN to_jsonb(OLD) ELSE notifier.to_jsonb_utc(OLD) END
        END,
        traceparent, tracestate)
    RETURNING id INTO captured;
    INSERT INTO notifier.event_queue (event_id) VALUES (captured);

    IF (SELECT armed FROM notifier.doorbell) THEN
        -- A doorbell, never the data: the payload stays tiny whatever the row holds.
        PERFORM pg_notify('notifier', topic);
    END IF;
    RETURN NULL;
END;
$$;

REVOKE EXECUTE ON FUNCTION notifier.capture() FROM PUBLIC;
