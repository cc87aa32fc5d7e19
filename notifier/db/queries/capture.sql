-- name: watch
SELECT notifier.watch($1::text::regclass, $2);

-- name: unwatch
SELECT notifier.unwatch($1::text::regclass);

-- name: watched
SELECT table_name::text AS table_name, topic FROM notifier.watched_tables ORDER BY 1;
