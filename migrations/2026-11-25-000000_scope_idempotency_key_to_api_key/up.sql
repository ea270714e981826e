-- An idempotency key belongs to the API key that used it (by the API key's digest, which is never
-- reused; empty for callers without one), so that two clients choosing the same name never see
-- each other's responses.
ALTER TABLE idempotency_key ADD COLUMN owner bytea NOT NULL DEFAULT '\x';
ALTER TABLE idempotency_key DROP CONSTRAINT idempotency_key_pkey;
ALTER TABLE idempotency_key ADD PRIMARY KEY (owner, key);
