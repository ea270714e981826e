-- The words index takes each write's entries at once instead of into GIN's pending list. With the
-- list (the default, up to 4 MB), every search scans all of it, in every one of its index scans:
-- after a burst of creates a search on a million books took 95 ms at the median and 557 ms at
-- p95 instead of tens of ms (bench/run.py, search after POST at 1M books), and an unknown word's
-- lookup went from 2 to 4.7 ms with 17,000 pending entries. Creates measured no slower without
-- it (pgbench, 32 clients, varied and identical titles, alternated: docs/performance.md).
ALTER INDEX book_words_idx SET (fastupdate = off);
-- Turning the list off does not empty it.
SELECT gin_clean_pending_list('book_words_idx'::regclass);
