-- name: claim
-- One round trip per batch: fan new events out to matching subscriptions and claim
-- the deliveries this daemon has room for, and claim due retries and expired leases.
--   $1 events to fan out   $2 lease seconds   $3/$4 room left per subscription (ids,
--   counts; a subscription not listed has room $5)   $6 due deliveries to claim
--   $7 whether to disarm the doorbell when work is found.
-- New deliveries beyond a subscription's room are inserted as pending, due now. A
-- delivery an operator's replay created first is left alone (ON CONFLICT). For ordered
-- subscriptions, only a key's head may go: the rest wait behind it (sql/014), and keys
-- whose head finished get their next one as head here.
-- Always returns one row at least: fanned_events, then the claimed delivery (or NULLs).
WITH queued AS (
    -- One daemon fans out at a time (the lock lasts to the end of this statement), in
    -- event order: the deliveries of a key are then made in the order of its events,
    -- which ordered subscriptions rely on. A daemon that finds it taken only claims.
    DELETE FROM notifier.event_queue
     WHERE event_id = ANY (ARRAY(SELECT event_id FROM notifier.event_queue
                                  WHERE pg_try_advisory_xact_lock(8403, 1)
                                  ORDER BY event_id
                                  LIMIT $1
                                    FOR UPDATE SKIP LOCKED))
    RETURNING event_id
),
batch AS MATERIALIZED (
    -- Fetched once, by primary key: however large the events table grows.
    SELECT id, type, data, created_at
      FROM notifier.events
     WHERE id = ANY (ARRAY(SELECT event_id FROM queued))
),
room AS (
    SELECT * FROM unnest($3::bigint[], $4::int[]) AS r (subscription_id, n)
),
matched AS (
    SELECT e.id AS event_id, s.id AS subscription_id,
           notifier.delivery_key(e.data, s.ordering_key) AS ordering_key
      FROM batch e
      JOIN notifier.subscriptions s
        ON s.enabled
       AND s.created_at <= e.created_at
       AND notifier.type_matches(e.type, s.event_types)
       AND (s.filter = '[]' OR notifier.row_matches(e.data, s.filter))
),
keys AS (
    -- Each key of this batch: its first event becomes the head if the key has none and
    -- nothing waiting; every other event of it waits.
    -- Key rows are locked in key order, here and in settle, so the two never deadlock.
    INSERT INTO notifier.ordering_keys AS k (subscription_id, key, head, waiting)
    SELECT subscription_id, ordering_key, min(event_id), count(*) - 1
      FROM matched
     WHERE ordering_key IS NOT NULL
     GROUP BY subscription_id, ordering_key
     ORDER BY subscription_id, ordering_key
        ON CONFLICT (subscription_id, key) DO UPDATE
       SET head = CASE WHEN k.head IS NULL AND k.waiting = 0 THEN excluded.head ELSE k.head END,
           waiting = k.waiting + excluded.waiting
                     + CASE WHEN k.head IS NULL AND k.waiting = 0 THEN 0 ELSE 1 END
    RETURNING subscription_id, key, head
),
fanned AS (
    SELECT m.event_id, m.subscription_id, m.ordering_key,
           m.ordering_key IS NULL OR k.head = m.event_id AS head
      FROM matched m
      LEFT JOIN keys k ON k.subscription_id = m.subscription_id AND k.key = m.ordering_key
),
ranked AS (
    SELECT f.*,
           f.head AND row_number() OVER (PARTITION BY f.subscription_id, f.head
                                         ORDER BY f.event_id) <= coalesce(r.n, $5) AS claim
      FROM fanned f
      LEFT JOIN room r ON r.subscription_id = f.subscription_id
),
inserted AS (
    INSERT INTO notifier.deliveries
           (event_id, subscription_id, ordering_key, status, attempts, next_attempt_at)
    SELECT event_id, subscription_id, ordering_key,
           CASE WHEN claim THEN 'in_flight' ELSE 'pending' END,
           CASE WHEN claim THEN 1 ELSE 0 END,
           CASE WHEN claim THEN now() + make_interval(secs => $2)
                WHEN head THEN now()
                ELSE 'infinity' END
      FROM ranked
        ON CONFLICT (event_id, subscription_id) DO NOTHING
    RETURNING id, event_id, subscription_id, status, attempts, schedule_offset, ordering_key
),
freed AS (
    -- Keys whose head finished while others wait: the earliest waiting becomes the head.
    -- The key's row is locked, so that a key gets one new head whoever else claims at
    -- the same time, and so is the delivery made head: it is read as it is now, not as
    -- this statement's snapshot saw it (another daemon may have promoted, sent and
    -- settled it since), and the one that no longer waits is passed over for the next.
    -- A key whose waiting deliveries this statement cannot see yet is left for the next.
    UPDATE notifier.ordering_keys k
       SET head = n.event_id, waiting = k.waiting - 1
      FROM (SELECT f.subscription_id, f.key
              FROM notifier.ordering_keys f
              JOIN notifier.subscriptions s ON s.id = f.subscription_id AND s.enabled
             WHERE f.head IS NULL AND f.waiting > 0
             LIMIT $6
               FOR UPDATE OF f SKIP LOCKED) AS l
     CROSS JOIN LATERAL (
           SELECT w.event_id FROM notifier.deliveries w
            WHERE w.subscription_id = l.subscription_id AND w.ordering_key = l.key
              AND w.status = 'pending' AND w.next_attempt_at = 'infinity'
            ORDER BY w.event_id
            LIMIT 1
              FOR UPDATE) AS n
     WHERE k.subscription_id = l.subscription_id AND k.key = l.key AND k.head IS NULL
    RETURNING k.subscription_id, k.key, k.head
),
promoted AS (
    UPDATE notifier.deliveries d
       SET status = 'in_flight',
           attempts = d.attempts + 1,
           next_attempt_at = now() + make_interval(secs => $2),
           updated_at = now()
      FROM freed f
     WHERE d.subscription_id = f.subscription_id AND d.ordering_key = f.key
       AND d.event_id = f.head AND d.status = 'pending'
    RETURNING d.id, d.event_id, d.subscription_id, d.status, d.attempts, d.schedule_offset,
              d.ordering_key
),
due AS (
    UPDATE notifier.deliveries d
       SET status = 'in_flight',
           attempts = d.attempts + 1,
           next_attempt_at = now() + make_interval(secs => $2),
           updated_at = now()
     WHERE d.id IN (SELECT c.id
                      FROM notifier.deliveries c
                      JOIN notifier.subscriptions s ON s.id = c.subscription_id AND s.enabled
                     WHERE c.status IN ('pending', 'in_flight')
                       AND c.next_attempt_at <= now()
                       AND c.subscription_id NOT IN (SELECT subscription_id FROM room WHERE n <= 0)
                       -- Ordered: only its key's head (anything else due is a mistake to
                       -- wait out, never to send out of order).
                       AND notifier.is_key_head(c.subscription_id, c.ordering_key, c.event_id)
                     ORDER BY c.next_attempt_at
                     LIMIT $6
                       FOR UPDATE OF c SKIP LOCKED)
    RETURNING d.id, d.event_id, d.subscription_id, d.status, d.attempts, d.schedule_offset,
              d.ordering_key
),
claimed AS (
    SELECT id, event_id, subscription_id, attempts, schedule_offset, ordering_key
      FROM inserted WHERE status = 'in_flight'
    UNION ALL
    SELECT id, event_id, subscription_id, attempts, schedule_offset, ordering_key FROM promoted
    UNION ALL
    SELECT id, event_id, subscription_id, attempts, schedule_offset, ordering_key FROM due
),
claimed_events AS (
    SELECT c.id, c.attempts, c.schedule_offset, c.subscription_id, c.ordering_key, e.uid,
           e.type, e.created_at, e.data, e.previous, e.table_schema, e.table_name,
           e.traceparent, e.tracestate
      FROM claimed c
      JOIN notifier.events e ON e.id = c.event_id
),
sources AS (
    -- Each source table's timestamptz columns, looked up once per batch.
    SELECT table_schema, table_name,
           notifier.timestamptz_columns(table_schema, table_name) AS columns
      FROM claimed_events
     GROUP BY table_schema, table_name
),
disarmed AS (
    UPDATE notifier.doorbell SET armed = false
     WHERE armed AND $7::boolean
       AND (EXISTS (SELECT 1 FROM queued) OR EXISTS (SELECT 1 FROM due)
            OR EXISTS (SELECT 1 FROM promoted))
)
SELECT stats.fanned_events,
       c.id AS delivery_id, c.attempts, c.schedule_offset, c.subscription_id,
       c.uid AS event_uid, c.type AS event_type, c.created_at AS event_created_at,
       notifier.contract_timestamps(c.data, src.columns)::text AS data,
       notifier.contract_timestamps(c.previous, src.columns)::text AS previous,
       s.url AS target, s.secret,
       CASE WHEN s.previous_secret_expires_at > now() THEN s.previous_secret END AS previous_secret,
       s.max_in_flight, s.headers::text AS headers, s.format, c.ordering_key,
       c.traceparent, c.tracestate
  FROM (SELECT count(*) AS fanned_events FROM queued) AS stats
  LEFT JOIN claimed_events c ON true
  LEFT JOIN sources src ON src.table_schema = c.table_schema AND src.table_name = c.table_name
  LEFT JOIN notifier.subscriptions s ON s.id = c.subscription_id;

