DELETE FROM idempotency_key WHERE batch_digest IS NOT NULL;
ALTER TABLE idempotency_key DROP CONSTRAINT idempotency_key_one_book_or_a_batch;
ALTER TABLE idempotency_key DROP COLUMN book_ids;
ALTER TABLE idempotency_key DROP COLUMN batch_digest;
ALTER TABLE idempotency_key ALTER COLUMN author SET NOT NULL;
ALTER TABLE idempotency_key ALTER COLUMN title SET NOT NULL;
