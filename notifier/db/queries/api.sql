-- name: ping
-- Readiness of the HTTP API: the database answers a query.
SELECT 1;
