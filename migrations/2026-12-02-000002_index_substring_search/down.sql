DROP INDEX IF EXISTS book_author_trgm_idx;
DROP INDEX IF EXISTS book_title_trgm_idx;
