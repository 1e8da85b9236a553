-- Schema v2: each head carries the hash of its own "Type/id" (the key reference rows point at), so
-- chains and _has join index rows to resources on one integer; and a (type, pk) index lets a search
-- walk one type in key order for cursor paging. Existing rows are backfilled by the application.
ALTER TABLE resources ADD COLUMN ref INTEGER;
CREATE INDEX resources_by_ref ON resources (ref);
CREATE INDEX resources_by_type ON resources (type, pk);
