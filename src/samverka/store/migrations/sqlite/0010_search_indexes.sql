-- Schema v10: the (type, last_updated) index a typed `_lastUpdated` window is read from
-- (samverka.search.drive; `Condition?_lastUpdated=ge..&_lastUpdated=lt..` reads the type's rows in the
-- range instead of every type's rows of the range in idx_date). `deleted` is in the key so the window's
-- count never reads the table. The PostgreSQL migration also makes idx_date_res cover (param, lo, hi),
-- which SQLite's index on the WITHOUT ROWID idx_date already does.
CREATE INDEX IF NOT EXISTS resources_type_updated ON resources (type, last_updated, deleted);
