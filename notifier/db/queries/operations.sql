-- name: event
SELECT e.id, e.uid, e.type, e.table_schema, e.table_name, e.op,
       notifier.contract_timestamps(e.data, c.columns)::text AS data,
       notifier.contract_timestamps(e.previous, c.columns)::text AS previous, e.created_at,
       e.traceparent, e.tracestate,
       -- Not yet passed by every enabled subscription's position.
       EXISTS (SELECT 1 FROM notifier.positions p
                 JOIN notifier.subscriptions s ON s.id = p.subscription_id AND s.enabled
                WHERE NOT notifier.passed(p, e.xid, e.id)) AS queued
  FROM notifier.events e,
       LATERAL (SELECT notifier.timestamptz_columns(e.table_schema, e.table_name) AS columns) c
 WHERE e.uid = $1;

-- name: event_deliveries
-- Event $1's deliveries: its rows of its own, and its places in batches (in flight while
-- the batch is held; succeeded once recorded, where it has no row of its own).
SELECT d.id, NULL::bigint AS batch_id, d.subscription_id, d.status, d.attempts,
       d.next_attempt_at, d.last_attempt_at, d.last_outcome,
       notifier.http_status(d.last_outcome) AS last_status_code, d.last_error,
       d.completed_at, d.created_at, NULL::float8 AS duration_ms, e.uid AS event_uid
  FROM notifier.deliveries d JOIN notifier.events e ON e.id = d.event_id
 WHERE d.event_id = $1
UNION ALL
SELECT NULL, b.id, b.subscription_id,
       CASE WHEN b.finished_at IS NULL THEN 'in_flight' ELSE 'succeeded' END, b.attempt,
       b.lease_expires_at, b.sent_at[i.n], b.outcomes[i.n],
       notifier.http_status(b.outcomes[i.n]), NULL, b.finished_at, b.claimed_at,
       b.durations_ms[i.n], e.uid
  FROM notifier.batches b
 CROSS JOIN LATERAL (SELECT array_position(b.event_ids, $1) AS n) AS i
  JOIN notifier.events e ON e.id = $1
 WHERE notifier.batch_span(b.event_ids) @> $1::bigint AND i.n IS NOT NULL
   AND (b.finished_at IS NULL OR b.outcomes[i.n] IS NOT NULL)
 ORDER BY subscription_id, batch_id NULLS LAST;

-- name: attempts
SELECT delivery_id, attempt, started_at, duration_ms, outcome,
       notifier.http_status(outcome) AS status_code, error, detail
  FROM notifier.delivery_attempts
 WHERE delivery_id = ANY ($1::bigint[])
 ORDER BY delivery_id, attempt;

-- name: deliveries
-- Cursor paged by id: after $1, at most $5; each filter applies when not NULL.
SELECT d.*, notifier.http_status(d.last_outcome) AS last_status_code, e.uid AS event_uid
  FROM notifier.deliveries d JOIN notifier.events e ON e.id = d.event_id
 WHERE d.id > $1
   AND ($2::text IS NULL OR d.status = $2)
   AND ($3::bigint IS NULL OR d.subscription_id = $3)
   AND ($4::timestamptz IS NULL OR d.created_at >= $4)
 ORDER BY d.id
 LIMIT $5;

-- name: stats
SELECT s.id, s.enabled, s.disabled_reason, s.disabled_at, s.last_success_at,
       s.last_failure_at, s.last_error, s.failing_since, s.consecutive_failures,
       -- Rows of their own by status, and batches' events by their counts (a batch
       -- held: all in flight; recorded: its successes), not one by one.
       (SELECT coalesce(jsonb_object_agg(c.status, c.n), '{}')::text
          FROM (SELECT status, sum(n) AS n
                  FROM (SELECT status, count(*) AS n FROM notifier.deliveries
                         WHERE subscription_id = s.id GROUP BY status
                        UNION ALL
                        SELECT CASE WHEN finished_at IS NULL THEN 'in_flight' ELSE 'succeeded' END,
                               sum(coalesce(succeeded, cardinality(event_ids)))
                          FROM notifier.batches
                         WHERE subscription_id = s.id
                         GROUP BY finished_at IS NULL) AS u
                 GROUP BY status) AS c) AS counts,
       (SELECT count(*) FROM notifier.deliveries
         WHERE subscription_id = s.id AND status = 'pending'
           AND next_attempt_at = 'infinity') AS waiting,
       (SELECT count(*) FROM notifier.ordering_keys
         WHERE subscription_id = s.id AND head IS NOT NULL AND waiting > 0) AS keys_held_back
  FROM notifier.subscriptions s
 WHERE s.id = $1;

-- name: retry
-- Schedule one delivery again, due now, with the whole retry schedule ahead of it
-- (attempts, the fencing token, keeps counting). One being attempted is left alone. A
-- delivery of an ordered subscription that is not its key's head waits for its turn.
WITH target AS (
    SELECT d.id, d.status, d.subscription_id, d.ordering_key,
           d.status = 'pending' AND d.next_attempt_at = 'infinity' AS waiting,
           notifier.is_key_head(d.subscription_id, d.ordering_key, d.event_id) AS head
      FROM notifier.deliveries d WHERE d.id = $1 FOR UPDATE
),
retried AS (
    UPDATE notifier.deliveries d
       SET status = 'pending',
           next_attempt_at = CASE WHEN target.head THEN now() ELSE 'infinity' END,
           schedule_offset = d.attempts,
           completed_at = NULL, updated_at = now()
      FROM target
     WHERE d.id = target.id AND target.status <> 'in_flight'
    RETURNING d.id
),
counted AS (
    INSERT INTO notifier.ordering_keys AS k (subscription_id, key, waiting)
    SELECT subscription_id, ordering_key, 1 FROM target
     WHERE NOT head AND NOT waiting AND status <> 'in_flight'
        ON CONFLICT (subscription_id, key) DO UPDATE SET waiting = k.waiting + 1
)
SELECT target.status AS previous_status, EXISTS (SELECT 1 FROM retried) AS retried
  FROM target;

