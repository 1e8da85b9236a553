-- Schema v6: the audit log (IHE BALP AuditEvents, https://profiles.ihe.net/ITI/BALP/), append-only and
-- hash-chained. `pos` is the chain position (1, 2, 3, ... without gaps); `hash` covers pos, prev_hash and
-- the exact bytes of `data` (text, not jsonb: jsonb would reorder the hashed bytes). The other columns
-- are derived from `data` for searching, and `samverka audit verify` recomputes them.
CREATE TABLE audit_log (
    pos          bigint  PRIMARY KEY,
    id           TEXT    NOT NULL,
    recorded     bigint  NOT NULL,
    action       TEXT    NOT NULL,
    outcome      TEXT    NOT NULL,
    subtype      TEXT    NOT NULL,
    purpose      TEXT    NOT NULL,
    user_id      TEXT,
    unit_id      TEXT,
    provider_id  TEXT,
    client_id    TEXT,
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
    pos          bigint  NOT NULL,
    PRIMARY KEY (patient, pos)
);
CREATE INDEX audit_patient_by_pos ON audit_patient (pos);
CREATE TABLE audit_entity (
    ref          TEXT    NOT NULL,
    pos          bigint  NOT NULL,
    PRIMARY KEY (ref, pos)
);
CREATE INDEX audit_entity_by_pos ON audit_entity (pos);
-- The end of the chain, and the row every appender locks (FOR UPDATE): one linear chain across processes.
CREATE TABLE audit_head (
    one          integer PRIMARY KEY CHECK (one = 1),
    pos          bigint  NOT NULL,
    hash         TEXT    NOT NULL
);
INSERT INTO audit_head (one, pos, hash) VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');
CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
END
$$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_patient_append_only BEFORE UPDATE OR DELETE ON audit_patient
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_entity_append_only BEFORE UPDATE OR DELETE ON audit_entity
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_head_no_delete BEFORE DELETE ON audit_head
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