-- name: settle
-- Record a batch of attempt outcomes. A row is updated only while this holder's claim
-- is current (same attempts count, still in_flight); the attempt is logged either way,
-- once: the same batch sent again (its first COMMIT's answer was lost) changes nothing.
-- Each subscription's health moves with its outcomes: a success ends a run of failures;
-- a healthy subscription's last_success_at is refreshed at most once a second, so busy
-- endpoints do not rewrite their subscription row on every batch.
WITH outcome AS (
    SELECT *
      FROM unnest($1::bigint[], $2::int[], $3::text[], $4::float8[], $5::text[], $6::text[],
                  $7::timestamptz[], $8::float8[], $9::text[])
        AS o (delivery_id, attempt, status, retry_in, outcome, error,
              started_at, duration_ms, detail)
),
settled AS (
    UPDATE notifier.deliveries d
       SET status = o.status,
           next_attempt_at = CASE WHEN o.status = 'pending'
                                  THEN now() + make_interval(secs => o.retry_in)
                                  ELSE d.next_attempt_at END,
           last_attempt_at = o.started_at,
           last_outcome = o.outcome,
           last_error = o.error,
           completed_at = CASE WHEN o.status IN ('succeeded', 'dead') THEN now() END,
           updated_at = now()
      FROM outcome o
     WHERE d.id = o.delivery_id AND d.attempts = o.attempt AND d.status = 'in_flight'
    RETURNING d.subscription_id, o.status = 'succeeded' AS ok, o.started_at, o.status,
              o.error, d.ordering_key, d.event_id
),
freeing AS (
    -- A head that succeeded or died frees its key; the next claim picks its next head.
    -- Its key's row is locked first, in key order, as the claim locks them.
    SELECT k.subscription_id, k.key
      FROM notifier.ordering_keys k
      JOIN settled f
        ON k.subscription_id = f.subscription_id AND k.key = f.ordering_key
       AND k.head = f.event_id
     WHERE f.status IN ('succeeded', 'dead')
     ORDER BY k.subscription_id, k.key
       FOR UPDATE OF k
),
freed AS (
    UPDATE notifier.ordering_keys k
       SET head = NULL
      FROM freeing f
     WHERE k.subscription_id = f.subscription_id AND k.key = f.key
    RETURNING k.waiting
),
health AS (
    SELECT subscription_id, bool_or(ok) AS ok, count(*) FILTER (WHERE NOT ok) AS failures,
           min(started_at) FILTER (WHERE NOT ok) AS first_failure,
           max(started_at) FILTER (WHERE NOT ok) AS last_failure,
           (array_agg(error ORDER BY started_at DESC) FILTER (WHERE NOT ok))[1] AS last_error
      FROM settled
     GROUP BY subscription_id
),
healthy AS (
    UPDATE notifier.subscriptions s
       SET last_success_at = now(),
           failing_since = NULL,
           consecutive_failures = 0,
           last_failure_at = coalesce(h.last_failure, s.last_failure_at),
           last_error = coalesce(h.last_error, s.last_error)
      FROM health h
     WHERE s.id = h.subscription_id AND h.ok
       AND (s.failing_since IS NOT NULL OR s.consecutive_failures > 0
            OR s.last_success_at IS NULL OR s.last_success_at < now() - interval '1 second'
            OR h.failures > 0)
),
failing AS (
    UPDATE notifier.subscriptions s
       SET failing_since = coalesce(s.failing_since, h.first_failure),
           last_failure_at = h.last_failure,
           last_error = h.last_error,
           consecutive_failures = s.consecutive_failures + h.failures
      FROM health h
     WHERE s.id = h.subscription_id AND NOT h.ok
),
live AS (
    -- Deliveries whose subscription was deleted meanwhile are gone: skip their log rows.
    SELECT id FROM notifier.deliveries WHERE id = ANY ($1::bigint[]) FOR KEY SHARE
)
INSERT INTO notifier.delivery_attempts
       (delivery_id, attempt, started_at, duration_ms, outcome, error, detail)
SELECT o.delivery_id, o.attempt, o.started_at, o.duration_ms, o.outcome, o.error, o.detail
  FROM outcome o
 WHERE o.delivery_id IN (SELECT id FROM live)
    ON CONFLICT (delivery_id, attempt) DO NOTHING;

-- name: extend_leases
UPDATE notifier.deliveries d
   SET next_attempt_at = now() + make_interval(secs => $3)
  FROM unnest($1::bigint[], $2::int[]) AS h (id, attempt)
 WHERE d.id = h.id AND d.attempts = h.attempt AND d.status = 'in_flight';

-- name: release
-- Hand back claimed deliveries that were never attempted: due now, attempt not counted.
UPDATE notifier.deliveries d
   SET status = 'pending', attempts = d.attempts - 1, next_attempt_at = now(), updated_at = now()
  FROM unnest($1::bigint[], $2::int[]) AS h (id, attempt)
 WHERE d.id = h.id AND d.attempts = h.attempt AND d.status = 'in_flight';

-- name: arm
UPDATE notifier.doorbell SET armed = true WHERE NOT armed;

-- name: recheck
-- After arming: is there work (events to fan out, a freed key with deliveries waiting),
-- when is the next retry due (seconds, NULL if none), and
-- is any other transaction in progress (it may have read the bell before it was armed
-- and will commit without ringing). $1: subscriptions with no room, not counted as work.
SELECT EXISTS (SELECT 1 FROM notifier.event_queue)
       OR EXISTS (SELECT 1 FROM notifier.ordering_keys k
                   WHERE k.head IS NULL AND k.waiting > 0
                     AND EXISTS (SELECT 1 FROM notifier.deliveries w
                                  WHERE w.subscription_id = k.subscription_id
                                    AND w.ordering_key = k.key AND w.status = 'pending'
                                    AND w.next_attempt_at = 'infinity')) AS queued,
       (SELECT extract(epoch FROM c.next_attempt_at - now())::float8
          FROM notifier.deliveries c
          JOIN notifier.subscriptions s ON s.id = c.subscription_id AND s.enabled
         WHERE c.status IN ('pending', 'in_flight')
           AND c.next_attempt_at < 'infinity'
           AND c.subscription_id <> ALL ($1::bigint[])
         ORDER BY c.next_attempt_at
         LIMIT 1) AS next_due_in,
       EXISTS (SELECT 1 FROM pg_snapshot_xip(pg_current_snapshot())) AS writers_in_progress;

-- name: disable_subscription
UPDATE notifier.subscriptions
   SET enabled = false, disabled_reason = $2, disabled_at = now(), updated_at = now()
 WHERE id = $1 AND enabled;

-- name: disable_failing
-- Subscriptions failing with no success for longer than $1 seconds; returns the disabled.
UPDATE notifier.subscriptions
   SET enabled = false,
       disabled_reason = 'failing with no success since '
                         || to_char(failing_since AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
                         || ' (' || consecutive_failures || ' failed attempts)',
       disabled_at = now(),
       updated_at = now()
 WHERE enabled AND failing_since < now() - make_interval(secs => $1)
RETURNING id, disabled_reason;

-- name: oldest_deliverable
-- Seconds the oldest deliverable work has waited while due: an event not yet fanned out,
-- or a delivery of an enabled subscription that is due (or whose lease expired). Work
-- that is merely scheduled for later does not count; 0 when nothing is waiting.
SELECT greatest(
           0,
           extract(epoch FROM now() - (
               SELECT e.created_at FROM notifier.event_queue q
                 JOIN notifier.events e ON e.id = q.event_id ORDER BY q.event_id LIMIT 1)),
           extract(epoch FROM now() - (
               SELECT d.next_attempt_at FROM notifier.deliveries d
                 JOIN notifier.subscriptions s ON s.id = d.subscription_id AND s.enabled
                WHERE d.status IN ('pending', 'in_flight') AND d.next_attempt_at <= now()
                ORDER BY d.next_attempt_at LIMIT 1)))::float8;

-- name: backlog
-- Work not yet delivered: events not fanned out, and deliveries pending or in flight;
-- with the age in seconds of the oldest of them.
SELECT (SELECT count(*) FROM notifier.event_queue)
     + (SELECT count(*) FROM notifier.deliveries WHERE status IN ('pending', 'in_flight')) AS pending,
       extract(epoch FROM now() - least(
           (SELECT e.created_at FROM notifier.event_queue q
              JOIN notifier.events e ON e.id = q.event_id ORDER BY q.event_id LIMIT 1),
           (SELECT min(e.created_at) FROM notifier.deliveries d
              JOIN notifier.events e ON e.id = d.event_id
             WHERE d.status IN ('pending', 'in_flight'))))::float8 AS oldest_age_seconds;

-- name: ping
SELECT 1;

-- name: unvacuumed
-- Whether autovacuum is off for the server, and the notifier tables it is off for.
SELECT NOT current_setting('autovacuum')::boolean AS server_off,
       coalesce(array_agg(c.relname::text ORDER BY c.relname)
                    FILTER (WHERE EXISTS (SELECT 1 FROM pg_options_to_table(c.reloptions) o
                                           WHERE o.option_name = 'autovacuum_enabled'
                                             AND NOT o.option_value::boolean)),
                '{}') AS tables_off
  FROM pg_class c
 WHERE c.relnamespace = 'notifier'::regnamespace AND c.relkind = 'r';

-- name: schema_version
SELECT coalesce(max(version), 0) FROM notifier.schema_migrations;
