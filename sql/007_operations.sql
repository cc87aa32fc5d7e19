-- Operating the notifier: endpoint health, redelivery with a fresh retry schedule, and
-- the indexes that inspection, recovery and retention walk.

-- Endpoint health, kept up to date by the daemon as it records outcomes. failing_since is
-- the start of the current run of failures (NULL after a success); a subscription failing
-- for longer than the configured period with no success is disabled.
ALTER TABLE notifier.subscriptions
    ADD COLUMN last_success_at       timestamptz,
    ADD COLUMN last_failure_at       timestamptz,
    ADD COLUMN failing_since         timestamptz,
    ADD COLUMN consecutive_failures  integer NOT NULL DEFAULT 0;

-- attempts stays monotonic (it is the fencing token), so a redelivery does not reset it.
-- It moves schedule_offset instead: the retry schedule counts attempts - schedule_offset,
-- and a redelivered delivery gets the whole schedule again.
ALTER TABLE notifier.deliveries
    ADD COLUMN schedule_offset integer NOT NULL DEFAULT 0
        CONSTRAINT deliveries_schedule_offset CHECK (schedule_offset >= 0);

-- Listing, recovery and stats walk one subscription's deliveries in id order.
DROP INDEX notifier.deliveries_subscription_id;
CREATE INDEX deliveries_subscription_id ON notifier.deliveries (subscription_id, id);

-- The dead-letter queue, by subscription: small, and what an operator looks at first.
CREATE INDEX deliveries_dead ON notifier.deliveries (subscription_id, id) WHERE status = 'dead';

-- The lower bound of the version 7 UUIDs minted at a moment: events.uid is time-ordered
-- and indexed, so a time range of events is an index range scan on it, with no index on
-- created_at for every writer to maintain.
CREATE FUNCTION notifier.uuid_v7_floor(at timestamptz) RETURNS uuid
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT encode(
        substring(int8send(greatest(floor(extract(epoch FROM at) * 1000), 0)::bigint) FROM 3)
        || '\x00000000000000000000'::bytea,
        'hex')::uuid
$$;
