-- Going back forgets every idempotency key: a single create's fields cannot be recovered from
-- its digest, and the rows do not say which were batches. A retry then creates its books again.
DELETE FROM idempotency_key;
ALTER TABLE idempotency_key DROP CONSTRAINT idempotency_key_request_digest_length;
ALTER TABLE idempotency_key
    ADD COLUMN title varchar(250),
    ADD COLUMN author varchar(250),
    ADD COLUMN genre varchar(250),
    ADD COLUMN book_id bigint,
    ADD COLUMN batch_digest bytea CHECK (length(batch_digest) = 32);
ALTER TABLE idempotency_key DROP COLUMN request_digest;
ALTER TABLE idempotency_key DROP COLUMN digest_fields;
ALTER TABLE idempotency_key ADD CONSTRAINT idempotency_key_one_book_or_a_batch CHECK (
    (batch_digest IS NULL AND book_ids IS NULL AND title IS NOT NULL AND author IS NOT NULL)
    OR (batch_digest IS NOT NULL AND title IS NULL AND author IS NULL AND genre IS NULL)
);
