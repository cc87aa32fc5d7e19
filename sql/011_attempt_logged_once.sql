-- Each attempt is logged once. A settlement whose COMMIT reached the server but whose
-- answer was lost with the connection is sent again when the database is back; the
-- second copy of its log row is now ignored instead of kept. (delivery_id, attempt) is
-- the attempt's identity: the attempt number is the delivery's fencing token, counted up
-- by every claim.
DELETE FROM notifier.delivery_attempts a
 USING notifier.delivery_attempts b
 WHERE a.delivery_id = b.delivery_id AND a.attempt = b.attempt AND a.id > b.id;

DROP INDEX notifier.delivery_attempts_delivery_id;
CREATE UNIQUE INDEX delivery_attempts_delivery_id
    ON notifier.delivery_attempts (delivery_id, attempt);
