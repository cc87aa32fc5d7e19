-- Row-value filters: a subscription may narrow its events further by conditions on the
-- row, all of which must hold, for example amount >= 100000 and kind = 'debit'.
-- Stored as a JSON array of {"path": ["field", ...], "op": "...", "value": ...}, already
-- validated by the application; evaluated against the event's row before fan-out.

ALTER TABLE notifier.subscriptions
    ADD COLUMN filter jsonb NOT NULL DEFAULT '[]'
        CONSTRAINT subscriptions_filter_array CHECK (jsonb_typeof(filter) = 'array');

-- One condition. A missing field, or a value of another JSON type than the one compared
-- with, does not match (never an error: fan-out must not fail on an odd row).
CREATE FUNCTION notifier.condition_holds(actual jsonb, op text, expected jsonb) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN actual IS NULL THEN false
        WHEN op = 'in' THEN expected @> jsonb_build_array(actual)
        WHEN op = 'not in' THEN NOT expected @> jsonb_build_array(actual)
        WHEN op = '!=' THEN actual <> expected
        WHEN jsonb_typeof(actual) <> jsonb_typeof(expected) THEN false
        WHEN op = '=' THEN actual = expected
        WHEN op = '<' THEN actual < expected
        WHEN op = '<=' THEN actual <= expected
        WHEN op = '>' THEN actual > expected
        WHEN op = '>=' THEN actual >= expected
        ELSE false
    END
$$;

-- Whether a row satisfies every condition of a filter (an empty filter matches all).
CREATE FUNCTION notifier.row_matches(row_data jsonb, filter jsonb) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT NOT EXISTS (
        SELECT 1
          FROM jsonb_array_elements(coalesce(filter, '[]')) AS c
         WHERE NOT notifier.condition_holds(
                   row_data #> ARRAY(SELECT jsonb_array_elements_text(c -> 'path')),
                   c ->> 'op',
                   c -> 'value')
    )
$$;
