-- Schema v15: the audit log's patient and entity rows are written behind the chain, many records per
-- transaction (samverka.audit.side). `audit_indexed.pos` is the watermark: every record up to it has its
-- rows, none after it. Existing records are all indexed already. Both side tables become WITHOUT ROWID
-- (their primary key is the table: one B-tree per row instead of two), keeping their append-only triggers.
CREATE TABLE audit_indexed (
    one          INTEGER PRIMARY KEY CHECK (one = 1),
    pos          INTEGER NOT NULL
);
INSERT INTO audit_indexed (one, pos) SELECT 1, pos FROM audit_head WHERE one = 1;
CREATE TRIGGER audit_indexed_no_delete BEFORE DELETE ON audit_indexed BEGIN SELECT RAISE(ABORT, 'audit_indexed cannot be deleted'); END;
CREATE TABLE audit_patient_v15 (
    patient      TEXT    NOT NULL,
    pos          INTEGER NOT NULL,
    PRIMARY KEY (patient, pos)
) WITHOUT ROWID;
INSERT INTO audit_patient_v15 (patient, pos) SELECT patient, pos FROM audit_patient;
DROP TABLE audit_patient;
ALTER TABLE audit_patient_v15 RENAME TO audit_patient;
CREATE INDEX audit_patient_by_pos ON audit_patient (pos);
CREATE TABLE audit_entity_v15 (
    ref          TEXT    NOT NULL,          -- Type/id of every entity (patients included)
    pos          INTEGER NOT NULL,
    PRIMARY KEY (ref, pos)
) WITHOUT ROWID;
INSERT INTO audit_entity_v15 (ref, pos) SELECT ref, pos FROM audit_entity;
DROP TABLE audit_entity;
ALTER TABLE audit_entity_v15 RENAME TO audit_entity;
CREATE INDEX audit_entity_by_pos ON audit_entity (pos);
CREATE TRIGGER audit_patient_no_change BEFORE UPDATE ON audit_patient BEGIN SELECT RAISE(ABORT, 'audit_patient is append-only'); END;
CREATE TRIGGER audit_patient_no_delete BEFORE DELETE ON audit_patient BEGIN SELECT RAISE(ABORT, 'audit_patient is append-only'); END;
CREATE TRIGGER audit_entity_no_change BEFORE UPDATE ON audit_entity BEGIN SELECT RAISE(ABORT, 'audit_entity is append-only'); END;
CREATE TRIGGER audit_entity_no_delete BEFORE DELETE ON audit_entity BEGIN SELECT RAISE(ABORT, 'audit_entity is append-only'); END;
