-- Ranked search that forgives typos (GET /api/v1/books/search; the rules and the ranking are the
-- domain's, crates/domain/src/search.rs). PostgreSQL finds the candidates:
--
-- * `book_search_words` splits text into words at the separators the domain names
--   (`books_domain::is_separator`: the same set, spelled here as a regular expression) and folds
--   each word to lower case without diacritics. Words keep their order, so that the service can
--   line them up with the text when it highlights matches.
-- * `title_words` and `author_words` hold each book's folded words, computed by PostgreSQL on
--   every write of every path, and one GIN index answers "books with any of these words".
-- * `search_word` is the dictionary of every word the catalogue has used: a query word is
--   expanded to the dictionary's words within its typo budget (trigram index, then Levenshtein
--   distance as a prefilter; the service confirms the swap-aware distance) and, for the last
--   query word, to the words it begins (B-tree range on the C collation). Statement triggers add
--   new words in the writing transaction; words no book uses any more stay, and only cost a
--   lookup that finds no book.
--
-- The extensions are contrib's and trusted (PostgreSQL 13+): a database owner may create them.
-- The service creates them before it migrates and, where it may not, stops with the SQL to run.
CREATE EXTENSION IF NOT EXISTS unaccent;
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE EXTENSION IF NOT EXISTS fuzzystrmatch;

-- IMMUTABLE so that it can compute stored columns: the unaccent rules are taken as fixed (a
-- change to them needs the columns recomputed, as for any such index). Lower case is ICU's, so
-- that it folds every script whatever the database's own locale.
CREATE FUNCTION book_search_words(text) RETURNS text[]
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    SET search_path FROM CURRENT
AS $$
    SELECT coalesce(array_agg(lower(unaccent('unaccent', word) COLLATE "und-x-icu") ORDER BY n), '{}')
    FROM regexp_split_to_table(
        $1,
        '[\x01-\x2F\x3A-\x40\x5B-\x60\x7B-\xBF\xD7\xF7\u1680\u2000-\u206F\u3000-\u303F\uFF01-\uFF0F]+'
    ) WITH ORDINALITY AS t (word, n)
    WHERE word <> ''
$$;

ALTER TABLE book
    ADD COLUMN title_words text[] NOT NULL GENERATED ALWAYS AS (book_search_words(title)) STORED,
    ADD COLUMN author_words text[] NOT NULL GENERATED ALWAYS AS (book_search_words(author)) STORED;
CREATE INDEX book_words_idx ON book USING gin ((title_words || author_words));

CREATE TABLE search_word (
    word text COLLATE "C" PRIMARY KEY
);
CREATE INDEX search_word_trgm_idx ON search_word USING gin (word gin_trgm_ops);
INSERT INTO search_word (word)
SELECT DISTINCT word FROM book, unnest(title_words || author_words) AS word
ON CONFLICT DO NOTHING;

-- Once per statement, whatever its number of rows; in word order, so that two writers adding
-- the same new words never wait for each other in a circle.
CREATE FUNCTION remember_search_words() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO search_word (word)
    SELECT DISTINCT word FROM written, unnest(written.title_words || written.author_words) AS word
    ORDER BY word
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END
$$;
CREATE TRIGGER book_words_inserted AFTER INSERT ON book
    REFERENCING NEW TABLE AS written FOR EACH STATEMENT EXECUTE FUNCTION remember_search_words();
CREATE TRIGGER book_words_updated AFTER UPDATE ON book
    REFERENCING NEW TABLE AS written FOR EACH STATEMENT EXECUTE FUNCTION remember_search_words();
