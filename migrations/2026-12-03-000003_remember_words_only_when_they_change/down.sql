DROP TRIGGER book_words_updated ON book;
CREATE TRIGGER book_words_updated AFTER UPDATE ON book
    REFERENCING NEW TABLE AS written FOR EACH STATEMENT EXECUTE FUNCTION remember_search_words();
DROP FUNCTION remember_changed_search_words();
