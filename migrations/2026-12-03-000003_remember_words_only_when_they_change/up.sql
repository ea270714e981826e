-- A patch that leaves title and author alone (a new genre, year or ISBN: most of them) no longer
-- runs the dictionary's query. The statement trigger ran one INSERT … ON CONFLICT per UPDATE
-- whatever it changed, and that query was most of what search cost a patch (pgbench, 32
-- clients, a genre patch over 100,000 books: about 17 % of its throughput; docs/performance.md).
--
-- Row by row now, because only a row trigger can say when it fires: words are added for the
-- rows whose words changed, each row's in word order. Two multi-row updates that give their
-- books the same two new words in opposite orders could now wait for each other; PostgreSQL
-- then fails one statement (a deadlock), and the service writes that statement's patches one by
-- one, as after any failure of a coalesced update. Inserts keep the statement trigger: every
-- insert adds words, and one sorted statement per batch cannot deadlock.
CREATE FUNCTION remember_changed_search_words() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO search_word (word)
    SELECT DISTINCT word FROM unnest(NEW.title_words || NEW.author_words) AS word
    ORDER BY word
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END
$$;

DROP TRIGGER book_words_updated ON book;
CREATE TRIGGER book_words_updated AFTER UPDATE ON book FOR EACH ROW
    WHEN (OLD.title_words IS DISTINCT FROM NEW.title_words
          OR OLD.author_words IS DISTINCT FROM NEW.author_words)
    EXECUTE FUNCTION remember_changed_search_words();
