-- The whole schema as sql/NNN_*.sql leave it, printed by pg_dump 15 (never applied:
-- the migrations are the schema). Regenerate after adding a migration, on a freshly
-- migrated database:
--   python -m notifier.devtools.schema postgresql://.../db > sql/schema.sql

--
-- PostgreSQL database dump
--

--
-- Name: notifier; Type: SCHEMA; Schema: -; Owner: -
--

CREATE SCHEMA notifier;

--
-- Name: advance(bigint, integer, pg_snapshot); Type: FUNCTION; Schema: notifier; Owner: -
--

CREATE FUNCTION notifier.advance(subscription bigint, wanted integer, cut pg_snapshot) RETURNS bigint[]
    LANGUAGE plpgsql
    AS $$
DECLARE
    p         notifier.positions%ROWTYPE;
    s         notifier.subscriptions%ROWTYPE;
    xip       xid8[];
    types     text[];
    ids       bigint[];
BEGIN
    SELECT * INTO p FROM notifier.positions WHERE subscription_id = subscription
       FOR UPDATE SKIP LOCKED;
    IF NOT FOUND OR wanted <= 0 THEN
        RETURN '{}';
    END IF;
    IF p.upto IS NULL THEN
        -- Open a window: the events of the transactions visible in cut and not in since.
        xip := ARRAY(SELECT pg_snapshot_xip(p.since));
        IF cardinality(xip) = 0 THEN
            SELECT min(e.id) - 1, max(e.id) INTO p.after_id, p.last_id
              FROM notifier.events e
             WHERE e.xid >= pg_snapshot_xmax(p.since) AND e.xid < pg_snapshot_xmax(cut)
               AND pg_visible_in_snapshot(e.xid, cut);
        ELSE
            SELECT min(w.id) - 1, max(w.id) INTO p.after_id, p.last_id
              FROM (SELECT e.id FROM notifier.events e
                     WHERE e.xid >= pg_snapshot_xmax(p.since) AND e.xid < pg_snapshot_xmax(cut)
                       AND pg_visible_in_snapshot(e.xid, cut)
                    UNION ALL
                    SELECT e.id FROM unnest(xip) AS x (xid)
                      JOIN notifier.events e ON e.xid = x.xid
                     WHERE pg_visible_in_snapshot(e.xid, cut)) AS w;
        END IF;
        IF p.last_id IS NULL THEN
            RETURN '{}';  -- nothing new; the position stays as it is, unwritten
        END IF;
        p.upto := cut;
    END IF;
    SELECT * INTO s FROM notifier.subscriptions WHERE id = subscription;
    types := notifier.type_like(s.event_types);
    SELECT coalesce(array_agg(t.id ORDER BY t.id), '{}') INTO ids
      FROM (SELECT e.id
              FROM notifier.events e
             WHERE e.id > p.after_id AND e.id <= p.last_id
               AND pg_visible_in_snapshot(e.xid, p.upto)
               AND NOT pg_visible_in_snapshot(e.xid, p.since)
               AND s.created_at <= e.created_at
               AND e.type LIKE ANY (types)
               AND (s.filter = '[]' OR notifier.row_matches(e.data, s.filter))
             ORDER BY e.id
             LIMIT wanted) AS t;
    IF cardinality(ids) < wanted OR ids[cardinality(ids)] = p.last_id THEN
        UPDATE notifier.positions
           SET since = p.upto, upto = NULL, after_id = NULL, last_id = NULL
         WHERE subscription_id = subscription;
    ELSE
        UPDATE notifier.positions
           SET upto = p.upto, after_id = ids[cardinality(ids)], last_id = p.last_id
         WHERE subscription_id = subscription;
    END IF;
    RETURN ids;
END;
$$;

--
-- Name: batch_span(bigint[]); Type: FUNCTION; Schema: notifier; Owner: -
--

CREATE FUNCTION notifier.batch_span(event_ids bigint[]) RETURNS int8range
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN int8range((event_ids)[1], (event_ids)[cardinality(event_ids)], '[]'::text);

--
-- Name: batches; Type: TABLE; Schema: notifier; Owner: -
--

CREATE TABLE notifier.batches (
    id bigint NOT NULL,
    subscription_id bigint NOT NULL,
    event_ids bigint[] NOT NULL,
    attempt integer DEFAULT 1 NOT NULL,
    claimed_at timestamp with time zone DEFAULT now() NOT NULL,
    lease_expires_at timestamp with time zone,
    finished_at timestamp with time zone,
    sent_at timestamp with time zone[],
    durations_ms real[],
    outcomes text[],
    succeeded integer,
    CONSTRAINT batches_not_empty CHECK ((cardinality(event_ids) > 0)),
    CONSTRAINT batches_state CHECK (((finished_at IS NULL) = (lease_expires_at IS NOT NULL)))
);

--
-- Name: TABLE batches; Type: COMMENT; Schema: notifier; Owner: -
--

COMMENT ON TABLE notifier.batches IS 'First attempts of events to a subscription, claimed and recorded together (ids in event order).';

--
-- Name: batch_of(bigint, bigint); Type: FUNCTION; Schema: notifier; Owner: -
--

CREATE FUNCTION notifier.batch_of(subscription bigint, event_id bigint) RETURNS bigint
    LANGUAGE sql STABLE PARALLEL SAFE
    RETURN (SELECT b.id FROM notifier.batches b WHERE ((notifier.batch_span(b.event_ids) @> batch_of.event_id) AND (b.subscription_id = batch_of.subscription) AND (batch_of.event_id = ANY (b.event_ids))) ORDER BY b.id DESC LIMIT 1);

--
-- Name: positions; Type: TABLE; Schema: notifier; Owner: -
--

