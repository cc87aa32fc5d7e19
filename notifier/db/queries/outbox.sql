-- name: claim
-- One round trip per round: move each enabled subscription's position past the events
-- it has room for, and claim them (a batch per unordered subscription; a delivery per
-- event on an ordered one), with batches whose holder's lease ran out, due retries and
-- expired leases of deliveries.
--   $1 events per subscription   $2 lease seconds   $3/$4 room left per subscription
--   (ids, counts; a subscription not listed has room $5)   $6 due deliveries and
--   expired batches to claim   $7 how much work found disarms the doorbell: below it,
--   the doorbell stays as it is, so a daemon taking events one by one leaves it armed
--   and parks after a single statement.
-- An ordered subscription's events beyond its room are inserted as pending, due now. A
-- delivery an operator's replay created first is left alone (ON CONFLICT). For ordered
-- subscriptions, only a key's head may go: the rest wait behind it (sql/014), and keys
-- whose head finished get their next one as head here.
-- Always returns one row at least: fanned_events, then the claimed work (or NULLs).
-- claim_new returns the same columns, built the same way: a change to one is one to both.
WITH cut AS MATERIALIZED (
    -- This statement's snapshot: every event a position moves past is visible here.
    -- The claim commits without waiting for its WAL to reach disk (the latency of every
    -- event): a crash of the server may lose the last claims, whose events are then
    -- claimed and sent again (at least once). Outcomes are recorded durably, and each is
    -- fenced so that it applies only to the very claim it answers (see settle).
    SELECT pg_current_snapshot() AS snapshot,
           set_config('synchronous_commit', 'off', true) AS commit_mode
),
room AS (
    SELECT * FROM unnest($3::bigint[], $4::int[]) AS r (subscription_id, n)
),
taken AS MATERIALIZED (
    -- Positions are moved in subscription order, one daemon at a time each (a position
    -- another daemon holds is skipped, never waited for).
    SELECT w.subscription_id, w.ordering_key, w.wanted,
           notifier.advance(w.subscription_id, w.wanted, w.snapshot) AS ids
      FROM (SELECT s.id AS subscription_id, s.ordering_key, cut.snapshot,
                   CASE WHEN s.ordering_key IS NULL THEN least($1, coalesce(r.n, $5))
                        ELSE $1 END AS wanted
              FROM notifier.subscriptions s
              JOIN notifier.positions p ON p.subscription_id = s.id
             CROSS JOIN cut
              LEFT JOIN room r ON r.subscription_id = s.id
             WHERE s.enabled AND notifier.behind(p)
             ORDER BY s.id) AS w
),
batched AS (
    INSERT INTO notifier.batches (subscription_id, event_ids, lease_expires_at)
    SELECT subscription_id, ids, now() + make_interval(secs => $2)
      FROM taken
     WHERE ordering_key IS NULL AND cardinality(ids) > 0
    RETURNING id, subscription_id, event_ids, attempt, claimed_at
),
expired AS (
    -- Batches whose holder died: claimed again whole, under a new fencing token. One
    -- whose events were all deleted by hand meanwhile is recorded at once, empty.
    UPDATE notifier.batches b
       SET attempt = b.attempt + 1,
           lease_expires_at = CASE WHEN c.live THEN now() + make_interval(secs => $2) END,
           finished_at = CASE WHEN NOT c.live THEN now() END,
           succeeded = CASE WHEN NOT c.live THEN 0 END
      FROM (SELECT c.id,
                   EXISTS (SELECT 1 FROM notifier.events e WHERE e.id = ANY (c.event_ids)) AS live
              FROM notifier.batches c
              JOIN notifier.subscriptions s ON s.id = c.subscription_id AND s.enabled
             WHERE c.finished_at IS NULL AND c.lease_expires_at <= now()
               AND c.subscription_id NOT IN (SELECT subscription_id FROM room WHERE n <= 0)
             ORDER BY c.lease_expires_at
             LIMIT $6
               FOR UPDATE OF c SKIP LOCKED) AS c
     WHERE b.id = c.id
    RETURNING b.id, b.subscription_id, b.event_ids, b.attempt, b.claimed_at
),
batch AS MATERIALIZED (
    -- The ordered subscriptions' new events, fetched once, by primary key.
    SELECT t.subscription_id, e.id, notifier.delivery_key(e.data, t.ordering_key) AS ordering_key
      FROM taken t
     CROSS JOIN LATERAL unnest(t.ids) AS i (event_id)
      JOIN notifier.events e ON e.id = i.event_id
     WHERE t.ordering_key IS NOT NULL
),
matched AS (
    SELECT id AS event_id, subscription_id, ordering_key FROM batch
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
    -- In this order, which is the order the parts above run in (and take their locks).
    -- fresh: one of this round's new events (counted in taken already).
    SELECT id, NULL::bigint AS batch_id, NULL::timestamptz AS claimed_at, event_id,
           subscription_id, attempts, schedule_offset, ordering_key, true AS fresh
      FROM inserted WHERE status = 'in_flight'
    UNION ALL
    SELECT id, NULL, NULL, event_id, subscription_id, attempts, schedule_offset, ordering_key,
           false
      FROM promoted
    UNION ALL
    SELECT id, NULL, NULL, event_id, subscription_id, attempts, schedule_offset, ordering_key,
           false
      FROM due
    UNION ALL
    -- A batch's events in its order, which is the order they are recorded in.
    SELECT NULL, b.id, b.claimed_at, i.event_id, b.subscription_id, b.attempt, 0, NULL, b.fresh
      FROM (SELECT *, true AS fresh FROM batched UNION ALL SELECT *, false FROM expired) AS b
     CROSS JOIN LATERAL unnest(b.event_ids) WITH ORDINALITY AS i (event_id, n)
),
claimed_events AS (
    SELECT c.id, c.batch_id, c.claimed_at, c.event_id, c.attempts, c.schedule_offset, c.subscription_id,
           c.ordering_key, e.uid, e.type, e.created_at, e.data, e.previous, e.table_schema,
           e.table_name, e.traceparent, e.tracestate
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
found AS (
    -- How much work this round found, and whether a position still has events for which
    -- it had no room or batch left (claim again at once: no doorbell rings for those).
    -- Read from taken and claimed only, so that the parts of claimed run in its order.
    SELECT t.fanned_events, t.fanned_events + c.others AS work, t.more
      FROM (SELECT coalesce(sum(cardinality(ids)), 0)::int AS fanned_events,
                   coalesce(bool_or(wanted > 0 AND cardinality(ids) >= wanted), false) AS more
              FROM taken) AS t,
           (SELECT count(*) FILTER (WHERE NOT fresh)::int AS others FROM claimed) AS c
),
disarmed AS (
    -- Busy: writers stop ringing while this daemon keeps claiming.
    UPDATE notifier.doorbell SET armed = false
     WHERE armed AND (SELECT work FROM found) >= $7
    RETURNING 1
),
stats AS (
    -- Whether the doorbell is armed after this round; when it is and the round found
    -- little, the daemon parks on it until the next retry or batch lease falls due (in
    -- seconds, NULL if none; what this round claimed is not counted), and whether another
    -- transaction is in progress (if the doorbell was armed just now, it may have read it
    -- before and will commit without ringing).
    SELECT f.fanned_events, f.work, f.more,
           coalesce(d.armed, true) AND NOT EXISTS (SELECT 1 FROM disarmed) AS armed,
           CASE WHEN coalesce(d.armed, true) AND f.work < $7 AND NOT f.more THEN
               (SELECT extract(epoch FROM min(next.due) - now())::float8
                  FROM ((SELECT c.next_attempt_at AS due
                           FROM notifier.deliveries c
                           JOIN notifier.subscriptions s ON s.id = c.subscription_id AND s.enabled
                          WHERE c.status IN ('pending', 'in_flight')
                            AND c.next_attempt_at < 'infinity'
                            AND c.subscription_id NOT IN (SELECT subscription_id FROM room WHERE n <= 0)
                            AND c.id NOT IN (SELECT id FROM due)
                            AND c.id NOT IN (SELECT id FROM promoted)
                          ORDER BY c.next_attempt_at
                          LIMIT 1)
                        UNION ALL
                        (SELECT b.lease_expires_at
                           FROM notifier.batches b
                           JOIN notifier.subscriptions s ON s.id = b.subscription_id AND s.enabled
                          WHERE b.finished_at IS NULL
                            AND b.subscription_id NOT IN (SELECT subscription_id FROM room WHERE n <= 0)
                            AND b.id NOT IN (SELECT id FROM expired)
                          ORDER BY b.lease_expires_at
                          LIMIT 1)) AS next)
           END AS next_due_in,
           EXISTS (SELECT 1 FROM cut CROSS JOIN LATERAL pg_snapshot_xip(cut.snapshot)) AS writers_in_progress,
           EXISTS (SELECT 1 FROM notifier.subscriptions
                    WHERE enabled AND ordering_key IS NOT NULL) AS ordered
      FROM found f
      LEFT JOIN notifier.doorbell d ON true
)
SELECT stats.fanned_events, stats.work, stats.more, stats.armed, stats.next_due_in,
       stats.writers_in_progress, stats.ordered,
       c.id AS delivery_id, c.batch_id, c.claimed_at AS batch_claimed_at, c.event_id, c.attempts, c.schedule_offset, c.subscription_id,
       c.uid AS event_uid, c.type AS event_type, c.created_at AS event_created_at,
       notifier.contract_timestamps(c.data, src.columns)::text AS data,
       notifier.contract_timestamps(c.previous, src.columns)::text AS previous,
       s.url AS target, s.secret,
       CASE WHEN s.previous_secret_expires_at > now() THEN s.previous_secret END AS previous_secret,
       s.max_in_flight, s.headers::text AS headers, s.format, c.ordering_key,
       c.traceparent, c.tracestate
  FROM stats
  LEFT JOIN claimed_events c ON true
  LEFT JOIN sources src ON src.table_schema = c.table_schema AND src.table_name = c.table_name
  LEFT JOIN notifier.subscriptions s ON s.id = c.subscription_id;

-- name: claim_new
-- The claim of new events alone, for a daemon that knows of no ordered subscription and
-- has no retry or lease due: `claim` without its parts for those, which cost a third of
-- a claim of one event even when they find nothing (planning and starting them, not
-- running them). $1-$5 as for `claim`, $6 as its $7; the same columns, next_due_in
-- always NULL (it does not look). `ordered`: an enabled ordered subscription exists,
-- whose events `claim` takes.
WITH cut AS MATERIALIZED (
    SELECT pg_current_snapshot() AS snapshot,
           set_config('synchronous_commit', 'off', true) AS commit_mode
),
room AS (
    SELECT * FROM unnest($3::bigint[], $4::int[]) AS r (subscription_id, n)
),
taken AS MATERIALIZED (
    SELECT w.subscription_id, w.wanted,
           notifier.advance(w.subscription_id, w.wanted, w.snapshot) AS ids
      FROM (SELECT s.id AS subscription_id, cut.snapshot, least($1, coalesce(r.n, $5)) AS wanted
              FROM notifier.subscriptions s
              JOIN notifier.positions p ON p.subscription_id = s.id
             CROSS JOIN cut
              LEFT JOIN room r ON r.subscription_id = s.id
             WHERE s.enabled AND s.ordering_key IS NULL AND notifier.behind(p)
             ORDER BY s.id) AS w
),
batched AS (
    INSERT INTO notifier.batches (subscription_id, event_ids, lease_expires_at)
    SELECT subscription_id, ids, now() + make_interval(secs => $2)
      FROM taken
     WHERE cardinality(ids) > 0
    RETURNING id, subscription_id, event_ids, attempt, claimed_at
),
claimed_events AS (
    SELECT NULL::bigint AS id, b.id AS batch_id, b.claimed_at, i.event_id, b.attempt AS attempts,
           0 AS schedule_offset, b.subscription_id, NULL::text AS ordering_key, e.uid, e.type,
           e.created_at, e.data, e.previous, e.table_schema, e.table_name, e.traceparent,
           e.tracestate
      FROM batched b
     CROSS JOIN LATERAL unnest(b.event_ids) WITH ORDINALITY AS i (event_id, n)
      JOIN notifier.events e ON e.id = i.event_id
),
sources AS (
    SELECT table_schema, table_name,
           notifier.timestamptz_columns(table_schema, table_name) AS columns
      FROM claimed_events
     GROUP BY table_schema, table_name
),
found AS (
    SELECT coalesce(sum(cardinality(ids)), 0)::int AS work,
           coalesce(bool_or(wanted > 0 AND cardinality(ids) >= wanted), false) AS more
      FROM taken
),
disarmed AS (
    UPDATE notifier.doorbell SET armed = false
     WHERE armed AND (SELECT work FROM found) >= $6
    RETURNING 1
),
stats AS (
    SELECT f.work AS fanned_events, f.work, f.more,
           coalesce(d.armed, true) AND NOT EXISTS (SELECT 1 FROM disarmed) AS armed,
           NULL::float8 AS next_due_in,
           EXISTS (SELECT 1 FROM cut CROSS JOIN LATERAL pg_snapshot_xip(cut.snapshot)) AS writers_in_progress,
           EXISTS (SELECT 1 FROM notifier.subscriptions
                    WHERE enabled AND ordering_key IS NOT NULL) AS ordered
      FROM found f
      LEFT JOIN notifier.doorbell d ON true
)
SELECT stats.fanned_events, stats.work, stats.more, stats.armed, stats.next_due_in,
       stats.writers_in_progress, stats.ordered,
       c.id AS delivery_id, c.batch_id, c.claimed_at AS batch_claimed_at, c.event_id, c.attempts, c.schedule_offset, c.subscription_id,
       c.uid AS event_uid, c.type AS event_type, c.created_at AS event_created_at,
       notifier.contract_timestamps(c.data, src.columns)::text AS data,
       notifier.contract_timestamps(c.previous, src.columns)::text AS previous,
       s.url AS target, s.secret,
       CASE WHEN s.previous_secret_expires_at > now() THEN s.previous_secret END AS previous_secret,
       s.max_in_flight, s.headers::text AS headers, s.format, c.ordering_key,
       c.traceparent, c.tracestate
  FROM stats
  LEFT JOIN claimed_events c ON true
  LEFT JOIN sources src ON src.table_schema = c.table_schema AND src.table_name = c.table_name
  LEFT JOIN notifier.subscriptions s ON s.id = c.subscription_id;

-- name: settle
-- Record a run of attempt outcomes: of deliveries, and of whole batches.
-- A delivery is updated only while this holder's claim is current (same event and
-- subscription, same attempts count, still in_flight); the attempt is logged either way,
-- once: the same run sent again (its first COMMIT's answer was lost) changes nothing. A
-- batch is recorded once, by the holder of its current claim (same claim count, same
-- claimed_at: after a server crash lost the last claims, a batch or delivery id may be
-- given again to other work, which an outcome of the lost claim must not touch), with
-- an outcome for each of its events: a success stays
-- in the batch; any other outcome makes a delivery row of its own, which is retried, dead,
-- or (released: never attempted, at shutdown) due now.
-- Each subscription's health moves with its outcomes: a success ends a run of failures;
-- a healthy subscription's last_success_at is refreshed at most once a second, so busy
-- endpoints do not rewrite their subscription row on every run.
WITH outcome AS (
    SELECT *
      FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::int[], $5::text[],
                  $6::float8[], $7::text[], $8::text[], $9::timestamptz[], $10::float8[],
                  $11::text[], $12::bigint[], $13::timestamptz[])
           WITH ORDINALITY
        AS o (delivery_id, batch_id, event_id, attempt, status, retry_in, outcome, error,
              started_at, duration_ms, detail, subscription_id, claimed_at, n)
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
       AND d.event_id = o.event_id AND d.subscription_id = o.subscription_id
    RETURNING d.subscription_id, o.status = 'succeeded' AS ok, o.started_at, o.status,
              o.error, d.ordering_key, d.event_id
),
held AS (
    -- The batches recorded here, as this holder's claim of each (its fencing token).
    SELECT b.id, b.event_ids
      FROM notifier.batches b
     WHERE b.id = ANY (ARRAY(SELECT batch_id FROM outcome WHERE batch_id IS NOT NULL))
       AND b.finished_at IS NULL
       AND (b.id, b.attempt, b.claimed_at) IN (SELECT batch_id, attempt, claimed_at FROM outcome)
       FOR UPDATE
),
aligned AS (
    -- Each success in its event's place in the batch (an event deleted by hand meanwhile
    -- has no outcome, and keeps its place empty).
    SELECT h.id,
           array_agg(CASE WHEN o.status = 'succeeded' THEN o.started_at END ORDER BY i.n) AS sent_at,
           array_agg(CASE WHEN o.status = 'succeeded' THEN o.duration_ms END ORDER BY i.n)::real[] AS durations_ms,
           array_agg(CASE WHEN o.status = 'succeeded' THEN o.outcome END ORDER BY i.n) AS outcomes,
           count(*) FILTER (WHERE o.status = 'succeeded')::int AS succeeded
      FROM held h
     CROSS JOIN LATERAL unnest(h.event_ids) WITH ORDINALITY AS i (event_id, n)
      LEFT JOIN outcome o ON o.batch_id = h.id AND o.event_id = i.event_id
     GROUP BY h.id
),
recorded AS (
    UPDATE notifier.batches b
       SET finished_at = now(), lease_expires_at = NULL, sent_at = a.sent_at,
           durations_ms = a.durations_ms, outcomes = a.outcomes, succeeded = a.succeeded
      FROM aligned a
     WHERE b.id = a.id
    RETURNING b.id, b.subscription_id
),
batch_outcome AS (
    SELECT o.*
      FROM outcome o
      JOIN recorded r ON r.id = o.batch_id
),
failed AS (
    -- A replay may have made the event's delivery meanwhile: that one goes on as it is.
    INSERT INTO notifier.deliveries
           (event_id, subscription_id, status, attempts, next_attempt_at, last_attempt_at,
            last_outcome, last_error, completed_at)
    SELECT event_id, subscription_id,
           CASE WHEN status = 'released' THEN 'pending' ELSE status END,
           CASE WHEN status = 'released' THEN attempt - 1 ELSE attempt END,
           CASE WHEN status = 'pending' THEN now() + make_interval(secs => retry_in)
                ELSE now() END,
           CASE WHEN status <> 'released' THEN started_at END,
           CASE WHEN status <> 'released' THEN outcome END,
           CASE WHEN status <> 'released' THEN error END,
           CASE WHEN status = 'dead' THEN now() END
      FROM batch_outcome
     WHERE status <> 'succeeded'
        ON CONFLICT (event_id, subscription_id) DO NOTHING
    RETURNING id, event_id, subscription_id, attempts
),
attempted AS (
    SELECT subscription_id, status = 'succeeded' AS ok, started_at, status, error
      FROM settled
    UNION ALL
    SELECT subscription_id, status = 'succeeded', started_at, status, error
      FROM batch_outcome WHERE status <> 'released'
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
      FROM attempted
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
    SELECT id FROM notifier.deliveries
     WHERE id = ANY (ARRAY(SELECT delivery_id FROM outcome WHERE delivery_id IS NOT NULL))
       AND (id, event_id, subscription_id)
           IN (SELECT delivery_id, event_id, subscription_id FROM outcome)
       FOR KEY SHARE
)
INSERT INTO notifier.delivery_attempts
       (delivery_id, attempt, started_at, duration_ms, outcome, error, detail)
