-- Keys that only their owners told apart cannot share one name again: keep the oldest of each.
DELETE FROM idempotency_key AS later
 USING idempotency_key AS earlier
 WHERE later.key = earlier.key
   AND (later.created_at, later.owner) > (earlier.created_at, earlier.owner);
ALTER TABLE idempotency_key DROP CONSTRAINT idempotency_key_pkey;
ALTER TABLE idempotency_key DROP COLUMN owner;
ALTER TABLE idempotency_key ADD PRIMARY KEY (key);
