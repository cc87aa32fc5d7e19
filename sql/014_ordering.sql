-- Per-key ordered delivery. A subscription with ordering 'key' sends the events of each
-- key (the value of one field of the event's row: account_id for transactions) one at a
-- time, in capture order. Each key of such a subscription has a row in ordering_keys:
-- its head (the one event of the key that may be attempted: due, in flight or retrying)
-- and how many of its deliveries wait behind it. Waiting deliveries are pending with
-- next_attempt_at 'infinity', so the due-work index never shows them and the claim's
-- cost does not grow with them. When a head succeeds or dies, its key is freed; the next
-- claim makes the key's earliest waiting delivery its head. A key's row is changed only
-- by statements that lock it, so two daemons never make two heads of one key.

ALTER TABLE notifier.subscriptions
    ADD COLUMN ordering text NOT NULL DEFAULT 'none'
        CONSTRAINT subscriptions_ordering CHECK (ordering IN ('none', 'key')),
    ADD COLUMN ordering_key text
        CONSTRAINT subscriptions_ordering_key_name CHECK (ordering_key ~ '^[A-Za-z_][A-Za-z0-9_]{0,62}$'),
    ADD CONSTRAINT subscriptions_ordering_key_set CHECK ((ordering = 'key') = (ordering_key IS NOT NULL));

COMMENT ON COLUMN notifier.subscriptions.ordering_key IS
    'With ordering ''key'': the field of the event''s row whose value is the ordering key.';

ALTER TABLE notifier.deliveries ADD COLUMN ordering_key text;

COMMENT ON COLUMN notifier.deliveries.ordering_key IS
    'The key this delivery is ordered by (NULL: its subscription is not ordered).';

-- A key's waiting deliveries in capture order: the next head is an index probe.
CREATE INDEX deliveries_key_waiting ON notifier.deliveries (subscription_id, ordering_key, event_id)
    WHERE status = 'pending' AND next_attempt_at = 'infinity';

CREATE TABLE notifier.ordering_keys (
    subscription_id  bigint NOT NULL REFERENCES notifier.subscriptions (id) ON DELETE CASCADE,
    key              text NOT NULL,
    head             bigint,  -- the event of the key's delivery that may be attempted
    waiting          integer NOT NULL DEFAULT 0 CONSTRAINT ordering_keys_waiting CHECK (waiting >= 0),
    PRIMARY KEY (subscription_id, key)
);

COMMENT ON TABLE notifier.ordering_keys IS
    'Per key of an ordered subscription: its head event, and how many deliveries wait behind it.';

-- Keys whose head finished while deliveries wait: the claim's work list.
CREATE INDEX ordering_keys_freed ON notifier.ordering_keys (subscription_id, key)
    WHERE head IS NULL AND waiting > 0;

-- The ordering key of an event's delivery to a subscription ordered by ``field`` (NULL:
-- not ordered). An event whose row lacks the field is ordered under the empty key. A
-- value longer than 200 bytes is keyed by its SHA-256 instead (still one key per value):
-- a key is indexed, and an index entry has a size limit that a long text value would
-- pass, failing every claim.
CREATE FUNCTION notifier.delivery_key(data jsonb, field text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
    WHEN field IS NULL THEN NULL
    WHEN octet_length(data ->> field) > 200
        THEN 'sha256:' || encode(sha256(convert_to(data ->> field, 'UTF8')), 'hex')
    ELSE coalesce(data ->> field, '')
END;

-- Whether this event's delivery is its key's head (true for a delivery not ordered).
CREATE FUNCTION notifier.is_key_head(subscription_id bigint, key text, event_id bigint)
RETURNS boolean LANGUAGE sql STABLE PARALLEL SAFE
RETURN key IS NULL OR EXISTS (SELECT 1 FROM notifier.ordering_keys k
                               WHERE k.subscription_id = is_key_head.subscription_id
                                 AND k.key = is_key_head.key AND k.head = is_key_head.event_id);
