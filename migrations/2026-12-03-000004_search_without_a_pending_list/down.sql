ALTER INDEX book_words_idx RESET (fastupdate);
