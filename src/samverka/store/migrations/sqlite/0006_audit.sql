-- Schema v6: the audit log (IHE BALP AuditEvents, https://profiles.ihe.net/ITI/BALP/), append-only and
-- hash-chained. `pos` is the chain position (1, 2, 3, ... without gaps); `hash` covers pos, prev_hash and
-- the exact bytes of `data` (the AuditEvent JSON). The other columns are derived from `data` for
-- searching, and `samverka audit verify` recomputes them. Nothing here is a FHIR resource of the REST API.
CREATE TABLE audit_log (
    pos          INTEGER PRIMARY KEY,
    id           TEXT    NOT NULL,          -- AuditEvent.id: a UUID, the national log id
    recorded     INTEGER NOT NULL,          -- µs since the epoch (millisecond precision)
    action       TEXT    NOT NULL,          -- C | R | U | D | E
    outcome      TEXT    NOT NULL,          -- 0 | 4 | 8 | 12
    subtype      TEXT    NOT NULL,          -- restful-interaction code
    purpose      TEXT    NOT NULL,          -- TREAT | ETREAT
    user_id      TEXT,                      -- the user's HSA-id
    unit_id      TEXT,                      -- the user's care unit (HSA-id)
    provider_id  TEXT,                      -- the user's care provider (HSA-id)
    client_id    TEXT,                      -- the client module
    data         TEXT    NOT NULL,
    prev_hash    TEXT    NOT NULL,
    hash         TEXT    NOT NULL
);
CREATE UNIQUE INDEX audit_log_by_id ON audit_log (id);
CREATE INDEX audit_log_by_recorded ON audit_log (recorded);
CREATE INDEX audit_log_by_user ON audit_log (user_id, recorded);
CREATE INDEX audit_log_by_unit ON audit_log (unit_id, recorded);
CREATE INDEX audit_log_by_client ON audit_log (client_id, recorded);
CREATE TABLE audit_patient (
    patient      TEXT    NOT NULL,
    pos          INTEGER NOT NULL,
    PRIMARY KEY (patient, pos)
);
CREATE INDEX audit_patient_by_pos ON audit_patient (pos);
CREATE TABLE audit_entity (
    ref          TEXT    NOT NULL,          -- Type/id of every entity (patients included)
    pos          INTEGER NOT NULL,
    PRIMARY KEY (ref, pos)
);
CREATE INDEX audit_entity_by_pos ON audit_entity (pos);
-- The end of the chain: deleting the newest records leaves it pointing past them.
CREATE TABLE audit_head (
    one          INTEGER PRIMARY KEY CHECK (one = 1),
    pos          INTEGER NOT NULL,
    hash         TEXT    NOT NULL
);
INSERT INTO audit_head (one, pos, hash) VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
CREATE TRIGGER audit_patient_no_change BEFORE UPDATE ON audit_patient BEGIN SELECT RAISE(ABORT, 'audit_patient is append-only'); END;
CREATE TRIGGER audit_patient_no_delete BEFORE DELETE ON audit_patient BEGIN SELECT RAISE(ABORT, 'audit_patient is append-only'); END;
CREATE TRIGGER audit_entity_no_change BEFORE UPDATE ON audit_entity BEGIN SELECT RAISE(ABORT, 'audit_entity is append-only'); END;
CREATE TRIGGER audit_entity_no_delete BEFORE DELETE ON audit_entity BEGIN SELECT RAISE(ABORT, 'audit_entity is append-only'); END;
CREATE TRIGGER audit_head_no_delete BEFORE DELETE ON audit_head BEGIN SELECT RAISE(ABORT, 'audit_head cannot be deleted'); END
