-- A subscription's health shows why it fails: the error of its last failed attempt
-- ("sqs_queue_not_found: no queue wallet in region eu-west-1", "http_503", "timeout").
ALTER TABLE notifier.subscriptions ADD COLUMN last_error text;

COMMENT ON COLUMN notifier.subscriptions.last_error IS
    'The error of the last failed attempt (kept after a success, like last_failure_at).';
