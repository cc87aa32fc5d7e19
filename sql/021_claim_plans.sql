-- What a claim of one new event costs, measured one statement at a time inside advance()
-- (auto_explain, nested statements): of its 1.1 ms, 0.19 ms went on matching the event's
-- type, an SQL function with a subquery that is planned again each time the claim runs,
-- and 0.17 ms on a scan of the whole outbox for the transactions the position's snapshot
-- saw in progress, planned generically for an array of unknown length even when it was
-- empty (as it is unless a writer was in the middle of its transaction).
-- Same arguments, same answers; the previous release's statements call it unchanged.

-- A subscription's event-type patterns as LIKE patterns: '*' is every type, 'topic.*'
-- every type that starts with 'topic.', anything else that type alone.
-- `t LIKE ANY (notifier.type_like(patterns))` is `notifier.type_matches(t, patterns)`.
CREATE FUNCTION notifier.type_like(patterns text[]) RETURNS text[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
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

CREATE OR REPLACE FUNCTION notifier.advance(subscription bigint, wanted integer, cut pg_snapshot)
RETURNS bigint[]
LANGUAGE plpgsql AS $$
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
