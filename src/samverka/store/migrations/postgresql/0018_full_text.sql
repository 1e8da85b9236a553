-- Schema v18: the text forms `_content` and `_text` searches match against (samverka.fhir.text; on SQLite
-- these are Python functions registered on every connection). Folding: NFKD without combining marks,
-- lower case, whitespace collapsed -- the same as fhir.text.fold for Latin script. Needs a UTF8 database.
CREATE FUNCTION samverka_fold(t text) RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT btrim(regexp_replace(lower(regexp_replace(normalize(t, NFKD), '[\u0300-\u036f]', '', 'g')),
                                '\s+', ' ', 'g'))
$$;
CREATE FUNCTION samverka_content(doc jsonb) RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT samverka_fold(string_agg(v #>> '{}', ' '))
    FROM jsonb_path_query(doc, 'strict $.**') AS v
    WHERE jsonb_typeof(v) = 'string'
$$;
CREATE FUNCTION samverka_narrative(doc jsonb) RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT samverka_fold(replace(replace(replace(replace(replace(replace(
        regexp_replace(doc #>> '{text,div}', '<[^>]*>', ' ', 'g'),
        '&lt;', '<'), '&gt;', '>'), '&quot;', '"'), '&apos;', ''''), '&nbsp;', ' '), '&amp;', '&'))
$$;
