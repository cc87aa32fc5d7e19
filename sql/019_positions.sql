-- Delivery state per batch, not per event. A subscription's progress is a position in
-- the outbox; a first attempt is recorded once per batch of events; per-event rows
-- (notifier.deliveries) are kept only for the events that need one: a failed attempt and
-- its retries, a dead letter, an event of an ordered subscription, an operator's
-- redelivery. The model and the argument that it loses nothing are in the README
-- ("How delivery keeps its place").
--
-- Commit order is the hard part: ids are taken before commit, so "everything up to id
-- N" is false while a transaction that took a lower id is still open. A position is
-- therefore a snapshot, as PgQ's ticks are: every event carries the id of the
-- transaction that wrote it, and the events a subscription has not seen are those whose
-- transaction is not visible in its snapshot. Each committed transaction becomes visible
-- between exactly one pair of successive snapshots, so each event falls in exactly one
-- window, whatever the order in which transactions commit.

-- The previous release's fan-out (its claim holds this lock) finishes first: taken
-- before any table lock here, so the two never wait for each other.
SELECT pg_advisory_xact_lock(8403, 1);

-- The writing transaction. Existing rows keep NULL: all of them committed before any
-- position below was taken, so no window holds them. A column with no default is added
-- without rewriting the table; the default applies to the rows written from now on.
ALTER TABLE notifier.events ADD COLUMN xid xid8;
ALTER TABLE notifier.events ALTER COLUMN xid SET DEFAULT pg_current_xact_id();
COMMENT ON COLUMN notifier.events.xid IS
    'The top-level transaction that wrote the event: which window of each position holds it.';