CREATE TABLE notifier.positions (
    subscription_id bigint NOT NULL,
    since pg_snapshot NOT NULL,
    upto pg_snapshot,
    after_id bigint,
    last_id bigint,
    CONSTRAINT positions_window CHECK ((((upto IS NULL) = (after_id IS NULL)) AND ((upto IS NULL) = (last_id IS NULL))))
);

--
-- Name: TABLE positions; Type: COMMENT; Schema: notifier; Owner: -
--

COMMENT ON TABLE notifier.positions IS 'Per subscription: the snapshot every event behind it is visible in, and the window being claimed.';

--
-- Name: behind(notifier.positions); Type: FUNCTION; Schema: notifier; Owner: -
--

CREATE FUNCTION notifier.behind(p notifier.positions) RETURNS boolean
    LANGUAGE plpgsql STABLE PARALLEL SAFE
    AS $$
BEGIN
    RETURN p.upto IS NOT NULL
        -- An EXISTS would be planned as a scan that stops early, which it never does when
        -- there is nothing new: the newest transaction is read off the index's end instead.
        OR (SELECT max(e.xid) FROM notifier.events e) >= pg_snapshot_xmax(p.since)
        OR EXISTS (SELECT 1 FROM pg_snapshot_xip(p.since) AS x (xid)
                    WHERE EXISTS (SELECT 1 FROM notifier.events e WHERE e.xid = x.xid));
END;
$$;

--
-- Name: capture(); Type: FUNCTION; Schema: notifier; Owner: -
--

CREATE FUNCTION notifier.capture() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
DECLARE
    topic       text := TG_ARGV[0];
    in_utc      boolean := current_setting('TimeZone') IN ('UTC', 'Etc/UTC', 'GMT', 'Etc/GMT', 'UCT', 'Zulu');
    -- Unset, and reset by the end of a transaction that set it locally: NULL or ''.
    traceparent text := nullif(current_setting('notifier.traceparent', true), '');
    tracestate  text := nullif(current_setting('notifier.tracestate', true), '');
BEGIN
    IF topic IS NULL OR topic = '' THEN
        RAISE EXCEPTION 'notifier.capture() needs a topic argument on table %.%', TG_TABLE_SCHEMA, TG_TABLE_NAME;
    END IF;
    IF traceparent IS NOT NULL AND NOT notifier.is_traceparent(traceparent) THEN
        RAISE EXCEPTION 'notifier.traceparent is not a W3C traceparent: %', traceparent
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use 00-<32 lowercase hex trace id>-<16 lowercase hex parent id>-<2 hex flags>, neither id all zeros.';
    END IF;
    IF tracestate IS NOT NULL AND NOT (traceparent IS NOT NULL AND notifier.is_tracestate(tracestate)) THEN
        RAISE EXCEPTION 'notifier.tracestate is not a W3C tracestate, or came without notifier.traceparent'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Set it with notifier.traceparent: printable ASCII, at most 512 characters.';
    END IF;

    INSERT INTO notifier.events (type, topic, table_schema, table_name, op, data, previous,
                                 traceparent, tracestate)
    VALUES (
        topic || CASE TG_OP WHEN 'INSERT' THEN '.created' WHEN 'UPDATE' THEN '.updated' ELSE '.deleted' END,
        topic, TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_OP,
        CASE WHEN TG_OP = 'DELETE'
             THEN CASE WHEN in_utc THEN to_jsonb(OLD) ELSE notifier.to_jsonb_utc(OLD) END
             ELSE CASE WHEN in_utc THEN to_jsonb(NEW) ELSE notifier.to_jsonb_utc(NEW) END
        END,
        CASE WHEN TG_OP = 'UPDATE'
             THEN CASE WHEN in_utc THEN to_jsonb(OLD) ELSE notifier.to_jsonb_utc(OLD) END
        END,
        traceparent, tracestate);

    IF (SELECT armed FROM notifier.doorbell) THEN
        -- A doorbell, never the data: the payload stays tiny whatever the row holds.
        PERFORM pg_notify('notifier', topic);
    END IF;
    RETURN NULL;
END;
$$;

--
-- Name: condition_holds(jsonb, text, jsonb); Type: FUNCTION; Schema: notifier; Owner: -
--

CREATE FUNCTION notifier.condition_holds(actual jsonb, op text, expected jsonb) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$
    SELECT CASE
        WHEN actual IS NULL THEN false
        WHEN op = 'in' THEN expected @> jsonb_build_array(actual)
        WHEN op = 'not in' THEN NOT expected @> jsonb_build_array(actual)
        WHEN op = '!=' THEN actual <> expected
        WHEN jsonb_typeof(actual) <> jsonb_typeof(expected) THEN false
        WHEN op = '=' THEN actual = expected
        WHEN op = '<' THEN actual < expected
        WHEN op = '<=' THEN actual <= expected
        WHEN op = '>' THEN actual > expected
        WHEN op = '>=' THEN actual >= expected
        ELSE false
    END
$$;

--
-- Name: contract_timestamps(jsonb, text[]); Type: FUNCTION; Schema: notifier; Owner: -
--

CREATE FUNCTION notifier.contract_timestamps(row_data jsonb, columns text[]) RETURNS jsonb
    LANGUAGE plpgsql STABLE PARALLEL SAFE
    AS $_$
DECLARE
    col    text;
    value  text;
BEGIN
    IF row_data IS NULL THEN
        RETURN NULL;
    END IF;
    FOREACH col IN ARRAY columns LOOP
        value := row_data ->> col;
        IF value ~ '^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?[+-]\d\d(:\d\d(:\d\d)?)?$' THEN
            BEGIN
                row_data := jsonb_set(
                    row_data, ARRAY[col],
                    to_jsonb(to_char(value::timestamptz AT TIME ZONE 'UTC',
                                     'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')));
            EXCEPTION WHEN data_exception THEN
                NULL;  -- shaped like a timestamp but not one ("2026-02-30..."): as stored
            END;
        END IF;
    END LOOP;
    RETURN row_data;