SELECT o.delivery_id, o.attempt, o.started_at, o.duration_ms, o.outcome, o.error, o.detail
  FROM outcome o
 WHERE o.delivery_id IN (SELECT id FROM live)
UNION ALL
-- A batch's failed attempt, logged under the delivery it now has.
SELECT f.id, f.attempts, o.started_at, o.duration_ms, o.outcome, o.error, o.detail
  FROM failed f
  JOIN batch_outcome o ON o.event_id = f.event_id AND o.subscription_id = f.subscription_id
 WHERE o.status IN ('pending', 'dead')
    ON CONFLICT (delivery_id, attempt) DO NOTHING;

-- name: extend_leases
-- Push back the leases of held deliveries ($1/$2: ids, attempts) and batches ($4/$5).
WITH deliveries AS (
    UPDATE notifier.deliveries d
       SET next_attempt_at = now() + make_interval(secs => $3)
      FROM unnest($1::bigint[], $2::int[]) AS h (id, attempt)
     WHERE d.id = h.id AND d.attempts = h.attempt AND d.status = 'in_flight'
)
UPDATE notifier.batches b
   SET lease_expires_at = now() + make_interval(secs => $3)
  FROM unnest($4::bigint[], $5::int[]) AS h (id, attempt)
 WHERE b.id = h.id AND b.attempt = h.attempt AND b.finished_at IS NULL;