-- A window is found by transaction: the transactions in progress at its start (few, by
-- equality) and those that began after it (a range at the index's right edge).
CREATE INDEX events_xid ON notifier.events (xid) WHERE xid IS NOT NULL;

-- Each subscription's place in the outbox. Every event whose transaction is visible in
-- `since` is behind it. While a window is open, the events visible in `upto` and not in
-- `since` with ids up to `after_id` are claimed, and `last_id` is the window's highest
-- id; closing the window makes `upto` the new `since`.
CREATE TABLE notifier.positions (
    subscription_id  bigint PRIMARY KEY REFERENCES notifier.subscriptions (id) ON DELETE CASCADE,
    since            pg_snapshot NOT NULL,
    upto             pg_snapshot,
    after_id         bigint,
    last_id          bigint,
    CONSTRAINT positions_window CHECK ((upto IS NULL) = (after_id IS NULL)
                                       AND (upto IS NULL) = (last_id IS NULL))
);

COMMENT ON TABLE notifier.positions IS
    'Per subscription: the snapshot every event behind it is visible in, and the window being claimed.';

-- A subscription starts from the moment it is made; one enabled again starts from the
-- moment it is enabled (what it missed meanwhile is for recover, as before). Triggers,
-- so that every writer of subscriptions (any release's API and CLI, a DBA) keeps them.
CREATE FUNCTION notifier.position_start() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO notifier.positions (subscription_id, since)
        VALUES (NEW.id, pg_current_snapshot());
    ELSIF NEW.enabled AND NOT OLD.enabled THEN
        UPDATE notifier.positions
           SET since = pg_current_snapshot(), upto = NULL, after_id = NULL, last_id = NULL
         WHERE subscription_id = NEW.id;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER subscriptions_position AFTER INSERT OR UPDATE OF enabled ON notifier.subscriptions
    FOR EACH ROW EXECUTE FUNCTION notifier.position_start();

INSERT INTO notifier.positions (subscription_id, since)
SELECT id, pg_current_snapshot() FROM notifier.subscriptions;

-- Whether a position has passed an event: behind its snapshot, or claimed in its window.
CREATE FUNCTION notifier.passed(p notifier.positions, event_xid xid8, event_id bigint)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN event_xid IS NULL
    OR pg_visible_in_snapshot(event_xid, p.since)
    OR (p.upto IS NOT NULL AND pg_visible_in_snapshot(event_xid, p.upto) AND event_id <= p.after_id);

-- Whether a position may have events to move past: a window open, a transaction begun
-- after its snapshot with events visible now, or one that was open then and has events
-- now. Cheap (the end of the transaction-id index, and a probe per open transaction):
-- a claim asks it before locking the position, and a daemon before it parks.
CREATE FUNCTION notifier.behind(p notifier.positions) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE
RETURN p.upto IS NOT NULL
    -- An EXISTS would be planned as a scan that stops early, which it never does when
    -- there is nothing new: the newest transaction is read off the index's end instead.
    OR (SELECT max(e.xid) FROM notifier.events e) >= pg_snapshot_xmax(p.since)
    OR EXISTS (SELECT 1 FROM pg_snapshot_xip(p.since) AS x (xid)
                WHERE EXISTS (SELECT 1 FROM notifier.events e WHERE e.xid = x.xid));

-- The first attempts of a run of events to one subscription: claimed together, leased
-- together, recorded together. An event of the batch that did not succeed gets a row in
-- notifier.deliveries when the batch is recorded, and is retried from there.
CREATE TABLE notifier.batches (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subscription_id   bigint NOT NULL REFERENCES notifier.subscriptions (id) ON DELETE CASCADE,
    event_ids         bigint[] NOT NULL CONSTRAINT batches_not_empty CHECK (cardinality(event_ids) > 0),
    attempt           integer NOT NULL DEFAULT 1,  -- claims ever made: the fencing token
    claimed_at        timestamptz NOT NULL DEFAULT now(),
    lease_expires_at  timestamptz,                 -- NULL once recorded
    finished_at       timestamptz,
    -- Aligned with event_ids, set when recorded; NULL where the event has a delivery row.
    sent_at           timestamptz[],
    durations_ms      real[],
    outcomes          text[],
    succeeded         integer,
    CONSTRAINT batches_state CHECK ((finished_at IS NULL) = (lease_expires_at IS NOT NULL))
);

COMMENT ON TABLE notifier.batches IS
    'First attempts of events to a subscription, claimed and recorded together (ids in event order).';

-- The ids a batch spans (its event ids ascend): which batches hold an event.
CREATE FUNCTION notifier.batch_span(event_ids bigint[]) RETURNS int8range
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN int8range(event_ids[1], event_ids[cardinality(event_ids)], '[]');

CREATE INDEX batches_span ON notifier.batches USING gist (notifier.batch_span(event_ids));
CREATE INDEX batches_unfinished ON notifier.batches (lease_expires_at) WHERE finished_at IS NULL;
CREATE INDEX batches_subscription ON notifier.batches (subscription_id, id);

-- The batch of `subscription` holding an event, if any.
CREATE FUNCTION notifier.batch_of(subscription bigint, event_id bigint) RETURNS bigint
LANGUAGE sql STABLE PARALLEL SAFE
RETURN (SELECT b.id FROM notifier.batches b
         WHERE notifier.batch_span(b.event_ids) @> event_id
           AND b.subscription_id = subscription AND event_id = ANY (b.event_ids)
         ORDER BY b.id DESC LIMIT 1);

-- Every event's delivery to each subscription as one relation, however it is recorded:
-- a delivery row of its own, or its place in a batch (in flight while the batch is held;
-- succeeded once recorded, where it has no row of its own). For operators' SQL and the
-- counts of stats; an event's own lookup goes through batch_of.
CREATE VIEW notifier.delivery_states AS
SELECT d.event_id, d.subscription_id, d.id AS delivery_id, NULL::bigint AS batch_id, d.status,
       d.attempts, d.last_attempt_at, d.last_outcome, d.last_error, d.completed_at, d.created_at
  FROM notifier.deliveries d
UNION ALL
SELECT i.event_id, b.subscription_id, NULL, b.id,
       CASE WHEN b.finished_at IS NULL THEN 'in_flight' ELSE 'succeeded' END,
       b.attempt, b.sent_at[i.n], b.outcomes[i.n], NULL, b.finished_at, b.claimed_at
  FROM notifier.batches b
 CROSS JOIN LATERAL unnest(b.event_ids) WITH ORDINALITY AS i (event_id, n)
 WHERE b.finished_at IS NULL OR b.outcomes[i.n] IS NOT NULL;

COMMENT ON VIEW notifier.delivery_states IS
    'Each (event, subscription) delivery: a delivery row, or an event of a batch.';

-- Take up to `wanted` events for a subscription, in window order and within a window in
-- id order, moving its position past them; `cut` is the calling statement's snapshot,
-- so every event returned is visible to that statement. Events the subscription does not
-- match (type, filter, captured before it existed) are passed over. A position another
-- daemon is moving is skipped (empty result), never waited for.
CREATE FUNCTION notifier.advance(subscription bigint, wanted integer, cut pg_snapshot)
RETURNS bigint[]
LANGUAGE plpgsql AS $$
DECLARE
    p    notifier.positions%ROWTYPE;
    ids  bigint[];
BEGIN
    SELECT * INTO p FROM notifier.positions WHERE subscription_id = subscription
       FOR UPDATE SKIP LOCKED;
    IF NOT FOUND OR wanted <= 0 THEN
        RETURN '{}';
    END IF;
    IF p.upto IS NULL THEN
        -- Open a window: the events of the transactions visible in cut and not in since.
        SELECT min(w.id) - 1, max(w.id) INTO p.after_id, p.last_id
          FROM (SELECT e.id FROM notifier.events e
                 WHERE e.xid >= pg_snapshot_xmax(p.since) AND e.xid < pg_snapshot_xmax(cut)
                   AND pg_visible_in_snapshot(e.xid, cut)
                UNION ALL
                SELECT e.id FROM notifier.events e
                 WHERE e.xid = ANY (ARRAY(SELECT pg_snapshot_xip(p.since)))
                   AND pg_visible_in_snapshot(e.xid, cut)) AS w;
        IF p.last_id IS NULL THEN
            RETURN '{}';  -- nothing new; the position stays as it is, unwritten
        END IF;
        p.upto := cut;
    END IF;
    SELECT coalesce(array_agg(t.id ORDER BY t.id), '{}') INTO ids
      FROM (SELECT e.id
              FROM notifier.events e, notifier.subscriptions s
             WHERE s.id = subscription
               AND e.id > p.after_id AND e.id <= p.last_id
               AND pg_visible_in_snapshot(e.xid, p.upto)
               AND NOT pg_visible_in_snapshot(e.xid, p.since)
               AND s.created_at <= e.created_at
               AND notifier.type_matches(e.type, s.event_types)
               AND (s.filter = '[]' OR notifier.row_matches(e.data, s.filter))
             ORDER BY e.id
             LIMIT wanted) AS t;
    IF cardinality(ids) < wanted OR ids[cardinality(ids)] = p.last_id THEN
        UPDATE notifier.positions
           SET since = p.upto, upto = NULL, after_id = NULL, last_id = NULL
         WHERE subscription_id = subscription;
    ELSE
        UPDATE notifier.positions
           SET upto = p.upto, after_id = ids[cardinality(ids)], last_id = p.last_id
         WHERE subscription_id = subscription;
    END IF;
    RETURN ids;
END;
$$;

-- The capture trigger writes the event alone: no queue row. Its transaction id comes
-- from the column's default.
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
        traceparent, tracestate);

    IF (SELECT armed FROM notifier.doorbell) THEN
        -- A doorbell, never the data: the payload stays tiny whatever the row holds.
        PERFORM pg_notify('notifier', topic);
    END IF;
    RETURN NULL;
END;
$$;

-- Events still queued for the previous release's fan-out are committed, so the positions
-- above are past them: they become deliveries here, as that fan-out would have made
-- them (due now; behind their key's head on an ordered subscription, whose next claim
-- promotes them in order). The previous release's daemons keep working meanwhile: they
-- wait for this, then find the queue empty and go on with the deliveries. The queue
-- table stays for them, unused by this release, until a later release drops it; a
-- writer that was already inside the old trigger when this commits still queues its
-- event, which this release delivers from its position, and at worst a previous-release
-- daemon delivers a second time.
WITH queued AS (
    DELETE FROM notifier.event_queue RETURNING event_id
),
matched AS (
    SELECT e.id AS event_id, s.id AS subscription_id,
           notifier.delivery_key(e.data, s.ordering_key) AS ordering_key
      FROM queued q
      JOIN notifier.events e ON e.id = q.event_id
      JOIN notifier.subscriptions s
        ON s.enabled
       AND s.created_at <= e.created_at
       AND notifier.type_matches(e.type, s.event_types)
       AND (s.filter = '[]' OR notifier.row_matches(e.data, s.filter))
),
keys AS (
    INSERT INTO notifier.ordering_keys AS k (subscription_id, key, waiting)
    SELECT subscription_id, ordering_key, count(*)
      FROM matched
     WHERE ordering_key IS NOT NULL
     GROUP BY subscription_id, ordering_key
     ORDER BY subscription_id, ordering_key
        ON CONFLICT (subscription_id, key) DO UPDATE SET waiting = k.waiting + excluded.waiting
)
INSERT INTO notifier.deliveries (event_id, subscription_id, ordering_key, next_attempt_at)
SELECT event_id, subscription_id, ordering_key,
       CASE WHEN ordering_key IS NULL THEN now() ELSE 'infinity' END
  FROM matched
    ON CONFLICT (event_id, subscription_id) DO NOTHING;
