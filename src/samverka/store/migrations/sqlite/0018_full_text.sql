-- Schema v18: nothing to store. `_content` and `_text` searches match against samverka_content(data) and
-- samverka_narrative(data), Python functions (samverka.fhir.text) that store.sqlite.connect registers on
-- every connection; PostgreSQL defines SQL functions of the same names in its migration 0018.
SELECT 1;
