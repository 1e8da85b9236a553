-- Schema v8: Patientdatalagen access grants (docs/architecture.md, "PDL access rules").
-- kind = 'emergency': a user's emergency access (nödåtkomst) to one patient, over the care-relationship
--   and consent rules (never over a spärr);
-- kind = 'lift': a user's temporary lift of a patient's spärr (at most 7 days), on the patient's
--   consent (consent = the Consent reference) or in an emergency (reason).
-- Rows are never updated: a grant ends when `expires` (Unix seconds) has passed.
CREATE TABLE pdl_access_grants (
    id             bigserial PRIMARY KEY,
    kind           TEXT     NOT NULL,          -- emergency | lift
    user_hsa_id    TEXT     NOT NULL,
    care_unit      TEXT,
    care_provider  TEXT,
    patient        TEXT     NOT NULL,          -- Patient id
    reason         TEXT,
    consent        TEXT,                       -- "Consent/{id}" for a lift on the patient's consent
    created        bigint   NOT NULL,
    expires        bigint   NOT NULL
);
CREATE INDEX pdl_access_grants_by_user ON pdl_access_grants (user_hsa_id, expires);
