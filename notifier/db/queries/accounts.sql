-- name: create_account
INSERT INTO accounts (currency) VALUES ($1)
RETURNING id, currency, balance, created_at, updated_at;

-- name: get_account
SELECT id, currency, balance, created_at, updated_at FROM accounts WHERE id = $1;

-- name: insert_transaction
-- The ledger trigger locks the account, checks the amount against the balance and
-- fills currency (when NULL) and balance_after; its errors carry SQLSTATEs WL001-WL006.
INSERT INTO transactions (account_id, kind, amount, currency, idempotency_key, metadata)
VALUES ($1, $2, $3, $4, $5, $6::text::jsonb)
RETURNING id, account_id, kind, amount, currency, balance_after, idempotency_key,
          metadata::text AS metadata, created_at;

-- name: set_trace
-- The caller's trace, for the capture trigger: local to the transaction, so a pooled
-- connection's next transaction starts without it.
SELECT set_config('notifier.traceparent', $1, true),
       set_config('notifier.tracestate', coalesce($2, ''), true);

-- name: transaction_by_key
SELECT id, account_id, kind, amount, currency, balance_after, idempotency_key,
       metadata::text AS metadata, created_at
  FROM transactions
 WHERE account_id = $1 AND idempotency_key = $2;

-- name: list_transactions
-- Newest first, cursor paged: ids below $2 (NULL for the first page), at most $3.
SELECT id, account_id, kind, amount, currency, balance_after, idempotency_key,
       metadata::text AS metadata, created_at
  FROM transactions
 WHERE account_id = $1 AND ($2::bigint IS NULL OR id < $2)
 ORDER BY id DESC
 LIMIT $3;
