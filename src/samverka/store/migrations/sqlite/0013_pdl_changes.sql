-- Schema v13: change counters for the cached Patientdatalagen policies (samverka.auth.pdl_cache).
-- One row per resource type the PDL rules read, and one for pdl_access_grants; a trigger bumps the row
-- in the writing transaction, so a committed write is seen by every process on its next request.
CREATE TABLE pdl_changes (
    name TEXT    PRIMARY KEY,
    n    INTEGER NOT NULL DEFAULT 0
);
INSERT INTO pdl_changes (name) VALUES ('Encounter'), ('EpisodeOfCare'), ('CareTeam'), ('Consent'),
    ('Organization'), ('Location'), ('PractitionerRole'), ('grants');
CREATE TRIGGER pdl_changes_history AFTER INSERT ON history
    WHEN NEW.type IN ('Encounter', 'EpisodeOfCare', 'CareTeam', 'Consent', 'Organization', 'Location', 'PractitionerRole')
    BEGIN UPDATE pdl_changes SET n = n + 1 WHERE name = NEW.type; END;
CREATE TRIGGER pdl_changes_grants AFTER INSERT ON pdl_access_grants
    BEGIN UPDATE pdl_changes SET n = n + 1 WHERE name = 'grants'; END;
