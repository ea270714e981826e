-- An idempotency key remembers a digest of what its create asked for, for a single create as for
-- a batch (`NewBook::digest`, `NewBooks::digest` in the domain), and the ids it made: no column
-- per field of a book, so a new field needs nothing here.
ALTER TABLE idempotency_key DROP CONSTRAINT idempotency_key_one_book_or_a_batch;
ALTER TABLE idempotency_key ADD COLUMN request_digest bytea;

-- A batch's digest is unchanged.
UPDATE idempotency_key SET request_digest = batch_digest WHERE batch_digest IS NOT NULL;

-- A single create's digest, as the domain computes it: the marker 2, then each field in order,
-- 0 for none or 1, its length in UTF-8 bytes (8 bytes, big-endian) and its bytes. Keys whose
-- create never finished (no book) are dropped: a retry then creates the book.
DELETE FROM idempotency_key WHERE batch_digest IS NULL AND book_id IS NULL;
UPDATE idempotency_key SET
    request_digest = sha256(
        '\x02'::bytea
        || '\x01'::bytea || int8send(octet_length(convert_to(title, 'UTF8'))::bigint)
        || convert_to(title, 'UTF8')
        || '\x01'::bytea || int8send(octet_length(convert_to(author, 'UTF8'))::bigint)
        || convert_to(author, 'UTF8')
        || CASE WHEN genre IS NULL THEN '\x00'::bytea
                ELSE '\x01'::bytea || int8send(octet_length(convert_to(genre, 'UTF8'))::bigint)
                     || convert_to(genre, 'UTF8')
           END),
    book_ids = ARRAY[book_id]
WHERE batch_digest IS NULL;

ALTER TABLE idempotency_key
    DROP COLUMN title,
    DROP COLUMN author,
    DROP COLUMN genre,
    DROP COLUMN book_id,
    DROP COLUMN batch_digest;
ALTER TABLE idempotency_key ALTER COLUMN request_digest SET NOT NULL;
-- How many of the book's fields (in the domain's order) the digest covers: every key stored so
-- far covers title, author and genre. A key stored before a field is added keeps its count, and
-- a retry is compared over those fields (`RequestDigest`), so it still replays after the upgrade.
ALTER TABLE idempotency_key ADD COLUMN digest_fields smallint NOT NULL DEFAULT 3
    CHECK (digest_fields > 0);
ALTER TABLE idempotency_key ALTER COLUMN digest_fields DROP DEFAULT;
ALTER TABLE idempotency_key ADD CONSTRAINT idempotency_key_request_digest_length
    CHECK (length(request_digest) = 32);
