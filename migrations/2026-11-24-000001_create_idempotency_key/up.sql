-- Idempotency keys of POST /books: the fields the first request came with and the book it made.
-- A retry with the same key and fields replays that book; other fields are refused.
CREATE TABLE idempotency_key (
    key        varchar(255) PRIMARY KEY,
    title      varchar(250) NOT NULL,
    author     varchar(250) NOT NULL,
    genre      varchar(250),
    book_id    bigint,
    created_at timestamptz  NOT NULL DEFAULT now()
);

-- The purge deletes by age.
CREATE INDEX idempotency_key_created_at_idx ON idempotency_key (created_at);
