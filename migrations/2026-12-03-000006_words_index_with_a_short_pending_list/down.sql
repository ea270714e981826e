ALTER INDEX book_words_idx SET (fastupdate = off);
ALTER INDEX book_words_idx RESET (gin_pending_list_limit);
SELECT gin_clean_pending_list('book_words_idx'::regclass);