END;
$_$;

--
-- Name: delivery_key(jsonb, text); Type: FUNCTION; Schema: notifier; Owner: -
--

CREATE FUNCTION notifier.delivery_key(data jsonb, field text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN CASE WHEN (field IS NULL) THEN NULL::text WHEN (octet_length((data ->> field)) > 200) THEN ('sha256:'::text || encode(sha256(convert_to((data ->> field), 'UTF8'::name)), 'hex'::text)) ELSE COALESCE((data ->> field), ''::text) END;

--
-- Name: http_status(text); Type: FUNCTION; Schema: notifier; Owner: -
--

CREATE FUNCTION notifier.http_status(outcome text) RETURNS integer
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN CASE WHEN (outcome ~ '^http_[0-9]{3}$'::text) THEN (substr(outcome, 6))::integer ELSE NULL::integer END;

--
-- Name: ordering_keys; Type: TABLE; Schema: notifier; Owner: -
--

CREATE TABLE notifier.ordering_keys (
    subscription_id bigint NOT NULL,
    key text NOT NULL,
    head bigint,
    waiting integer DEFAULT 0 NOT NULL,
    CONSTRAINT ordering_keys_waiting CHECK ((waiting >= 0))
);

--
-- Name: TABLE ordering_keys; Type: COMMENT; Schema: notifier; Owner: -
--

COMMENT ON TABLE notifier.ordering_keys IS 'Per key of an ordered subscription: its head event, and how many deliveries wait behind it.';

--
-- Name: is_key_head(bigint, text, bigint); Type: FUNCTION; Schema: notifier; Owner: -
--

CREATE FUNCTION notifier.is_key_head(subscription_id bigint, key text, event_id bigint) RETURNS boolean
    LANGUAGE sql STABLE PARALLEL SAFE
    RETURN ((key IS NULL) OR (EXISTS (SELECT 1 FROM notifier.ordering_keys k WHERE ((k.subscription_id = is_key_head.subscription_id) AND (k.key = is_key_head.key) AND (k.head = is_key_head.event_id)))));

--
-- Name: is_traceparent(text); Type: FUNCTION; Schema: notifier; Owner: -
--

CREATE FUNCTION notifier.is_traceparent(value text) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $_$
    -- Version 00: an all-zero trace id or parent id is invalid.
    SELECT value ~ '^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$'
       AND substr(value, 4, 32) <> repeat('0', 32)
       AND substr(value, 37, 16) <> repeat('0', 16)
$_$;

--
-- Name: is_tracestate(text); Type: FUNCTION; Schema: notifier; Owner: -
--

CREATE FUNCTION notifier.is_tracestate(value text) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $_$
    -- Printable ASCII only (it becomes a header and message metadata), and no longer than
    -- the 512 characters every tracer is asked to carry.
    SELECT value ~ '^[ -~]+$' AND length(value) <= 512
$_$;

--
-- Name: passed(notifier.positions, xid8, bigint); Type: FUNCTION; Schema: notifier; Owner: -
--

CREATE FUNCTION notifier.passed(p notifier.positions, event_xid xid8, event_id bigint) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN ((event_xid IS NULL) OR pg_visible_in_snapshot(event_xid, (p).since) OR (((p).upto IS NOT NULL) AND pg_visible_in_snapshot(event_xid, (p).upto) AND (event_id <= (p).after_id)));

--
-- Name: position_start(); Type: FUNCTION; Schema: notifier; Owner: -
--

CREATE FUNCTION notifier.position_start() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO notifier.positions (subscription_id, since)
        VALUES (NEW.id, pg_current_snapshot());
    ELSIF NEW.enabled AND NOT OLD.enabled THEN
        UPDATE notifier.positions
           SET since = pg_current_snapshot(), upto = NULL, after_id = NULL, last_id = NULL
         WHERE subscription_id = NEW.id;
    END IF;
    RETURN NULL;
END;
$$;

--
-- Name: row_matches(jsonb, jsonb); Type: FUNCTION; Schema: notifier; Owner: -
--

CREATE FUNCTION notifier.row_matches(row_data jsonb, filter jsonb) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$
    SELECT NOT EXISTS (
        SELECT 1
          FROM jsonb_array_elements(coalesce(filter, '[]')) AS c
         WHERE NOT notifier.condition_holds(
                   row_data #> ARRAY(SELECT jsonb_array_elements_text(c -> 'path')),
                   c ->> 'op',
                   c -> 'value')
    )
$$;

--
-- Name: timestamptz_columns(text, text); Type: FUNCTION; Schema: notifier; Owner: -
--

CREATE FUNCTION notifier.timestamptz_columns(table_schema text, table_name text) RETURNS text[]
    LANGUAGE plpgsql STABLE PARALLEL SAFE
    AS $$
BEGIN
    RETURN array(
        SELECT a.attname::text
          FROM pg_attribute a
         WHERE a.attrelid = to_regclass(format('%I.%I', table_schema, table_name))
           AND a.attnum > 0 AND NOT a.attisdropped
           AND a.atttypid = 'timestamptz'::regtype
         ORDER BY a.attnum);
END;
$$;

--
-- Name: to_jsonb_utc(anyelement); Type: FUNCTION; Schema: notifier; Owner: -
--

CREATE FUNCTION notifier.to_jsonb_utc(r anyelement) RETURNS jsonb
    LANGUAGE sql STABLE
    SET "TimeZone" TO 'UTC'
    AS $$ SELECT to_jsonb(r) $$;

--
-- Name: type_like(text[]); Type: FUNCTION; Schema: notifier; Owner: -
--

CREATE FUNCTION notifier.type_like(patterns text[]) RETURNS text[]
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
    AS $$
DECLARE
    pattern  text;
    literal  text;
    likes    text[] := '{}';
BEGIN
    FOREACH pattern IN ARRAY coalesce(patterns, '{}') LOOP
        IF pattern = '*' THEN
            likes := likes || '%'::text;
            CONTINUE;
        END IF;
        literal := replace(replace(replace(pattern, '\', '\\'), '%', '\%'), '_', '\_');
        IF right(pattern, 2) = '.*' THEN
            likes := likes || (left(literal, -1) || '%');
        ELSE
            likes := likes || literal;
        END IF;
    END LOOP;
    RETURN likes;
END;
$$;

--
-- Name: type_matches(text, text[]); Type: FUNCTION; Schema: notifier; Owner: -
--

CREATE FUNCTION notifier.type_matches(event_type text, patterns text[]) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$
    SELECT EXISTS (
        SELECT 1 FROM unnest(patterns) AS p
         WHERE p = '*' OR p = event_type
            OR (right(p, 2) = '.*' AND left(event_type, length(p) - 1) = left(p, length(p) - 1))
    )
$$;

--
-- Name: unwatch(regclass); Type: FUNCTION; Schema: notifier; Owner: -
--

CREATE FUNCTION notifier.unwatch(target regclass) RETURNS void
    LANGUAGE plpgsql
    AS $$
BEGIN
    EXECUTE format('DROP TRIGGER IF EXISTS notifier_capture ON %s', target);
END;
$$;

--
-- Name: uuid_v7(); Type: FUNCTION; Schema: notifier; Owner: -
--

CREATE FUNCTION notifier.uuid_v7() RETURNS uuid
    LANGUAGE sql PARALLEL SAFE
    AS $$
    SELECT encode(
        set_bit(set_bit(
            overlay(uuid_send(gen_random_uuid())
                    PLACING substring(int8send((extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
                    FROM 1 FOR 6),
            52, 1), 53, 1),
        'hex')::uuid
$$;

--
-- Name: uuid_v7_floor(timestamp with time zone); Type: FUNCTION; Schema: notifier; Owner: -
--

CREATE FUNCTION notifier.uuid_v7_floor(at timestamp with time zone) RETURNS uuid
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$
    SELECT encode(
        substring(int8send(greatest(floor(extract(epoch FROM at) * 1000), 0)::bigint) FROM 3)
        || '\x00000000000000000000'::bytea,
        'hex')::uuid
$$;

--
-- Name: watch(regclass, text); Type: FUNCTION; Schema: notifier; Owner: -
--

CREATE FUNCTION notifier.watch(target regclass, topic text) RETURNS void
    LANGUAGE plpgsql
    AS $_$
BEGIN
    IF topic IS NULL OR topic !~ '^[a-z][a-z0-9_]*$' THEN
        RAISE EXCEPTION 'invalid topic %: use lower-case letters, digits and underscores', quote_nullable(topic)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    EXECUTE format('DROP TRIGGER IF EXISTS notifier_capture ON %s', target);
    EXECUTE format(
        'CREATE TRIGGER notifier_capture AFTER INSERT OR UPDATE OR DELETE ON %s '
        'FOR EACH ROW EXECUTE FUNCTION notifier.capture(%L)', target, topic);
END;
$_$;

--
-- Name: ledger_apply_transaction(); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.ledger_apply_transaction() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
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

--
-- Name: ledger_forbid_change(); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.ledger_forbid_change() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    RAISE EXCEPTION 'transactions are append-only: % refused', TG_OP
        USING ERRCODE = 'WL004',
              HINT = 'Correct a transaction with a new, reversing transaction.';
END;
$$;

--
-- Name: ledger_guard_balance(); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.ledger_guard_balance() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
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

--
-- Name: ledger_open_account(); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.ledger_open_account() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
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

--
-- Name: batches_id_seq; Type: SEQUENCE; Schema: notifier; Owner: -
--

ALTER TABLE notifier.batches ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME notifier.batches_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);

--
-- Name: deliveries; Type: TABLE; Schema: notifier; Owner: -
--

CREATE TABLE notifier.deliveries (
    id bigint NOT NULL,
    event_id bigint NOT NULL,
    subscription_id bigint NOT NULL,
    status text DEFAULT 'pending'::text NOT NULL,
    attempts integer DEFAULT 0 NOT NULL,
    next_attempt_at timestamp with time zone DEFAULT now() NOT NULL,
    last_attempt_at timestamp with time zone,
    last_error text,
    completed_at timestamp with time zone,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    schedule_offset integer DEFAULT 0 NOT NULL,
    last_outcome text,
    ordering_key text,
    CONSTRAINT deliveries_attempts CHECK ((attempts >= 0)),
    CONSTRAINT deliveries_schedule_offset CHECK ((schedule_offset >= 0)),
    CONSTRAINT deliveries_status CHECK ((status = ANY (ARRAY['pending'::text, 'in_flight'::text, 'succeeded'::text, 'dead'::text])))
);

--
-- Name: COLUMN deliveries.next_attempt_at; Type: COMMENT; Schema: notifier; Owner: -
--

COMMENT ON COLUMN notifier.deliveries.next_attempt_at IS 'pending: when the next attempt may start; in_flight: when the holder''s lease expires.';

--
-- Name: COLUMN deliveries.ordering_key; Type: COMMENT; Schema: notifier; Owner: -
--

COMMENT ON COLUMN notifier.deliveries.ordering_key IS 'The key this delivery is ordered by (NULL: its subscription is not ordered).';

--
-- Name: deliveries_id_seq; Type: SEQUENCE; Schema: notifier; Owner: -
--

ALTER TABLE notifier.deliveries ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME notifier.deliveries_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);

--
-- Name: delivery_attempts; Type: TABLE; Schema: notifier; Owner: -
--

CREATE TABLE notifier.delivery_attempts (
    delivery_id bigint NOT NULL,
    attempt integer NOT NULL,
    started_at timestamp with time zone NOT NULL,
    duration_ms double precision NOT NULL,
    error text,
    detail text DEFAULT ''::text NOT NULL,
    outcome text NOT NULL
);

--
-- Name: COLUMN delivery_attempts.detail; Type: COMMENT; Schema: notifier; Owner: -
--

COMMENT ON COLUMN notifier.delivery_attempts.detail IS 'The start of what the destination answered, as text; empty when it did not answer.';

--
-- Name: COLUMN delivery_attempts.outcome; Type: COMMENT; Schema: notifier; Owner: -
--

COMMENT ON COLUMN notifier.delivery_attempts.outcome IS 'A short code: http_NNN for a webhook''s answer, else what happened (timeout, ...).';

--
-- Name: delivery_states; Type: VIEW; Schema: notifier; Owner: -
--

CREATE VIEW notifier.delivery_states AS
 SELECT d.event_id,
    d.subscription_id,
    d.id AS delivery_id,
    NULL::bigint AS batch_id,
    d.status,
    d.attempts,
    d.last_attempt_at,
    d.last_outcome,
    d.last_error,
    d.completed_at,
    d.created_at
   FROM notifier.deliveries d
UNION ALL
 SELECT i.event_id,
    b.subscription_id,
    NULL::bigint AS delivery_id,
    b.id AS batch_id,
        CASE
            WHEN (b.finished_at IS NULL) THEN 'in_flight'::text
            ELSE 'succeeded'::text
        END AS status,
    b.attempt AS attempts,
    b.sent_at[i.n] AS last_attempt_at,
    b.outcomes[i.n] AS last_outcome,
    NULL::text AS last_error,
    b.finished_at AS completed_at,
    b.claimed_at AS created_at
   FROM (notifier.batches b
     CROSS JOIN LATERAL unnest(b.event_ids) WITH ORDINALITY i(event_id, n))
  WHERE ((b.finished_at IS NULL) OR (b.outcomes[i.n] IS NOT NULL));

--
-- Name: VIEW delivery_states; Type: COMMENT; Schema: notifier; Owner: -
--

COMMENT ON VIEW notifier.delivery_states IS 'Each (event, subscription) delivery: a delivery row, or an event of a batch.';

--
-- Name: doorbell; Type: TABLE; Schema: notifier; Owner: -
--

CREATE TABLE notifier.doorbell (
    singleton boolean DEFAULT true NOT NULL,
    armed boolean DEFAULT false NOT NULL,
    CONSTRAINT doorbell_singleton CHECK (singleton)
);

--
-- Name: event_queue; Type: TABLE; Schema: notifier; Owner: -
--

CREATE TABLE notifier.event_queue (
    event_id bigint NOT NULL
);

--
-- Name: events; Type: TABLE; Schema: notifier; Owner: -
--

CREATE TABLE notifier.events (
    id bigint NOT NULL,
    uid uuid DEFAULT notifier.uuid_v7() NOT NULL,
    type text NOT NULL,
    topic text NOT NULL,
    table_schema text NOT NULL,
    table_name text NOT NULL,
    op text NOT NULL,
    data jsonb NOT NULL,
    previous jsonb,
    created_at timestamp with time zone DEFAULT clock_timestamp() NOT NULL,
    traceparent text,
    tracestate text,
    xid xid8 DEFAULT pg_current_xact_id(),
    CONSTRAINT events_op CHECK ((op = ANY (ARRAY['INSERT'::text, 'UPDATE'::text, 'DELETE'::text])))
);

--
-- Name: TABLE events; Type: COMMENT; Schema: notifier; Owner: -
--

COMMENT ON TABLE notifier.events IS 'Outbox: one row per captured change, immutable. uid is the public event id (webhook-id).';

--
-- Name: COLUMN events.traceparent; Type: COMMENT; Schema: notifier; Owner: -
--

COMMENT ON COLUMN notifier.events.traceparent IS 'W3C traceparent of the transaction that made the change (SET LOCAL notifier.traceparent), sent with every delivery.';

--
-- Name: COLUMN events.tracestate; Type: COMMENT; Schema: notifier; Owner: -
--

COMMENT ON COLUMN notifier.events.tracestate IS 'W3C tracestate that came with the traceparent (SET LOCAL notifier.tracestate).';

--
-- Name: COLUMN events.xid; Type: COMMENT; Schema: notifier; Owner: -
--

COMMENT ON COLUMN notifier.events.xid IS 'The top-level transaction that wrote the event: which window of each position holds it.';

--
-- Name: events_id_seq; Type: SEQUENCE; Schema: notifier; Owner: -
--

ALTER TABLE notifier.events ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME notifier.events_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);

--
-- Name: idempotency_keys; Type: TABLE; Schema: notifier; Owner: -
--

CREATE TABLE notifier.idempotency_keys (
    account_id bigint NOT NULL,
    key text NOT NULL,
    operation text NOT NULL,
    request_hash text NOT NULL,
    response_status integer,
    response_body text,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    expires_at timestamp with time zone NOT NULL,
    CONSTRAINT idempotency_keys_key_length CHECK (((length(key) >= 1) AND (length(key) <= 255)))
);

--
-- Name: schema_migrations; Type: TABLE; Schema: notifier; Owner: -
--

CREATE TABLE notifier.schema_migrations (
    version integer NOT NULL,
    name text NOT NULL,
    checksum text NOT NULL,
    applied_at timestamp with time zone DEFAULT now() NOT NULL
);

--
-- Name: subscriptions; Type: TABLE; Schema: notifier; Owner: -
--

CREATE TABLE notifier.subscriptions (
    id bigint NOT NULL,
    url text NOT NULL,
    description text DEFAULT ''::text NOT NULL,
    event_types text[] DEFAULT '{*}'::text[] NOT NULL,
    secret text NOT NULL,
    previous_secret text,
    previous_secret_expires_at timestamp with time zone,
    enabled boolean DEFAULT true NOT NULL,
    disabled_reason text,
    disabled_at timestamp with time zone,
    max_in_flight integer,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    filter jsonb DEFAULT '[]'::jsonb NOT NULL,
    last_success_at timestamp with time zone,
    last_failure_at timestamp with time zone,
    failing_since timestamp with time zone,
    consecutive_failures integer DEFAULT 0 NOT NULL,
    headers jsonb DEFAULT '{}'::jsonb NOT NULL,
    format text DEFAULT 'standard-webhooks'::text NOT NULL,
    ordering text DEFAULT 'none'::text NOT NULL,
    ordering_key text,
    last_error text,
    CONSTRAINT subscriptions_event_types_not_empty CHECK ((cardinality(event_types) > 0)),
    CONSTRAINT subscriptions_filter_array CHECK ((jsonb_typeof(filter) = 'array'::text)),
    CONSTRAINT subscriptions_format CHECK ((format = ANY (ARRAY['standard-webhooks'::text, 'cloudevents'::text]))),
    CONSTRAINT subscriptions_headers_object CHECK ((jsonb_typeof(headers) = 'object'::text)),
    CONSTRAINT subscriptions_http_extras CHECK (((url ~* '^https?://'::text) OR ((headers = '{}'::jsonb) AND (format = 'standard-webhooks'::text)))),
    CONSTRAINT subscriptions_max_in_flight CHECK ((max_in_flight > 0)),
    CONSTRAINT subscriptions_ordering CHECK ((ordering = ANY (ARRAY['none'::text, 'key'::text]))),
    CONSTRAINT subscriptions_ordering_key_name CHECK ((ordering_key ~ '^[A-Za-z_][A-Za-z0-9_]{0,62}$'::text)),
    CONSTRAINT subscriptions_ordering_key_set CHECK (((ordering = 'key'::text) = (ordering_key IS NOT NULL))),
    CONSTRAINT subscriptions_secret_format CHECK ((secret ~ '^whsec_'::text)),
    CONSTRAINT subscriptions_url_scheme CHECK ((url ~* '^(https?|amqps?|kafka|nats|sqs|sns|eventbridge)://'::text))
);

--
-- Name: COLUMN subscriptions.headers; Type: COMMENT; Schema: notifier; Owner: -
--

COMMENT ON COLUMN notifier.subscriptions.headers IS 'Extra HTTP headers sent with every delivery (name: value); the values are secrets.';

--
-- Name: COLUMN subscriptions.format; Type: COMMENT; Schema: notifier; Owner: -
--

COMMENT ON COLUMN notifier.subscriptions.format IS 'standard-webhooks (the event as the body) or cloudevents (structured mode, HTTP only).';

--
-- Name: COLUMN subscriptions.ordering_key; Type: COMMENT; Schema: notifier; Owner: -
--

COMMENT ON COLUMN notifier.subscriptions.ordering_key IS 'With ordering ''key'': the field of the event''s row whose value is the ordering key.';

--
-- Name: COLUMN subscriptions.last_error; Type: COMMENT; Schema: notifier; Owner: -
--

COMMENT ON COLUMN notifier.subscriptions.last_error IS 'The error of the last failed attempt (kept after a success, like last_failure_at).';

--
-- Name: subscriptions_id_seq; Type: SEQUENCE; Schema: notifier; Owner: -
--

ALTER TABLE notifier.subscriptions ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME notifier.subscriptions_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);

--
-- Name: watched_tables; Type: VIEW; Schema: notifier; Owner: -
--

CREATE VIEW notifier.watched_tables AS
 SELECT (c.oid)::regclass AS table_name,
    convert_from(SUBSTRING(t.tgargs FROM 1 FOR (POSITION(('\x00'::bytea) IN (t.tgargs)) - 1)), 'UTF8'::name) AS topic
   FROM (pg_trigger t
     JOIN pg_class c ON ((c.oid = t.tgrelid)))
  WHERE ((t.tgname = 'notifier_capture'::name) AND (NOT t.tgisinternal));

--
-- Name: accounts; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.accounts (
    id bigint NOT NULL,
    currency character(3) NOT NULL,
    balance bigint DEFAULT 0 NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT accounts_balance_non_negative CHECK ((balance >= 0)),
    CONSTRAINT accounts_currency_format CHECK ((currency ~ '^[A-Z]{3}$'::text))
);

--
-- Name: COLUMN accounts.balance; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON COLUMN public.accounts.balance IS 'Minor units (cents). Changes only through INSERT INTO transactions.';

--
-- Name: accounts_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.accounts_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;

--
-- Name: accounts_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: -
--

ALTER SEQUENCE public.accounts_id_seq OWNED BY public.accounts.id;

--
-- Name: transactions; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.transactions (
    id bigint NOT NULL,
    account_id bigint NOT NULL,
    kind text NOT NULL,
    amount bigint NOT NULL,
    currency character(3) NOT NULL,
    balance_after bigint NOT NULL,
    idempotency_key text,
    metadata jsonb DEFAULT '{}'::jsonb NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT transactions_amount_range CHECK (((amount > 0) AND (amount <= '1000000000000000'::bigint))),
    CONSTRAINT transactions_balance_after_non_negative CHECK ((balance_after >= 0)),
    CONSTRAINT transactions_idempotency_key_length CHECK (((idempotency_key IS NULL) OR ((length(idempotency_key) >= 1) AND (length(idempotency_key) <= 255)))),
    CONSTRAINT transactions_kind CHECK ((kind = ANY (ARRAY['top_up'::text, 'debit'::text]))),
    CONSTRAINT transactions_metadata_object CHECK ((jsonb_typeof(metadata) = 'object'::text))
);

--
-- Name: transactions_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.transactions_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;

--
-- Name: transactions_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: -
--

ALTER SEQUENCE public.transactions_id_seq OWNED BY public.transactions.id;

--
-- Name: batches batches_pkey; Type: CONSTRAINT; Schema: notifier; Owner: -
--

ALTER TABLE ONLY notifier.batches
    ADD CONSTRAINT batches_pkey PRIMARY KEY (id);

--
-- Name: deliveries deliveries_event_subscription; Type: CONSTRAINT; Schema: notifier; Owner: -
--

ALTER TABLE ONLY notifier.deliveries
    ADD CONSTRAINT deliveries_event_subscription UNIQUE (event_id, subscription_id);

--
-- Name: deliveries deliveries_pkey; Type: CONSTRAINT; Schema: notifier; Owner: -
--

ALTER TABLE ONLY notifier.deliveries
    ADD CONSTRAINT deliveries_pkey PRIMARY KEY (id);

--
-- Name: delivery_attempts delivery_attempts_pkey; Type: CONSTRAINT; Schema: notifier; Owner: -
--

ALTER TABLE ONLY notifier.delivery_attempts
    ADD CONSTRAINT delivery_attempts_pkey PRIMARY KEY (delivery_id, attempt);

--
-- Name: doorbell doorbell_pkey; Type: CONSTRAINT; Schema: notifier; Owner: -
--

ALTER TABLE ONLY notifier.doorbell
    ADD CONSTRAINT doorbell_pkey PRIMARY KEY (singleton);

--
-- Name: event_queue event_queue_pkey; Type: CONSTRAINT; Schema: notifier; Owner: -
--

ALTER TABLE ONLY notifier.event_queue
    ADD CONSTRAINT event_queue_pkey PRIMARY KEY (event_id);

--
-- Name: events events_pkey; Type: CONSTRAINT; Schema: notifier; Owner: -
--

ALTER TABLE ONLY notifier.events
    ADD CONSTRAINT events_pkey PRIMARY KEY (id);

--
-- Name: idempotency_keys idempotency_keys_pkey; Type: CONSTRAINT; Schema: notifier; Owner: -
--

ALTER TABLE ONLY notifier.idempotency_keys
    ADD CONSTRAINT idempotency_keys_pkey PRIMARY KEY (account_id, key);

--
-- Name: ordering_keys ordering_keys_pkey; Type: CONSTRAINT; Schema: notifier; Owner: -
--

ALTER TABLE ONLY notifier.ordering_keys
    ADD CONSTRAINT ordering_keys_pkey PRIMARY KEY (subscription_id, key);

--
-- Name: positions positions_pkey; Type: CONSTRAINT; Schema: notifier; Owner: -
--

ALTER TABLE ONLY notifier.positions
    ADD CONSTRAINT positions_pkey PRIMARY KEY (subscription_id);

--
-- Name: schema_migrations schema_migrations_pkey; Type: CONSTRAINT; Schema: notifier; Owner: -
--

ALTER TABLE ONLY notifier.schema_migrations
    ADD CONSTRAINT schema_migrations_pkey PRIMARY KEY (version);

--
-- Name: subscriptions subscriptions_pkey; Type: CONSTRAINT; Schema: notifier; Owner: -
--

ALTER TABLE ONLY notifier.subscriptions
    ADD CONSTRAINT subscriptions_pkey PRIMARY KEY (id);

--
-- Name: accounts accounts_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.accounts
    ADD CONSTRAINT accounts_pkey PRIMARY KEY (id);

--
-- Name: transactions transactions_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.transactions
    ADD CONSTRAINT transactions_pkey PRIMARY KEY (id);

--
-- Name: batches_span; Type: INDEX; Schema: notifier; Owner: -
--

CREATE INDEX batches_span ON notifier.batches USING gist (notifier.batch_span(event_ids));

--
-- Name: batches_subscription; Type: INDEX; Schema: notifier; Owner: -
--

CREATE INDEX batches_subscription ON notifier.batches USING btree (subscription_id, id);

--
-- Name: batches_unfinished; Type: INDEX; Schema: notifier; Owner: -
--

CREATE INDEX batches_unfinished ON notifier.batches USING btree (lease_expires_at) WHERE (finished_at IS NULL);

--
-- Name: deliveries_dead; Type: INDEX; Schema: notifier; Owner: -
--

CREATE INDEX deliveries_dead ON notifier.deliveries USING btree (subscription_id, id) WHERE (status = 'dead'::text);

--
-- Name: deliveries_due; Type: INDEX; Schema: notifier; Owner: -
--

CREATE INDEX deliveries_due ON notifier.deliveries USING btree (next_attempt_at) WHERE (status = ANY (ARRAY['pending'::text, 'in_flight'::text]));

--
-- Name: deliveries_key_waiting; Type: INDEX; Schema: notifier; Owner: -
--

CREATE INDEX deliveries_key_waiting ON notifier.deliveries USING btree (subscription_id, ordering_key, event_id) WHERE ((status = 'pending'::text) AND (next_attempt_at = 'infinity'::timestamp with time zone));

--
-- Name: deliveries_subscription_id; Type: INDEX; Schema: notifier; Owner: -
--

CREATE INDEX deliveries_subscription_id ON notifier.deliveries USING btree (subscription_id, id);

--
-- Name: events_uid; Type: INDEX; Schema: notifier; Owner: -
--

CREATE UNIQUE INDEX events_uid ON notifier.events USING btree (uid);

--
-- Name: events_xid; Type: INDEX; Schema: notifier; Owner: -
--

CREATE INDEX events_xid ON notifier.events USING btree (xid) WHERE (xid IS NOT NULL);

--
-- Name: idempotency_keys_expires_at; Type: INDEX; Schema: notifier; Owner: -
--

CREATE INDEX idempotency_keys_expires_at ON notifier.idempotency_keys USING btree (expires_at);

--
-- Name: ordering_keys_freed; Type: INDEX; Schema: notifier; Owner: -
--

CREATE INDEX ordering_keys_freed ON notifier.ordering_keys USING btree (subscription_id, key) WHERE ((head IS NULL) AND (waiting > 0));

--
-- Name: transactions_account_id_id; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX transactions_account_id_id ON public.transactions USING btree (account_id, id DESC);

--
-- Name: transactions_account_idempotency_key; Type: INDEX; Schema: public; Owner: -
--

CREATE UNIQUE INDEX transactions_account_idempotency_key ON public.transactions USING btree (account_id, idempotency_key) WHERE (idempotency_key IS NOT NULL);

--
-- Name: subscriptions subscriptions_position; Type: TRIGGER; Schema: notifier; Owner: -
--

CREATE TRIGGER subscriptions_position AFTER INSERT OR UPDATE OF enabled ON notifier.subscriptions FOR EACH ROW EXECUTE FUNCTION notifier.position_start();

--
-- Name: transactions ledger_apply_transaction; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER ledger_apply_transaction BEFORE INSERT ON public.transactions FOR EACH ROW EXECUTE FUNCTION public.ledger_apply_transaction();

--
-- Name: transactions ledger_forbid_truncate; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER ledger_forbid_truncate BEFORE TRUNCATE ON public.transactions FOR EACH STATEMENT EXECUTE FUNCTION public.ledger_forbid_change();

--
-- Name: transactions ledger_forbid_update_delete; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER ledger_forbid_update_delete BEFORE DELETE OR UPDATE ON public.transactions FOR EACH ROW EXECUTE FUNCTION public.ledger_forbid_change();

--
-- Name: accounts ledger_guard_balance; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER ledger_guard_balance BEFORE INSERT OR UPDATE ON public.accounts FOR EACH ROW EXECUTE FUNCTION public.ledger_guard_balance();

--
-- Name: accounts ledger_open_account; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER ledger_open_account BEFORE INSERT ON public.accounts FOR EACH ROW EXECUTE FUNCTION public.ledger_open_account();

--
-- Name: transactions notifier_capture; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER notifier_capture AFTER INSERT OR DELETE OR UPDATE ON public.transactions FOR EACH ROW EXECUTE FUNCTION notifier.capture('transaction');

--
-- Name: batches batches_subscription_id_fkey; Type: FK CONSTRAINT; Schema: notifier; Owner: -
--

ALTER TABLE ONLY notifier.batches
    ADD CONSTRAINT batches_subscription_id_fkey FOREIGN KEY (subscription_id) REFERENCES notifier.subscriptions(id) ON DELETE CASCADE;

--
-- Name: deliveries deliveries_event_id_fkey; Type: FK CONSTRAINT; Schema: notifier; Owner: -
--

ALTER TABLE ONLY notifier.deliveries
    ADD CONSTRAINT deliveries_event_id_fkey FOREIGN KEY (event_id) REFERENCES notifier.events(id) ON DELETE CASCADE;

--
-- Name: deliveries deliveries_subscription_id_fkey; Type: FK CONSTRAINT; Schema: notifier; Owner: -
--

ALTER TABLE ONLY notifier.deliveries
    ADD CONSTRAINT deliveries_subscription_id_fkey FOREIGN KEY (subscription_id) REFERENCES notifier.subscriptions(id) ON DELETE CASCADE;

--
-- Name: delivery_attempts delivery_attempts_delivery_id_fkey; Type: FK CONSTRAINT; Schema: notifier; Owner: -
--

ALTER TABLE ONLY notifier.delivery_attempts
    ADD CONSTRAINT delivery_attempts_delivery_id_fkey FOREIGN KEY (delivery_id) REFERENCES notifier.deliveries(id) ON DELETE CASCADE;

--
-- Name: ordering_keys ordering_keys_subscription_id_fkey; Type: FK CONSTRAINT; Schema: notifier; Owner: -
--

ALTER TABLE ONLY notifier.ordering_keys
    ADD CONSTRAINT ordering_keys_subscription_id_fkey FOREIGN KEY (subscription_id) REFERENCES notifier.subscriptions(id) ON DELETE CASCADE;

--
-- Name: positions positions_subscription_id_fkey; Type: FK CONSTRAINT; Schema: notifier; Owner: -
--

ALTER TABLE ONLY notifier.positions
    ADD CONSTRAINT positions_subscription_id_fkey FOREIGN KEY (subscription_id) REFERENCES notifier.subscriptions(id) ON DELETE CASCADE;

--
-- Name: transactions transactions_account_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.transactions
    ADD CONSTRAINT transactions_account_id_fkey FOREIGN KEY (account_id) REFERENCES public.accounts(id);

--
-- PostgreSQL database dump complete
--
