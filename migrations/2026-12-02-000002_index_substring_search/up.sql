-- The listing's `q` is a substring search (`title ILIKE '%q%' OR author ILIKE '%q%'`), which no
-- B-tree can serve: without an index each distinct `q` read the whole table (380 ms over 84,000
-- books), and a few clients sending distinct values starved every other listing. Trigram indexes
-- (pg_trgm, a contrib extension that PostgreSQL marks trusted: a database owner may create it)
-- serve ILIKE for terms of three characters and more; shorter terms are kept apart from other
-- listings by the service (see crates/http/src/coalesce.rs).
--
-- Where the extension cannot be created (not installed, or a role without the right), the
-- service still works, with `q` unindexed; a warning says so.
DO $$
BEGIN
    CREATE EXTENSION IF NOT EXISTS pg_trgm;
EXCEPTION WHEN OTHERS THEN
    RAISE WARNING 'pg_trgm is not available (%): the listing''s q is served without an index', SQLERRM;
END
$$;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm') THEN
        CREATE INDEX IF NOT EXISTS book_title_trgm_idx ON book USING gin (title gin_trgm_ops);
        CREATE INDEX IF NOT EXISTS book_author_trgm_idx ON book USING gin (author gin_trgm_ops);
    END IF;
END
$$;
