-- A batch create remembers its idempotency key too: the digest of the books it came with (in
-- order) and the ids it created (in the same order). Single and batch creates share the keys'
-- namespace, so a row is either one book's fields or one batch's digest, never both.
ALTER TABLE idempotency_key ALTER COLUMN title DROP NOT NULL;
ALTER TABLE idempotency_key ALTER COLUMN author DROP NOT NULL;
ALTER TABLE idempotency_key ADD COLUMN batch_digest bytea CHECK (length(batch_digest) = 32);
ALTER TABLE idempotency_key ADD COLUMN book_ids bigint[];
ALTER TABLE idempotency_key ADD CONSTRAINT idempotency_key_one_book_or_a_batch CHECK (
    (batch_digest IS NULL AND book_ids IS NULL AND title IS NOT NULL AND author IS NOT NULL)
    OR (batch_digest IS NOT NULL AND title IS NULL AND author IS NULL AND genre IS NULL)
);
