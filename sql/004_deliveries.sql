-- Deliveries: one row per (event, subscription), created by the daemon when it fans an
-- event out, and the log of every HTTP attempt made for it.
--
-- A delivery is claimable when its status is pending or in_flight and next_attempt_at
-- has passed. While a delivery is in_flight, next_attempt_at is its lease expiry: the
-- holder keeps extending it, and if the holder dies the row simply becomes due again
-- (at-least-once, never stuck). One column and one partial index serve both cases.
--
-- attempts counts attempts started. It doubles as a fencing token: a holder settles a
-- row only while attempts still equals the value it claimed, so a holder that lost its
-- lease cannot overwrite the work of the one that took over.

CREATE TABLE notifier.deliveries (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id          bigint NOT NULL REFERENCES notifier.events (id) ON DELETE CASCADE,
    subscription_id   bigint NOT NULL REFERENCES notifier.subscriptions (id) ON DELETE CASCADE,
    status            text NOT NULL DEFAULT 'pending'
                      CONSTRAINT deliveries_status
                      CHECK (status IN ('pending', 'in_flight', 'succeeded', 'dead')),
    attempts          integer NOT NULL DEFAULT 0 CONSTRAINT deliveries_attempts CHECK (attempts >= 0),
    next_attempt_at   timestamptz NOT NULL DEFAULT now(),
    last_attempt_at   timestamptz,
    last_status_code  integer,
    last_error        text,
    completed_at      timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT deliveries_event_subscription UNIQUE (event_id, subscription_id)
);

-- The claim query walks due work in time order; finished rows stay out of the index.
CREATE INDEX deliveries_due ON notifier.deliveries (next_attempt_at)
    WHERE status IN ('pending', 'in_flight');

CREATE INDEX deliveries_subscription_id ON notifier.deliveries (subscription_id);

COMMENT ON COLUMN notifier.deliveries.next_attempt_at IS
    'pending: when the next attempt may start; in_flight: when the holder''s lease expires.';

CREATE TABLE notifier.delivery_attempts (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id       bigint NOT NULL REFERENCES notifier.deliveries (id) ON DELETE CASCADE,
    attempt           integer NOT NULL,
    started_at        timestamptz NOT NULL,
    duration_ms       double precision NOT NULL,
    -- The HTTP status when an answer came back; otherwise error names the failure class
    -- (timeout, connection_error, ...).
    status_code       integer,
    error             text,
    response_snippet  text NOT NULL DEFAULT ''
);

CREATE INDEX delivery_attempts_delivery_id ON notifier.delivery_attempts (delivery_id, attempt);
