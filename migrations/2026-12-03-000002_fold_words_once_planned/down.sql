CREATE OR REPLACE FUNCTION book_search_words(text) RETURNS text[]
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    SET search_path FROM CURRENT
AS $$
    SELECT coalesce(array_agg(lower(unaccent('unaccent', word) COLLATE "und-x-icu") ORDER BY n), '{}')
    FROM regexp_split_to_table(
        $1,
        '[\x01-\x2F\x3A-\x40\x5B-\x60\x7B-\xBF\xD7\xF7\u1680\u2000-\u206F\u3000-\u303F\uFF01-\uFF0F]+'
    ) WITH ORDINALITY AS t (word, n)
    WHERE word <> ''
$$;
