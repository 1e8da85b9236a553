-- Schema v19: `near` on Location is indexed from schema v18 on (samverka.search.near). A store that already
-- holds Locations has no rows for it, so the parameter is marked not ready and a reindex job is queued;
-- every server start resumes such a job (interactions.reindex.resume_in_background), as does
-- `samverka reindex`. Until it ends, a search with `near` answers 400 ("being reindexed"), never a
-- silently short result. A store without Locations needs nothing.
UPDATE search_state SET generation = generation + 1
WHERE EXISTS (SELECT 1 FROM resources WHERE type = 'Location' AND deleted = 0);
INSERT INTO search_parameters (url, resource_id, param, definition, active, ready, changed, bases)
SELECT 'http://hl7.org/fhir/SearchParameter/Location-near', 'Location-near', 2005832014, CAST('{"resourceType":"SearchParameter","id":"Location-near","url":"http://hl7.org/fhir/SearchParameter/Location-near","name":"near","status":"active","code":"near","base":["Location"],"type":"special","expression":"Location.position"}' AS BLOB), 1, 0, s.generation, '["Location"]'
FROM search_state s
WHERE EXISTS (SELECT 1 FROM resources WHERE type = 'Location' AND deleted = 0)
ON CONFLICT (url) DO NOTHING;
INSERT INTO reindex_jobs (params, status, since, last_pk, max_pk, done, total, heartbeat, created)
SELECT '["http://hl7.org/fhir/SearchParameter/Location-near"]', 'running', s.generation, 0, (SELECT COALESCE(max(pk), 0) FROM resources), 0,
       (SELECT count(*) FROM resources WHERE type = 'Location' AND deleted = 0), 0, 0
FROM search_state s
WHERE EXISTS (SELECT 1 FROM search_parameters WHERE url = 'http://hl7.org/fhir/SearchParameter/Location-near' AND ready = 0);
