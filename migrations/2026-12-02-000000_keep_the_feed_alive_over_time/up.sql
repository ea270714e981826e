-- The change feed over hours and through failovers.
--
-- 1. Changes are numbered in bounded steps (at most `step` per call, 10 000 by default), so that
--    a backlog of any size (a bulk load nobody read) is numbered by many short statements, each
--    well inside the statement timeout, instead of one that never finishes. The service calls
--    the sequencer in the background, so changes are numbered as they commit, not when a reader
--    asks.
-- 2. Retention purges in bounded steps too (`purge_book_changes`).
-- 3. A promoted standby may lack the last numberings of the primary it replaces (asynchronous
--    replication), and would hand those seqs out again to other changes, so that a reader who saw
--    them would skip the new ones. The counter remembers the WAL timeline it numbered on; a
--    promotion starts a new timeline, and the first numbering on it continues from
--    (timeline - 1) * 2^40 at least: past any seq the old primary could have given.
-- 4. A deletion is one more change of its book: its change carries version + 1, so a copy that
--    applies a change only when its version is newer never misses a deletion.

-- The WAL timeline of this server (a primary: pg_walfile_name refuses to run on a standby).
CREATE FUNCTION book_change_timeline() RETURNS bigint LANGUAGE sql AS $$
    SELECT ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::bigint
$$;

ALTER TABLE book_change_counter ADD COLUMN timeline bigint;
UPDATE book_change_counter SET timeline = book_change_timeline();

DROP FUNCTION sequence_book_changes();

-- Gives seqs to at most `step` committed changes that have none, in the order they were
-- recorded, and returns the last seq given so far. Callers take turns on the counter row; each
-- statement here sees what the caller before committed.
CREATE FUNCTION sequence_book_changes(step integer DEFAULT 10000) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    last     bigint;
    known    bigint;
    given    bigint;
    current_timeline bigint := book_change_timeline();
BEGIN
    SELECT c.last_seq, c.timeline INTO last, known FROM book_change_counter AS c;
    IF known = current_timeline AND NOT EXISTS (SELECT 1 FROM book_change WHERE seq IS NULL) THEN
        RETURN last;
    END IF;
    SELECT c.last_seq, c.timeline INTO last, known FROM book_change_counter AS c FOR UPDATE;
    IF known IS DISTINCT FROM current_timeline THEN
        -- Promoted (or restored to a new timeline): continue past every seq the server before
        -- could have given.
        last := GREATEST(last, (current_timeline - 1) << 40);
        UPDATE book_change_counter SET last_seq = last, timeline = current_timeline;
    END IF;
    WITH pending AS (
        SELECT id, row_number() OVER (ORDER BY id) AS n
        FROM (SELECT id FROM book_change WHERE seq IS NULL ORDER BY id LIMIT step) AS next
    )
    UPDATE book_change AS c SET seq = last + pending.n FROM pending WHERE c.id = pending.id;
    GET DIAGNOSTICS given = ROW_COUNT;
    IF given > 0 THEN
        UPDATE book_change_counter SET last_seq = last + given;
        PERFORM pg_notify('book_changes', (last + given)::text);
    END IF;
    RETURN last + given;
END
$$;

-- Purges at most `step` of the oldest numbered changes, stopping at the first one made at or
-- after `cutoff`, and moves the watermark past them: what is kept is always a suffix of the
-- feed. Returns how many were purged; the caller repeats while a whole step went.
CREATE FUNCTION purge_book_changes(cutoff timestamptz, step integer DEFAULT 10000) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    watermark bigint;
    through   bigint;
    gone      bigint;
BEGIN
    SELECT purged_through INTO watermark FROM book_change_counter;
    WITH next AS (
        SELECT seq, at FROM book_change WHERE seq > watermark ORDER BY seq LIMIT step
    ), young AS (
        SELECT min(seq) AS seq FROM next WHERE at >= cutoff
    )
    SELECT max(next.seq) INTO through FROM next, young
    WHERE young.seq IS NULL OR next.seq < young.seq;
    IF through IS NULL THEN
        RETURN 0;
    END IF;
    DELETE FROM book_change WHERE seq > watermark AND seq <= through;
    GET DIAGNOSTICS gone = ROW_COUNT;
    UPDATE book_change_counter SET purged_through = GREATEST(purged_through, through);
    RETURN gone;
END
$$;

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
