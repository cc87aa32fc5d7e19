-- Destinations beyond webhooks: a subscription's URL scheme picks its sink (RabbitMQ,
-- Kafka, NATS JetStream). Webhook subscriptions may add headers of their own (secret
-- values: an API key the receiver expects) and choose the CloudEvents structured format.
-- The signing secret stays on every subscription; only webhooks use it today.

ALTER TABLE notifier.subscriptions
    DROP CONSTRAINT subscriptions_url_scheme,
    ADD CONSTRAINT subscriptions_url_scheme CHECK (url ~* '^(https?|amqps?|kafka|nats)://'),
    ADD COLUMN headers jsonb NOT NULL DEFAULT '{}'
        CONSTRAINT subscriptions_headers_object CHECK (jsonb_typeof(headers) = 'object'),
    ADD COLUMN format text NOT NULL DEFAULT 'standard-webhooks'
        CONSTRAINT subscriptions_format CHECK (format IN ('standard-webhooks', 'cloudevents')),
    ADD CONSTRAINT subscriptions_http_extras
        CHECK (url ~* '^https?://' OR (headers = '{}' AND format = 'standard-webhooks'));

COMMENT ON COLUMN notifier.subscriptions.headers IS
    'Extra HTTP headers sent with every delivery (name: value); the values are secrets.';
COMMENT ON COLUMN notifier.subscriptions.format IS
    'standard-webhooks (the event as the body) or cloudevents (structured mode, HTTP only).';
