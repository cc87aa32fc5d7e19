-- Attempt outcomes in terms every destination has, not HTTP's: a short outcome code
-- (`http_204`, `http_503`, `timeout`, `connection_error`, `refused_target`, `crashed`;
-- other destinations add their own) and `detail`, the start of what the destination
-- answered. `error` stays: NULL after a success, else the failure in one line.
-- notifier.http_status() reads the HTTP status back out of an `http_NNN` code, for the
-- API's `status_code` fields.

ALTER TABLE notifier.delivery_attempts ADD COLUMN outcome text;
UPDATE notifier.delivery_attempts
   SET outcome = CASE WHEN status_code IS NOT NULL THEN 'http_' || status_code
                      ELSE coalesce(nullif(split_part(error, ':', 1), ''), 'unknown') END;
ALTER TABLE notifier.delivery_attempts
    ALTER COLUMN outcome SET NOT NULL,
    DROP COLUMN status_code;
ALTER TABLE notifier.delivery_attempts RENAME COLUMN response_snippet TO detail;

ALTER TABLE notifier.deliveries ADD COLUMN last_outcome text;
UPDATE notifier.deliveries
   SET last_outcome = CASE WHEN last_status_code IS NOT NULL THEN 'http_' || last_status_code
                           ELSE nullif(split_part(last_error, ':', 1), '') END
 WHERE last_status_code IS NOT NULL OR last_error IS NOT NULL;
ALTER TABLE notifier.deliveries DROP COLUMN last_status_code;

COMMENT ON COLUMN notifier.delivery_attempts.outcome IS
    'A short code: http_NNN for a webhook''s answer, else what happened (timeout, ...).';
COMMENT ON COLUMN notifier.delivery_attempts.detail IS
    'The start of what the destination answered, as text; empty when it did not answer.';

CREATE FUNCTION notifier.http_status(outcome text) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN outcome ~ '^http_[0-9]{3}$' THEN substr(outcome, 6)::integer END;
