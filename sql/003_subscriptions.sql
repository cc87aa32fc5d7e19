-- Delivery targets. A subscription receives every event captured after it was created
-- whose type matches one of its patterns ('*', 'transaction.*', 'transaction.created').

CREATE TABLE notifier.subscriptions (
    id                          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    url                         text NOT NULL CONSTRAINT subscriptions_url_scheme CHECK (url ~* '^https?://'),
    description                 text NOT NULL DEFAULT '',
    event_types                 text[] NOT NULL DEFAULT '{*}'
                                CONSTRAINT subscriptions_event_types_not_empty CHECK (cardinality(event_types) > 0),
    -- Current signing secret (whsec_<base64>), and the one it replaced, which stays valid
    -- (both signatures are sent) until previous_secret_expires_at.
    secret                      text NOT NULL CONSTRAINT subscriptions_secret_format CHECK (secret ~ '^whsec_'),
    previous_secret             text,
    previous_secret_expires_at  timestamptz,
    enabled                     boolean NOT NULL DEFAULT true,
    disabled_reason             text,
    disabled_at                 timestamptz,
    -- Per-subscription ceiling on concurrent requests; NULL means the daemon's default.
    max_in_flight               integer CONSTRAINT subscriptions_max_in_flight CHECK (max_in_flight > 0),
    created_at                  timestamptz NOT NULL DEFAULT now(),
    updated_at                  timestamptz NOT NULL DEFAULT now()
);

-- Whether an event type matches a subscription pattern: '*' matches everything,
-- 'topic.*' every event of the topic, anything else only itself.
CREATE FUNCTION notifier.type_matches(event_type text, patterns text[]) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT EXISTS (
        SELECT 1 FROM unnest(patterns) AS p
         WHERE p = '*' OR p = event_type
            OR (right(p, 2) = '.*' AND left(event_type, length(p) - 1) = left(p, length(p) - 1))
    )
$$;
