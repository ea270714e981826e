-- The catalogue. Ids come from an identity sequence, so they are never reused.
CREATE TABLE book (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    title      varchar(250) NOT NULL CHECK (title <> ''),
    author     varchar(250) NOT NULL CHECK (author <> ''),
    genre      varchar(250)          CHECK (genre <> ''),
    version    bigint       NOT NULL DEFAULT 1 CHECK (version > 0),
    created_at timestamptz  NOT NULL DEFAULT now(),
    updated_at timestamptz  NOT NULL DEFAULT now()
);

-- Keyset pagination: every sort order is (key, id), so each has an index on exactly that pair
-- and a page costs the same at any depth. The id order is served by the primary key.
CREATE INDEX book_title_id_idx      ON book (title, id);
CREATE INDEX book_author_id_idx     ON book (author, id);
CREATE INDEX book_created_at_id_idx ON book (created_at, id);

-- Case-insensitive exact filters.
CREATE INDEX book_lower_author_idx ON book (lower(author), id);
CREATE INDEX book_lower_genre_idx  ON book (lower(genre), id);
