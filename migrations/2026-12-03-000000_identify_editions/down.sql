CREATE OR REPLACE FUNCTION record_book_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        INSERT INTO book_change (kind, book_id, version, at)
        VALUES ('deleted', OLD.id, OLD.version + 1, now());
    ELSE
        INSERT INTO book_change (kind, book_id, version, at, title, author, genre, created_at, updated_at)
        VALUES (CASE TG_OP WHEN 'INSERT' THEN 'created' ELSE 'updated' END, NEW.id, NEW.version,
                NEW.updated_at, NEW.title, NEW.author, NEW.genre, NEW.created_at, NEW.updated_at);
    END IF;
    RETURN NULL;
END
$$;

ALTER TABLE book_change DROP COLUMN isbn, DROP COLUMN published_year;
ALTER TABLE book DROP COLUMN isbn, DROP COLUMN published_year;
