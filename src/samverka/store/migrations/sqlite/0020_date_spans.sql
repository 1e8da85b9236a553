-- Schema v20: a date window driver (samverka.search.window). A criterion pair such as `date=ge2015-03-01&
-- date=lt2015-04-01` bounds a row's `lo` from both sides only given the row's span (hi - lo): rows spanning
-- under two days are read from the primary key (lo within two days before the window), the longer ones
-- (periods of weeks or years, open-ended ones: ~0.5% of the rows) from this partial index, one lo range
-- per span class. The class expression must match samverka.search.window.SPAN_CLASS exactly.
CREATE INDEX idx_date_long ON idx_date (param, (CASE WHEN hi - lo < 2764800000000 THEN 1 WHEN hi - lo < 31622400000000 THEN 2 WHEN hi - lo < 504921600000000 THEN 3 ELSE 4 END), lo)
WHERE hi - lo >= 172800000000;
