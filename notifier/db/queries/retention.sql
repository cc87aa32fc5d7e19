-- name: budget
-- The lock and time budget of one batch: the batch gives up rather than wait or run long.
-- Each batch is planned for the tables as they are (as on the daemon's own sessions, and
-- also for `notifier retention run`): a generic plan made while the outbox was small
-- would be kept for every later batch, and for the cascades' lookups.
SELECT set_config('lock_timeout', $1, true), set_config('statement_timeout', $1, true),
       set_config('plan_cache_mode', 'force_custom_plan', true);

-- name: try_lock
-- Only one retention run at a time, across every daemon and `notifier retention run`.
SELECT pg_try_advisory_lock(hashtext('notifier.retention'));

-- name: unlock
SELECT pg_advisory_unlock(hashtext('notifier.retention'));

-- name: purge_batch
-- One batch: the next $2 events after id $1 in id order (ids grow with time, so old
-- events come first and no index on created_at is needed). Of those, delete the ones
-- older than $3 seconds that every enabled subscription's position has passed, that no
-- held batch holds, and whose deliveries are all final: succeeded, or dead for longer
-- than $4 seconds. Rows another transaction holds are skipped, not waited for.
-- Deliveries and attempts go with their event (cascade); batches have their own step.
WITH scan AS (
    SELECT id, created_at FROM notifier.events WHERE id > $1 ORDER BY id LIMIT $2
),
doomed AS (
    SELECT e.id
      FROM notifier.events e
     WHERE e.id IN (SELECT id FROM scan WHERE created_at < now() - make_interval(secs => $3))
       AND NOT EXISTS (SELECT 1 FROM notifier.positions p
                         JOIN notifier.subscriptions s ON s.id = p.subscription_id AND s.enabled
                        WHERE NOT notifier.passed(p, e.xid, e.id))
       AND NOT EXISTS (SELECT 1 FROM notifier.batches b
                        WHERE notifier.batch_span(b.event_ids) @> e.id AND b.finished_at IS NULL
                          AND e.id = ANY (b.event_ids))
       AND NOT EXISTS (
               SELECT 1 FROM notifier.deliveries d
                WHERE d.event_id = e.id
                  AND d.status <> 'succeeded'
                  AND NOT (d.status = 'dead'
                           AND d.completed_at < now() - make_interval(secs => $4)))
       FOR UPDATE SKIP LOCKED
),
deleted AS (
    DELETE FROM notifier.events e USING doomed WHERE e.id = doomed.id RETURNING e.id
)
SELECT (SELECT max(id) FROM scan) AS last_id,
       (SELECT count(*) FROM scan) AS scanned,
       (SELECT count(*) FROM deleted) AS deleted,
       coalesce((SELECT bool_and(created_at < now() - make_interval(secs => $3)) FROM scan),
                false) AS all_old;

-- name: purge_batches
-- Up to $2 recorded batches older than $1 seconds none of whose events is left.
DELETE FROM notifier.batches b
 WHERE b.id IN (SELECT c.id FROM notifier.batches c
                 WHERE c.finished_at < now() - make_interval(secs => $1)
                   AND NOT EXISTS (SELECT 1 FROM notifier.events e WHERE e.id = ANY (c.event_ids))
                 ORDER BY c.id
                 LIMIT $2
                   FOR UPDATE SKIP LOCKED);
