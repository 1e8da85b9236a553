-- Schema v20: a date window driver (samverka.search.window). A criterion pair such as `date=ge2015-03-01&
-- date=lt2015-04-01` bounds a row's `lo` from both sides only given the row's span (hi - lo): rows spanning
-- under two days are read from the primary key (lo within two days before the window), the longer ones
-- (periods of weeks or years, open-ended ones: ~0.5% of the rows) from this partial index, one lo range
-- per span class. The class expression must match samverka.search.window.SPAN_CLASS exactly. The values
-- lie in years 1-9999 (samverka.search.normalize), so hi - lo cannot overflow.
CREATE INDEX idx_date_long ON idx_date (param, (CASE WHEN hi - lo < 2764800000000 THEN 1 WHEN hi - lo < 31622400000000 THEN 2 WHEN hi - lo < 504921600000000 THEN 3 ELSE 4 END), lo)
INCLUDE (hi, res) WHERE hi - lo >= 172800000000;
-- The windows also need every row to have lo <= hi, and one row per resource where R4 allows one value. From
-- v20 the write path ensures both (samverka.search.extract._normal_dates). Rows written before: a Period
-- whose end precedes its start gets its two ends swapped, as the write path now does. And the (parameter,
-- type) pairs where some resource holds several rows are listed, so no window is used for them (until a
-- reindex of the parameter rewrites its rows and removes its pairs: samverka.interactions.reindex).
INSERT INTO idx_date (param, lo, hi, res) SELECT param, hi, lo, res FROM idx_date WHERE lo > hi ON CONFLICT DO NOTHING;
DELETE FROM idx_date WHERE lo > hi;
CREATE TABLE date_multivalued (param integer NOT NULL, type text COLLATE "C" NOT NULL, PRIMARY KEY (param, type));
INSERT INTO date_multivalued (param, type)
SELECT DISTINCT d.param, r.type FROM (SELECT param, res FROM idx_date GROUP BY param, res HAVING count(*) > 1) d
JOIN resources r ON r.pk = d.res;
