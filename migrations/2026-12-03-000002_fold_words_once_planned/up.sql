-- `book_search_words` was a SQL function with a `SET` clause: PostgreSQL never inlines such a
-- function, and plans a non-inlined SQL function's body anew in every statement that calls it.
-- Each INSERT and UPDATE of a book called it twice (its two word columns), so each write planned
-- it twice: most of what search cost writes (docs/performance.md, fifth round). As PL/pgSQL its
-- plan is kept for the session. The words it gives are the same, so the stored columns stay as
-- they are. `unaccent` is named with its schema, found now, instead of through a `SET`.
DO $$
DECLARE
    home name := (SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
                  WHERE e.extname = 'unaccent');
BEGIN
    EXECUTE format($f$
        CREATE OR REPLACE FUNCTION book_search_words(text) RETURNS text[]
            LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
        AS $body$
        BEGIN
            RETURN ARRAY(
                SELECT lower(%1$I.unaccent(%2$L::regdictionary, word) COLLATE "und-x-icu")
                FROM unnest(regexp_split_to_array(
                    $1,
                    '[\x01-\x2F\x3A-\x40\x5B-\x60\x7B-\xBF\xD7\xF7\u1680\u2000-\u206F\u3000-\u303F\uFF01-\uFF0F]+'
                )) WITH ORDINALITY AS t (word, n)
                WHERE word <> ''
                ORDER BY n);
        END
        $body$
    $f$, home, quote_ident(home) || '.unaccent');
END
$$;
