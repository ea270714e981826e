DROP TRIGGER book_words_updated ON book;
DROP TRIGGER book_words_inserted ON book;
DROP FUNCTION remember_search_words();
DROP TABLE search_word;
DROP INDEX book_words_idx;
ALTER TABLE book DROP COLUMN title_words, DROP COLUMN author_words;
DROP FUNCTION book_search_words(text);
