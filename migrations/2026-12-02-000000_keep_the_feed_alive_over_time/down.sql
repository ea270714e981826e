CREATE OR REPLACE FUNCTION record_book_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        INSERT INTO book_change (kind, book_id, version, at)
        VALUES ('deleted', OLD.id, OLD.version, now());
    ELSE
        INSERT INTO book_change (kind, book_id, version, at, title, author, genre, created_at, updated_at)
        VALUES (CASE TG_OP WHEN 'INSERT' THEN 'created' ELSE 'updated' END, NEW.id, NEW.version,
                NEW.updated_at, NEW.title, NEW.author, NEW.genre, NEW.created_at, NEW.updated_at);
    END IF;
    RETURN NULL;
END
$$;
DROP FUNCTION purge_book_changes(timestamptz, integer);
DROP FUNCTION sequence_book_changes(integer);
CREATE FUNCTION sequence_book_changes() RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    last  bigint;
    given bigint;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM book_change WHERE seq IS NULL) THEN
        RETURN (SELECT last_seq FROM book_change_counter);
    END IF;
    SELECT last_seq INTO last FROM book_change_counter FOR UPDATE;
    WITH pending AS (
        SELECT id, row_number() OVER (ORDER BY id) AS n FROM book_change WHERE seq IS NULL
    )
    UPDATE book_change AS c SET seq = last + pending.n FROM pending WHERE c.id = pending.id;
    GET DIAGNOSTICS given = ROW_COUNT;
    UPDATE book_change_counter SET last_seq = last + given;
    IF given > 0 THEN
        PERFORM pg_notify('book_changes', (last + given)::text);
    END IF;
    RETURN last + given;
END
$$;
ALTER TABLE book_change_counter DROP COLUMN timeline;
DROP FUNCTION book_change_timeline();
