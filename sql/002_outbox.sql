-- The transactional outbox: every captured change becomes a row in notifier.events,
-- written by a trigger inside the transaction that made the change. An event therefore
-- exists if and only if its change committed (a rolled-back transaction or savepoint
-- takes its events with it).

CREATE SCHEMA IF NOT EXISTS notifier;

-- Time-ordered UUIDs (version 7 layout: 48-bit Unix milliseconds, then random bits).
-- Public event ids must stay unique even if a database is recreated and its sequences
-- restart, and time order keeps their index append-mostly.
CREATE FUNCTION notifier.uuid_v7() RETURNS uuid
LANGUAGE sql VOLATILE PARALLEL SAFE AS $$
    SELECT encode(
        set_bit(set_bit(
            overlay(uuid_send(gen_random_uuid())
                    PLACING substring(int8send((extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
                    FROM 1 FOR 6),
            52, 1), 53, 1),
        'hex')::uuid
$$;

CREATE TABLE notifier.events (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    uid           uuid NOT NULL DEFAULT notifier.uuid_v7(),
    type          text NOT NULL,
    topic         text NOT NULL,
    table_schema  text NOT NULL,
    table_name    text NOT NULL,
    op            text NOT NULL CONSTRAINT events_op CHECK (op IN ('INSERT', 'UPDATE', 'DELETE')),
    data          jsonb NOT NULL,
    previous      jsonb,
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE UNIQUE INDEX events_uid ON notifier.events (uid);

COMMENT ON TABLE notifier.events IS
    'Outbox: one row per captured change, immutable. uid is the public event id (webhook-id).';

-- Events not yet fanned out to subscriptions. The daemon deletes from here in the same
-- transaction that creates the deliveries, so each event is fanned out exactly once and
-- the events table itself is never updated. No foreign key: its check would cost every
-- writer a lookup and a row lock on the event it just inserted.
CREATE TABLE notifier.event_queue (
    event_id  bigint PRIMARY KEY
);

-- The doorbell. A NOTIFY makes its transaction take a database-wide lock at commit, so
-- writers ring only while a daemon is parked waiting (armed = true). A daemon arms the
-- bell before it parks and disarms it when it wakes; a busy daemon keeps draining with
-- no NOTIFY at all, and its periodic poll covers any bell that went unheard.
CREATE TABLE notifier.doorbell (
    singleton  boolean PRIMARY KEY DEFAULT true CONSTRAINT doorbell_singleton CHECK (singleton),
    armed      boolean NOT NULL DEFAULT false
);
INSERT INTO notifier.doorbell DEFAULT VALUES;

-- A row as JSON with its timestamps in UTC, for writers whose session uses another time
-- zone. The SET clause costs a configuration change per call, so the capture function
-- takes this path only when the session's time zone is not UTC already.
CREATE FUNCTION notifier.to_jsonb_utc(r anyelement) RETURNS jsonb
LANGUAGE sql STABLE
SET "TimeZone" = 'UTC'
AS $$ SELECT to_jsonb(r) $$;

-- The generic capture trigger function. Attach it to any table (see notifier.watch):
--   TG_ARGV[0] is the topic; events are typed <topic>.created|updated|deleted.
-- It runs inside every writer's transaction, so it is kept lean: names are
-- schema-qualified (built-ins resolve from pg_catalog first) instead of a SET clause.
CREATE FUNCTION notifier.capture() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    topic   text := TG_ARGV[0];
    in_utc  boolean := current_setting('TimeZone') IN ('UTC', 'Etc/UTC', 'GMT', 'Etc/GMT', 'UCT', 'Zulu');
BEGIN
    IF topic IS NULL OR topic = '' THEN
        RAISE EXCEPTION 'notifier.capture() needs a topic argument on table %.%', TG_TABLE_SCHEMA, TG_TABLE_NAME;
    END IF;

    WITH event AS (
        INSERT INTO notifier.events (type, topic, table_schema, table_name, op, data, previous)
        VALUES (
            topic || CASE TG_OP WHEN 'INSERT' THEN '.created' WHEN 'UPDATE' THEN '.updated' ELSE '.deleted' END,
            topic, TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_OP,
            CASE WHEN TG_OP = 'DELETE'
                 THEN CASE WHEN in_utc THEN to_jsonb(OLD) ELSE notifier.to_jsonb_utc(OLD) END
                 ELSE CASE WHEN in_utc THEN to_jsonb(NEW) ELSE notifier.to_jsonb_utc(NEW) END
            END,
            CASE WHEN TG_OP = 'UPDATE'
                 THEN CASE WHEN in_utc THEN to_jsonb(OLD) ELSE notifier.to_jsonb_utc(OLD) END
            END)
        RETURNING id
    )
    INSERT INTO notifier.event_queue (event_id) SELECT id FROM event;

    IF (SELECT armed FROM notifier.doorbell) THEN
        -- A doorbell, never the data: the payload stays tiny whatever the row holds.
        PERFORM pg_notify('notifier', topic);
    END IF;
    RETURN NULL;
END;
$$;

-- Watches a table: every INSERT, UPDATE and DELETE on it becomes an event of the topic.
CREATE FUNCTION notifier.watch(target regclass, topic text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF topic IS NULL OR topic !~ '^[a-z][a-z0-9_]*$' THEN
        RAISE EXCEPTION 'invalid topic %: use lower-case letters, digits and underscores', quote_nullable(topic)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    EXECUTE format('DROP TRIGGER IF EXISTS notifier_capture ON %s', target);
    EXECUTE format(
        'CREATE TRIGGER notifier_capture AFTER INSERT OR UPDATE OR DELETE ON %s '
        'FOR EACH ROW EXECUTE FUNCTION notifier.capture(%L)', target, topic);
END;
$$;

CREATE FUNCTION notifier.unwatch(target regclass) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('DROP TRIGGER IF EXISTS notifier_capture ON %s', target);
END;
$$;

-- The tables being watched, with their topics.
CREATE VIEW notifier.watched_tables AS
SELECT c.oid::regclass AS table_name,
       convert_from(substring(t.tgargs FROM 1 FOR position('\000'::bytea IN t.tgargs) - 1), 'UTF8') AS topic
  FROM pg_trigger t
  JOIN pg_class c ON c.oid = t.tgrelid
 WHERE t.tgname = 'notifier_capture' AND NOT t.tgisinternal;

SELECT notifier.watch('public.transactions', 'transaction');
