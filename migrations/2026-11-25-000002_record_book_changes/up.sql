-- The change feed.
--
-- Every write to `book` records its change with a trigger, in the write's own transaction, so no
-- write path can forget to and a rolled-back write leaves nothing. A change is recorded without a
-- seq: a number taken inside a transaction is not in commit order (a transaction that took 7 may
-- commit after one that took 8, and a reader who saw 8 would skip 7 for ever). Seqs are given
-- afterwards by `sequence_book_changes()`, to committed changes only, one caller at a time (the
-- counter row's lock), in the order they were recorded: a reader who follows seqs sees every
-- committed change exactly once, and a book's changes in version order.
CREATE TABLE book_change (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    seq        bigint UNIQUE,
    kind       text        NOT NULL CHECK (kind IN ('created', 'updated', 'deleted')),
    book_id    bigint      NOT NULL,
    version    bigint      NOT NULL,
    at         timestamptz NOT NULL,
    -- The book as the change left it; all null for a delete.
    title      varchar(250),
    author     varchar(250),
    genre      varchar(250),
    created_at timestamptz,
    updated_at timestamptz
);

-- What the sequencer looks for.
CREATE INDEX book_change_unsequenced_idx ON book_change (id) WHERE seq IS NULL;

-- The last seq given, and the last one purged by the retention (readers behind it get a 410).
CREATE TABLE book_change_counter (
    only_row       boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    last_seq       bigint  NOT NULL DEFAULT 0,
    purged_through bigint  NOT NULL DEFAULT 0
);
INSERT INTO book_change_counter DEFAULT VALUES;

CREATE FUNCTION record_book_change() RETURNS trigger LANGUAGE plpgsql AS $$
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

CREATE TRIGGER book_created_or_deleted AFTER INSERT OR DELETE ON book
    FOR EACH ROW EXECUTE FUNCTION record_book_change();
-- A write that changes nothing keeps its version, and makes no change.
CREATE TRIGGER book_updated AFTER UPDATE ON book
    FOR EACH ROW WHEN (OLD.version IS DISTINCT FROM NEW.version) EXECUTE FUNCTION record_book_change();

-- Wakes the instances' listeners when a write commits (NOTIFY is delivered at commit, and once
-- per transaction for identical payloads).
CREATE FUNCTION notify_book_changes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('book_changes', '');
    RETURN NULL;
END
$$;
CREATE TRIGGER book_changes_notify AFTER INSERT OR UPDATE OR DELETE ON book
    FOR EACH STATEMENT EXECUTE FUNCTION notify_book_changes();

-- Gives seqs to the committed changes that have none, in the order they were recorded, and
-- returns the last seq given so far. Callers take turns on the counter row; each statement here
-- sees what the caller before committed.
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
    RETURN last + given;
END
$$;
