-- AWS destinations: a subscription's URL may name an SQS queue, an SNS topic or an
-- EventBridge bus (sqs://, sns://, eventbridge://).
ALTER TABLE notifier.subscriptions
    DROP CONSTRAINT subscriptions_url_scheme,
    ADD CONSTRAINT subscriptions_url_scheme
        CHECK (url ~* '^(https?|amqps?|kafka|nats|sqs|sns|eventbridge)://');
