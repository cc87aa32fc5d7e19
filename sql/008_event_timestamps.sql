-- Timestamps in delivered events, as the event contract writes them: UTC, six fractional
-- digits, "Z" ("2026-11-21T20:00:00.120000Z"). to_jsonb writes a timestamptz as
-- "2026-11-21T20:00:00.12+00:00", with as few digits as it needs. Events are stored as
-- captured (writers pay nothing more); a row's top-level timestamptz columns are
-- rewritten when the event is read for delivery or inspection.

-- The timestamptz columns of a table, in column order; empty for a table that is gone.
CREATE FUNCTION notifier.timestamptz_columns(table_schema text, table_name text)
RETURNS text[]
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT array(
        SELECT a.attname::text
          FROM pg_attribute a
         WHERE a.attrelid = to_regclass(format('%I.%I', table_schema, table_name))
           AND a.attnum > 0 AND NOT a.attisdropped
           AND a.atttypid = 'timestamptz'::regtype
         ORDER BY a.attnum)
$$;

-- The row with those of its top-level keys that hold a to_jsonb timestamptz written in
-- the contract's form. Other values, nested ones included, are left exactly as they are,
-- and so is a value that is not such a timestamp (the column may have changed type since
-- the event was captured; infinity stays "infinity"). Reading an event never fails.
CREATE FUNCTION notifier.contract_timestamps(row_data jsonb, columns text[])
RETURNS jsonb
LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
DECLARE
    col    text;
    value  text;
BEGIN
    IF row_data IS NULL THEN
        RETURN NULL;
    END IF;
    FOREACH col IN ARRAY columns LOOP
        value := row_data ->> col;
        IF value ~ '^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?[+-]\d\d(:\d\d(:\d\d)?)?$' THEN
            BEGIN
                row_data := jsonb_set(
                    row_data, ARRAY[col],
                    to_jsonb(to_char(value::timestamptz AT TIME ZONE 'UTC',
                                     'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')));
            EXCEPTION WHEN data_exception THEN
                NULL;  -- shaped like a timestamp but not one ("2026-02-30..."): as stored
            END;
        END IF;
    END LOOP;
    RETURN row_data;
END;
$$;
