-- An attempt is named by its delivery and its number, which are unique already: the
-- surrogate id was read by nothing, and its index was one more entry (and eight bytes)
-- written for every attempt. Dropping the column drops its constraint and sequence;
-- the unique index becomes the primary key with no scan (both columns are NOT NULL).
ALTER TABLE notifier.delivery_attempts DROP COLUMN id;
ALTER TABLE notifier.delivery_attempts
    ADD CONSTRAINT delivery_attempts_pkey PRIMARY KEY USING INDEX delivery_attempts_delivery_id;
