-- The ledger against hostile writers: no balance change without its ledger row, and no
-- balance change from anywhere but the ledger trigger, even for a writer who may UPDATE
-- accounts or who runs triggers of its own.
--
-- 1. A row that the ledger trigger applied but that was then not stored (a conflict
--    skipped by ON CONFLICT DO NOTHING) used to keep its effect on the balance. The
--    trigger now assigns every id itself, from a sequence (a writer's explicit id is
--    refused), so the primary key can never conflict; and it leaves the balance alone
--    when the row repeats an existing idempotency key, so the unique index refuses or
--    skips the row with nothing applied.
-- 2. The balance guard trusted pg_trigger_depth(), which any writer's own trigger
--    raises. The ledger and capture functions now run with their owner's rights
--    (SECURITY DEFINER), so a writer needs only SELECT and INSERT on accounts and
--    transactions, nothing on accounts' balance and nothing in the notifier schema (it
--    cannot forge events either); the guard lets a balance change through only when it
--    runs as that owner, inside a trigger. Those functions refuse to run on any other
--    table, and only their owner may attach them to one.
-- 3. Account ids are assigned the same way, so that no explicit id can block the
--    creation of later accounts; one account's transaction ids follow the order in which
--    its transactions were applied.
--
-- Functions that run with their owner's rights pin search_path to pg_catalog (then
-- pg_temp, last, as the manual advises) so that no writer-defined function, operator or
-- temporary table is picked up in their place; every relation is schema-qualified.

ALTER TABLE public.transactions ALTER COLUMN id DROP IDENTITY;
CREATE SEQUENCE public.transactions_id_seq AS bigint OWNED BY public.transactions.id;
SELECT setval('public.transactions_id_seq', coalesce(max(id), 0) + 1, false) FROM public.transactions;

-- Account ids too: an explicit id far ahead of the sequence would make every later
-- account creation fail on the primary key.
ALTER TABLE public.accounts ALTER COLUMN id DROP IDENTITY;
CREATE SEQUENCE public.accounts_id_seq AS bigint OWNED BY public.accounts.id;
SELECT setval('public.accounts_id_seq', coalesce(max(id), 0) + 1, false) FROM public.accounts;

CREATE FUNCTION public.ledger_open_account() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_RELID <> 'public.accounts'::regclass THEN
        RAISE EXCEPTION 'ledger_open_account() runs on public.accounts only';
    END IF;
    IF NEW.id IS NOT NULL THEN
        RAISE EXCEPTION 'account ids are assigned by the ledger: leave id out (got %)', NEW.id
            USING ERRCODE = 'generated_always';
    END IF;
    NEW.id := nextval('public.accounts_id_seq');
    RETURN NEW;
END;
$$;

CREATE TRIGGER ledger_open_account
    BEFORE INSERT ON public.accounts
    FOR EACH ROW EXECUTE FUNCTION public.ledger_open_account();

CREATE OR REPLACE FUNCTION public.ledger_apply_transaction() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    current_balance  bigint;
    account_currency char(3);
    new_balance      bigint;
BEGIN
    IF TG_RELID <> 'public.transactions'::regclass THEN
        RAISE EXCEPTION 'ledger_apply_transaction() runs on public.transactions only';
    END IF;
    IF NEW.id IS NOT NULL THEN
        RAISE EXCEPTION 'transaction ids are assigned by the ledger: leave id out (got %)', NEW.id
            USING ERRCODE = 'generated_always';
    END IF;

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
      FROM public.accounts WHERE id = NEW.account_id
       FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'account % does not exist', NEW.account_id
            USING ERRCODE = 'WL002',
                  HINT = 'Create the account first: INSERT INTO accounts (currency) VALUES (...).';
    END IF;
    -- Taken under the account's lock, so that one account's ids follow the order in
    -- which its transactions were applied.
    NEW.id := nextval('public.transactions_id_seq');

    -- A repeated idempotency key: the unique index will refuse this row (or skip it,
    -- under ON CONFLICT DO NOTHING), so nothing may be applied. Under the account's lock
    -- this check is exact: any earlier row with the key is committed, or this
    -- transaction's own, and visible here either way.
    IF NEW.idempotency_key IS NOT NULL AND EXISTS (
        SELECT 1 FROM public.transactions
         WHERE account_id = NEW.account_id AND idempotency_key = NEW.idempotency_key
    ) THEN
        NEW.currency := account_currency;
        NEW.balance_after := current_balance;
        RETURN NEW;
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

    UPDATE public.accounts SET balance = new_balance, updated_at = now() WHERE id = NEW.account_id;
    NEW.currency := account_currency;
    NEW.balance_after := new_balance;
    RETURN NEW;
END;
$$;

-- The guard runs with the rights of whoever changes the row, so current_user tells the
-- ledger function (running as its owner) from a writer's statement or trigger.
CREATE OR REPLACE FUNCTION public.ledger_guard_balance() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP = 'INSERT' AND NEW.balance <> 0 THEN
        RAISE EXCEPTION 'a new account starts with balance 0, got %', NEW.balance
            USING ERRCODE = 'WL005',
                  HINT = 'Insert a top_up transaction to fund it.';
    END IF;
    IF TG_OP = 'UPDATE' AND NEW.balance IS DISTINCT FROM OLD.balance AND NOT (
        pg_trigger_depth() > 1
        AND current_user = (SELECT pg_get_userbyid(proowner) FROM pg_proc
                             WHERE oid = 'public.ledger_apply_transaction()'::regprocedure)
    ) THEN
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

CREATE OR REPLACE FUNCTION notifier.capture() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    topic     text := TG_ARGV[0];
    in_utc    boolean := current_setting('TimeZone') IN ('UTC', 'Etc/UTC', 'GMT', 'Etc/GMT', 'UCT', 'Zulu');
    captured  bigint;
BEGIN
    IF topic IS NULL OR topic = '' THEN
        RAISE EXCEPTION 'notifier.capture() needs a topic argument on table %.%', TG_TABLE_SCHEMA, TG_TABLE_NAME;
    END IF;

    INSERT INTO notifier.events (type, topic, table_schema, table_name, op, data, previous)
    VALUES (
        topic || CASE TG_OP WHEN 'INSERT' THEN '.created' WHEN 'UPDATE' THEN '.updated' ELSE '.deleted' END,
        topic, TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_OP,
        CASE WHEN TG_OP = 'DELETE'
             THEN CASE WHEN in_utc THEN to_jsonb(OLD) ELSE notifier.to_jsonb_utc(OLD) END
             ELSE CASE WHEN in_utc THEN to_jsonb(NEW) ELSE notifier.to_jsonb_utc(NEW) END
        END,
        CASE WHEN TG_OP = 'UPDATE'
             THEN CASE WHEN in_utc THEN to_jsonb(OLD) ELSE notifier.to_jsonb_utc(OLD) END
        END)
    RETURNING id INTO captured;
    INSERT INTO notifier.event_queue (event_id) VALUES (captured);

    IF (SELECT armed FROM notifier.doorbell) THEN
        -- A doorbell, never the data: the payload stays tiny whatever the row holds.
        PERFORM pg_notify('notifier', topic);
    END IF;
    RETURN NULL;
END;
$$;

-- EXECUTE is checked when a trigger is created: without it, a writer cannot attach these
-- owner-rights functions to tables of its own (a temporary table shaped like
-- transactions would otherwise move real balances, or forge events).
REVOKE EXECUTE ON FUNCTION public.ledger_apply_transaction() FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION public.ledger_open_account() FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION notifier.capture() FROM PUBLIC;
