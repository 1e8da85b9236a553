-- Schema v10: two indexes for search plans (samverka.search.drive); index builds only, no table rewrite.
-- 1. A typed `_lastUpdated` window (`Condition?_lastUpdated=ge..&_lastUpdated=lt..`) reads the type's rows
--    in the range from here instead of every type's rows of the range in idx_date. `deleted` and `pk` are
--    included so the probe that counts the window is an index-only scan.
CREATE INDEX resources_type_updated ON resources (type, last_updated) INCLUDE (deleted, pk);
-- 2. A driven plan checks a date criterion per candidate (`x.res = ? AND x.param = ? AND lo/hi ...`): with
--    `lo, hi` in the index that check is index-only, as it is on SQLite, whose secondary index on a
--    WITHOUT ROWID table carries the primary key columns. Built under a new name, then swapped in.
CREATE INDEX idx_date_res_covering ON idx_date (res, param) INCLUDE (lo, hi);
DROP INDEX idx_date_res;
ALTER INDEX idx_date_res_covering RENAME TO idx_date_res;
