-- Schema v13: change counters for the cached Patientdatalagen policies (samverka.auth.pdl_cache).
-- One row per resource type the PDL rules read, and one for pdl_access_grants; a trigger bumps the row
-- in the writing transaction, so a committed write is seen by every process on its next request (a
-- max(seq) marker would miss a transaction that commits after one with a higher seq).
CREATE TABLE pdl_changes (
    name TEXT   PRIMARY KEY,
    n    BIGINT NOT NULL DEFAULT 0
);
INSERT INTO pdl_changes (name) VALUES ('Encounter'), ('EpisodeOfCare'), ('CareTeam'), ('Consent'),
    ('Organization'), ('Location'), ('PractitionerRole'), ('grants');
CREATE FUNCTION pdl_changes_history() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE pdl_changes SET n = n + 1 WHERE name = NEW.type;
    RETURN NULL;
END $$;
CREATE FUNCTION pdl_changes_grants() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE pdl_changes SET n = n + 1 WHERE name = 'grants';
    RETURN NULL;
END $$;
CREATE TRIGGER pdl_changes_history AFTER INSERT ON history FOR EACH ROW
    WHEN (NEW.type IN ('Encounter', 'EpisodeOfCare', 'CareTeam', 'Consent', 'Organization', 'Location', 'PractitionerRole'))
    EXECUTE FUNCTION pdl_changes_history();
CREATE TRIGGER pdl_changes_grants AFTER INSERT ON pdl_access_grants FOR EACH ROW
    EXECUTE FUNCTION pdl_changes_grants();
