-- name: claim
-- Claims a key for this request, or takes over an expired one. Returns no row when a
-- live claim exists; a concurrent claim of the same key waits here until the first
-- claiming transaction commits or rolls back.
INSERT INTO notifier.idempotency_keys (account_id, key, operation, request_hash, expires_at)
VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5))
ON CONFLICT (account_id, key) DO UPDATE
   SET operation = EXCLUDED.operation,
       request_hash = EXCLUDED.request_hash,
       response_status = NULL,
       response_body = NULL,
       created_at = now(),
       expires_at = EXCLUDED.expires_at
 WHERE notifier.idempotency_keys.expires_at <= now()
RETURNING account_id;

-- name: get
SELECT operation, request_hash, response_status, response_body
  FROM notifier.idempotency_keys
 WHERE account_id = $1 AND key = $2;

-- name: store_response
UPDATE notifier.idempotency_keys
   SET response_status = $3, response_body = $4
 WHERE account_id = $1 AND key = $2;

-- name: purge_expired
DELETE FROM notifier.idempotency_keys WHERE expires_at <= now();