-- name: delivery
SELECT d.*, notifier.http_status(d.last_outcome) AS last_status_code, e.uid AS event_uid
  FROM notifier.deliveries d JOIN notifier.events e ON e.id = d.event_id
 WHERE d.id = $1;

-- name: subscription_exists
SELECT enabled FROM notifier.subscriptions WHERE id = $1;

-- name: schedule_batch
-- One batch of a recovery or a replay to subscription $1: the next $6 events (in uid
-- order, which is time order, through the uid index) after uid $2 (NULL: from the start
-- of the range) captured in [$3, $4) ($4 NULL: up to now). Each matching event that
-- was fanned out gets a delivery, due now; one that has a delivery already is reset
-- ('recover': when it is dead or failed; 'replay': never; 'replay_again': unless it is
-- being attempted). 'recover' skips events captured before the subscription existed.
-- An event the subscription's position has not passed yet is left to it; one a batch
-- holds, or delivered with success, counts as delivered ('replay_again': as being
-- attempted while its batch is held, else as one to send again).
WITH scan AS (
    SELECT id, uid, type, data, created_at, xid
      FROM notifier.events
     WHERE uid > coalesce($2::uuid, notifier.uuid_v7_floor($3::timestamptz - interval '1 millisecond'))
       AND ($4::timestamptz IS NULL OR uid < notifier.uuid_v7_floor($4 + interval '2 milliseconds'))
     ORDER BY uid
     LIMIT $6
),
candidates AS (
    SELECT scan.id, notifier.delivery_key(scan.data, s.ordering_key) AS ordering_key
      FROM scan, notifier.subscriptions s
     WHERE s.id = $1
       AND scan.created_at >= $3::timestamptz
       AND ($4::timestamptz IS NULL OR scan.created_at < $4)
       AND notifier.type_matches(scan.type, s.event_types)
       AND notifier.row_matches(scan.data, s.filter)
       AND ($5::text <> 'recover' OR s.created_at <= scan.created_at)
       -- A disabled subscription's position moves to the present when it is enabled.
       AND (NOT s.enabled OR (SELECT notifier.passed(p, scan.xid, scan.id)
                                FROM notifier.positions p WHERE p.subscription_id = $1))
       AND NOT EXISTS (
               SELECT 1 FROM notifier.batches b
                WHERE notifier.batch_span(b.event_ids) @> scan.id
                  AND b.subscription_id = $1 AND scan.id = ANY (b.event_ids)
                  AND (b.finished_at IS NULL
                       OR ($5::text <> 'replay_again'
                           AND b.outcomes[array_position(b.event_ids, scan.id)] IS NOT NULL)))
),
waiting_before AS (
    -- Deliveries of an ordered subscription already waiting behind their key's head.
    SELECT d.event_id FROM notifier.deliveries d
     WHERE d.subscription_id = $1 AND d.event_id IN (SELECT id FROM candidates)
       AND d.status = 'pending' AND d.next_attempt_at = 'infinity'
),
scheduled AS (
    -- Ordered: each one waits for its key's turn (sql/014), unless it is the head.
    INSERT INTO notifier.deliveries AS d (event_id, subscription_id, ordering_key, next_attempt_at)
    SELECT id, $1, ordering_key, CASE WHEN ordering_key IS NULL THEN now() ELSE 'infinity' END
      FROM candidates
        ON CONFLICT (event_id, subscription_id) DO UPDATE
       SET status = 'pending',
           next_attempt_at = CASE WHEN notifier.is_key_head(d.subscription_id, d.ordering_key, d.event_id)
                                  THEN now() ELSE 'infinity' END,
           schedule_offset = d.attempts,
           completed_at = NULL, updated_at = now()
     WHERE CASE $5::text
               WHEN 'recover' THEN d.status = 'dead'
                                   OR (d.status = 'pending' AND d.attempts > d.schedule_offset)
               WHEN 'replay_again' THEN d.status <> 'in_flight'
               ELSE false
           END
    RETURNING xmax = 0 AS inserted, d.event_id, d.ordering_key,
              d.next_attempt_at = 'infinity' AS waiting
),
counted AS (
    INSERT INTO notifier.ordering_keys AS k (subscription_id, key, waiting)
    SELECT $1, ordering_key, count(*) FROM scheduled
     WHERE waiting AND event_id NOT IN (SELECT event_id FROM waiting_before)
     GROUP BY ordering_key
        ON CONFLICT (subscription_id, key) DO UPDATE SET waiting = k.waiting + excluded.waiting
)
SELECT (SELECT uid FROM scan ORDER BY uid DESC LIMIT 1) AS last_uid,
       (SELECT count(*) FROM scan) AS scanned,
       (SELECT count(*) FILTER (WHERE inserted) FROM scheduled) AS created,
       (SELECT count(*) FILTER (WHERE NOT inserted) FROM scheduled) AS reset;

-- name: ring
-- Wake parked daemons: there is work due now.
SELECT pg_notify('notifier', 'operator');