-- name: release
-- Hand back claimed deliveries that were never attempted: due now, attempt not counted.
UPDATE notifier.deliveries d
   SET status = 'pending', attempts = d.attempts - 1, next_attempt_at = now(), updated_at = now()
  FROM unnest($1::bigint[], $2::int[]) AS h (id, attempt)
 WHERE d.id = h.id AND d.attempts = h.attempt AND d.status = 'in_flight';

-- name: arm
UPDATE notifier.doorbell SET armed = true WHERE NOT armed;

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
-- Seconds the oldest deliverable work has waited while due: an event an enabled
-- subscription's position has not moved past yet, a batch whose lease expired, or a
-- delivery of an enabled subscription that is due (or whose lease expired). Work that is
-- merely scheduled for later does not count; 0 when nothing is waiting.
SELECT greatest(
           0,
           extract(epoch FROM now() - (
               SELECT min(e.created_at)
                 FROM notifier.positions p
                 JOIN notifier.subscriptions s ON s.id = p.subscription_id AND s.enabled
                CROSS JOIN LATERAL (
                      SELECT e.created_at FROM notifier.events e
                       WHERE (e.xid >= pg_snapshot_xmin(p.since))
                         AND NOT notifier.passed(p, e.xid, e.id)
                       ORDER BY e.xid LIMIT 1) AS e)),
           extract(epoch FROM now() - (
               SELECT min(b.lease_expires_at) FROM notifier.batches b
                 JOIN notifier.subscriptions s ON s.id = b.subscription_id AND s.enabled
                WHERE b.finished_at IS NULL AND b.lease_expires_at <= now())),
           extract(epoch FROM now() - (
               SELECT d.next_attempt_at FROM notifier.deliveries d
                 JOIN notifier.subscriptions s ON s.id = d.subscription_id AND s.enabled
                WHERE d.status IN ('pending', 'in_flight') AND d.next_attempt_at <= now()
                ORDER BY d.next_attempt_at LIMIT 1)))::float8;

-- name: backlog
-- Work not yet delivered: events enabled subscriptions' positions have not moved past,
-- events of batches not yet recorded, and deliveries pending or in flight; with the age
-- in seconds of the oldest of them.
WITH unclaimed AS (
    SELECT e.created_at
      FROM notifier.positions p
      JOIN notifier.subscriptions s ON s.id = p.subscription_id AND s.enabled
      JOIN notifier.events e
        ON e.xid >= pg_snapshot_xmin(p.since) AND NOT notifier.passed(p, e.xid, e.id)
),
open_batches AS (
    SELECT cardinality(event_ids) AS n, claimed_at FROM notifier.batches WHERE finished_at IS NULL
)
SELECT (SELECT count(*) FROM unclaimed)
     + (SELECT coalesce(sum(n), 0) FROM open_batches)
     + (SELECT count(*) FROM notifier.deliveries WHERE status IN ('pending', 'in_flight')) AS pending,
       extract(epoch FROM now() - least(
           (SELECT min(created_at) FROM unclaimed),
           (SELECT min(claimed_at) FROM open_batches),
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
