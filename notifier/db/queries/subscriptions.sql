-- name: create
-- Created disabled ($6 false), it is marked as disabled by whoever created it.
INSERT INTO notifier.subscriptions
       (url, description, event_types, secret, max_in_flight, enabled, disabled_reason, disabled_at,
        filter, headers, format, ordering, ordering_key)
VALUES ($1, $2, $3, $4, $5, $6,
        CASE WHEN $6 THEN NULL ELSE 'created disabled' END,
        CASE WHEN $6 THEN NULL ELSE now() END,
        $7::jsonb, $8::jsonb, $9, $10, $11)
RETURNING *;

-- name: get
SELECT * FROM notifier.subscriptions WHERE id = $1;

-- name: find_by_url
SELECT * FROM notifier.subscriptions WHERE url = $1 ORDER BY id LIMIT 1;

-- name: list
-- Cursor paged by id: rows after $1, at most $2.
SELECT * FROM notifier.subscriptions WHERE id > $1 ORDER BY id LIMIT $2;

-- name: update
-- NULL leaves a field as it is. Re-enabling clears the reason it was disabled.
UPDATE notifier.subscriptions
   SET url = coalesce($2, url),
       description = coalesce($3, description),
       event_types = coalesce($4, event_types),
       filter = coalesce($9::jsonb, filter),
       headers = coalesce($10::jsonb, headers),
       format = coalesce($11, format),
       ordering = coalesce($12, ordering),
       ordering_key = CASE WHEN $12 IS NULL THEN ordering_key ELSE $13 END,
       max_in_flight = CASE WHEN $5::boolean THEN $6 ELSE max_in_flight END,
       enabled = coalesce($7, enabled),
       disabled_reason = CASE WHEN $7 IS NULL THEN disabled_reason
                              WHEN $7 THEN NULL ELSE coalesce($8, 'disabled by an operator') END,
       disabled_at = CASE WHEN $7 IS NULL THEN disabled_at
                          WHEN $7 THEN NULL ELSE coalesce(disabled_at, now()) END,
       updated_at = now()
 WHERE id = $1
RETURNING *;

-- name: rotate_secret
-- The old secret stays valid (both signatures are sent) for $3 seconds.
UPDATE notifier.subscriptions
   SET previous_secret = secret,
       previous_secret_expires_at = now() + make_interval(secs => $3),
       secret = $2,
       updated_at = now()
 WHERE id = $1
RETURNING *;

-- name: disable
UPDATE notifier.subscriptions
   SET enabled = false, disabled_reason = $2, disabled_at = now(), updated_at = now()
 WHERE id = $1 AND enabled
RETURNING *;

-- name: delete
DELETE FROM notifier.subscriptions WHERE id = $1 RETURNING id;

-- name: key_fields
-- Of the watched topics in $1, whether each one's table has a column $2.
SELECT w.topic,
       EXISTS (SELECT 1 FROM pg_attribute a
                WHERE a.attrelid = w.table_name AND a.attname = $2
                  AND a.attnum > 0 AND NOT a.attisdropped) AS has_field
  FROM notifier.watched_tables w
 WHERE w.topic = ANY ($1::text[]);

-- name: release_waiting
-- A subscription no longer ordered: its unfinished deliveries go unordered, and those
-- that waited behind a key's head are due now.
WITH released AS (
    UPDATE notifier.deliveries
       SET ordering_key = NULL,
           next_attempt_at = CASE WHEN next_attempt_at = 'infinity' THEN now()
                                  ELSE next_attempt_at END,
           updated_at = now()
     WHERE subscription_id = $1 AND status IN ('pending', 'in_flight')
       AND ordering_key IS NOT NULL
)
DELETE FROM notifier.ordering_keys WHERE subscription_id = $1;
