-- Idempotency keys of the HTTP API (the Stripe model).
--
-- The first request with a key claims the row (account_id, key) inside the database
-- transaction that applies it, then stores its response there. A concurrent request with
-- the same key blocks on the row's unique index until that transaction ends, then reads
-- the stored response instead of applying anything again. Keys are scoped per account,
-- like transactions.idempotency_key, which carries the same key on the ledger row itself.

CREATE TABLE notifier.idempotency_keys (
    account_id       bigint NOT NULL,
    key              text NOT NULL
                     CONSTRAINT idempotency_keys_key_length CHECK (length(key) BETWEEN 1 AND 255),
    -- What the key was first used for ('top_up' or 'debit') and a SHA-256 of the
    -- normalised request: a reuse for anything else is refused.
    operation        text NOT NULL,
    request_hash     text NOT NULL,
    -- The stored response; NULL only while the claiming transaction is still open.
    -- The body is kept as the text that was sent, so that a replay is byte for byte
    -- the same (jsonb would reorder its keys).
    response_status  integer,
    response_body    text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    expires_at       timestamptz NOT NULL,
    PRIMARY KEY (account_id, key)
);

-- Expired keys are purged in the background.
CREATE INDEX idempotency_keys_expires_at ON notifier.idempotency_keys (expires_at);
