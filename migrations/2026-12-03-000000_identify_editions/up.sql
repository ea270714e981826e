-- What identifies an edition: its ISBN, stored as the 13 digits of its ISBN-13 (the service reads
-- every accepted spelling into this form, so one ISBN has one spelling here), and the year it
-- was published. An ISBN names one book: `book_isbn_key` is the name the service recognises in
-- a unique violation, to answer 409 with the book that has it.
ALTER TABLE book
    ADD COLUMN isbn varchar(13)
        CONSTRAINT book_isbn_is_an_isbn_13 CHECK (isbn ~ '^97[89][0-9]{10}$'),
    ADD COLUMN published_year integer
        CONSTRAINT book_published_year_in_range CHECK (published_year BETWEEN -3000 AND 2100),
    ADD CONSTRAINT book_isbn_key UNIQUE (isbn);

-- The feed carries the book as each change left it, new fields included.
ALTER TABLE book_change
    ADD COLUMN isbn varchar(13),
    ADD COLUMN published_year integer;

CREATE OR REPLACE FUNCTION record_book_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        INSERT INTO book_change (kind, book_id, version, at)
        VALUES ('deleted', OLD.id, OLD.version + 1, now());
    ELSE
        INSERT INTO book_change (kind, book_id, version, at, title, author, genre, isbn,
                                 published_year, created_at, updated_at)
        VALUES (CASE TG_OP WHEN 'INSERT' THEN 'created' ELSE 'updated' END, NEW.id, NEW.version,
                NEW.updated_at, NEW.title, NEW.author, NEW.genre, NEW.isbn, NEW.published_year,
                NEW.created_at, NEW.updated_at);
    END IF;
    RETURN NULL;
END
$$;
