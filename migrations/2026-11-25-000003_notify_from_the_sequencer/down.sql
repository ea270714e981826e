CREATE OR REPLACE FUNCTION sequence_book_changes() RETURNS bigint LANGUAGE plpgsql AS $$
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
    RETURN last + given;
END
$$;
CREATE FUNCTION notify_book_changes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('book_changes', '');
    RETURN NULL;
END
$$;
CREATE TRIGGER book_changes_notify AFTER INSERT OR UPDATE OR DELETE ON book
    FOR EACH STATEMENT EXECUTE FUNCTION notify_book_changes();
