-- The ledger: accounts and their append-only transactions.
--
-- The database, not the API, guards the ledger, because DBAs and batch jobs write rows
-- directly. Every rule below holds whichever client inserts the row.
--
-- Errors raised here carry their own SQLSTATEs (class WL, "wallet ledger"), so clients
-- can map them without parsing messages:
--   WL001 insufficient funds          WL002 unknown account
--   WL003 currency mismatch           WL004 ledger is append-only
--   WL005 balance changed directly    WL006 balance would overflow

CREATE TABLE accounts (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    currency    char(3) NOT NULL CONSTRAINT accounts_currency_format CHECK (currency ~ '^[A-Z]{3}$'),
    balance     bigint NOT NULL DEFAULT 0 CONSTRAINT accounts_balance_non_negative CHECK (balance >= 0),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

COMMENT ON COLUMN accounts.balance IS
    'Minor units (cents). Changes only through INSERT INTO transactions.';

CREATE TABLE transactions (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id       bigint NOT NULL REFERENCES accounts (id),
    kind             text NOT NULL CONSTRAINT transactions_kind CHECK (kind IN ('top_up', 'debit')),
    -- 10^15 minor units per transaction; the trigger separately refuses a balance that
    -- would overflow bigint, so no sequence of valid amounts can wrap around.
    amount           bigint NOT NULL
                     CONSTRAINT transactions_amount_range CHECK (amount > 0 AND amount <= 1000000000000000),
    currency         char(3) NOT NULL,
    balance_after    bigint NOT NULL CONSTRAINT transactions_balance_after_non_negative CHECK (balance_after >= 0),
    idempotency_key  text CONSTRAINT transactions_idempotency_key_length
                     CHECK (idempotency_key IS NULL OR length(idempotency_key) BETWEEN 1 AND 255),
    metadata         jsonb NOT NULL DEFAULT '{}'
                     CONSTRAINT transactions_metadata_object CHECK (jsonb_typeof(metadata) = 'object'),
    created_at       timestamptz NOT NULL DEFAULT now()
);

CREATE UNIQUE INDEX transactions_account_idempotency_key
    ON transactions (account_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- History pages are read newest first per account.
CREATE INDEX transactions_account_id_id ON transactions (account_id, id DESC);

-- Applies a new transaction to its account. Runs BEFORE INSERT so that the row it
-- completes (currency, balance_after) is the row that is stored and captured.
CREATE FUNCTION ledger_apply_transaction() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    current_balance  bigint;
    account_currency char(3);
    new_balance      bigint;
BEGIN
    -- Checked here as well as by the table's constraints so that a bad row is refused
    -- with a message about the bad value before any account is locked or touched.
    IF NEW.kind IS NULL OR NEW.kind NOT IN ('top_up', 'debit') THEN
        RAISE EXCEPTION 'kind must be top_up or debit, got %', quote_nullable(NEW.kind)
            USING ERRCODE = 'check_violation', CONSTRAINT = 'transactions_kind';
    END IF;
    IF NEW.amount IS NULL OR NEW.amount <= 0 OR NEW.amount > 1000000000000000 THEN
        RAISE EXCEPTION 'amount must be between 1 and 1000000000000000 minor units, got %',
                quote_nullable(NEW.amount)
            USING ERRCODE = 'check_violation', CONSTRAINT = 'transactions_amount_range';
    END IF;

    -- The row lock serialises concurrent writers of one account: each sees the
    -- balance left by the previous one, so no interleaving can overdraw.
    SELECT balance, currency INTO current_balance, account_currency
      FROM accounts WHERE id = NEW.account_id
       FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'account % does not exist', NEW.account_id
            USING ERRCODE = 'WL002',
                  HINT = 'Create the account first: INSERT INTO accounts (currency) VALUES (...).';
    END IF;

    IF NEW.currency IS NOT NULL AND NEW.currency <> account_currency THEN
        RAISE EXCEPTION 'currency mismatch: account % is in %, transaction says %',
                NEW.account_id, account_currency, NEW.currency
            USING ERRCODE = 'WL003';
    END IF;

    IF NEW.kind = 'debit' THEN
        IF NEW.amount > current_balance THEN
            RAISE EXCEPTION 'insufficient funds: account % has balance %, debit of % refused',
                    NEW.account_id, current_balance, NEW.amount
                USING ERRCODE = 'WL001',
                      DETAIL = format('account_id=%s balance=%s amount=%s',
                                      NEW.account_id, current_balance, NEW.amount);
        END IF;
        new_balance := current_balance - NEW.amount;
    ELSE
        IF NEW.amount > 9223372036854775807 - current_balance THEN
            RAISE EXCEPTION 'balance overflow: account % has balance %, top-up of % refused',
                    NEW.account_id, current_balance, NEW.amount
                USING ERRCODE = 'WL006';
        END IF;
        new_balance := current_balance + NEW.amount;
    END IF;

    UPDATE accounts SET balance = new_balance, updated_at = now() WHERE id = NEW.account_id;
    NEW.currency := account_currency;
    NEW.balance_after := new_balance;
    RETURN NEW;
END;
$$;

CREATE TRIGGER ledger_apply_transaction
    BEFORE INSERT ON transactions
    FOR EACH ROW EXECUTE FUNCTION ledger_apply_transaction();

CREATE FUNCTION ledger_forbid_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'transactions are append-only: % refused', TG_OP
        USING ERRCODE = 'WL004',
              HINT = 'Correct a transaction with a new, reversing transaction.';
END;
$$;

CREATE TRIGGER ledger_forbid_update_delete
    BEFORE UPDATE OR DELETE ON transactions
    FOR EACH ROW EXECUTE FUNCTION ledger_forbid_change();

CREATE TRIGGER ledger_forbid_truncate
    BEFORE TRUNCATE ON transactions
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_forbid_change();

-- A balance moves only through transactions, so that it always equals the sum of its
-- account's ledger. The ledger trigger's own UPDATE runs nested inside the INSERT on
-- transactions (pg_trigger_depth() > 1); a direct UPDATE or INSERT does not.
CREATE FUNCTION ledger_guard_balance() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' AND NEW.balance <> 0 THEN
        RAISE EXCEPTION 'a new account starts with balance 0, got %', NEW.balance
            USING ERRCODE = 'WL005',
                  HINT = 'Insert a top_up transaction to fund it.';
    END IF;
    IF TG_OP = 'UPDATE' AND NEW.balance IS DISTINCT FROM OLD.balance AND pg_trigger_depth() < 2 THEN
        RAISE EXCEPTION 'balance of account % changes only through transactions', OLD.id
            USING ERRCODE = 'WL005',
                  HINT = 'Insert a top_up or debit transaction instead.';
    END IF;
    IF TG_OP = 'UPDATE' AND NEW.currency IS DISTINCT FROM OLD.currency THEN
        RAISE EXCEPTION 'currency of account % cannot change', OLD.id
            USING ERRCODE = 'WL003';
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER ledger_guard_balance
    BEFORE INSERT OR UPDATE ON accounts
    FOR EACH ROW EXECUTE FUNCTION ledger_guard_balance();
