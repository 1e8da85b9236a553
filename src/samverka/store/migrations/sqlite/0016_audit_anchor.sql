-- Schema v16: the store's record of the audit chains kept in other files (samverka.audit.logs: on SQLite the
-- read records' chain in <store>-audit-reads.sqlite). The read committer moves `pos`/`hash` to that chain's
-- head as it grows, so `samverka audit verify` finds a deleted, replaced or truncated file: its chain must
-- hold the anchored record with the anchored hash. Rows only move forward.
CREATE TABLE audit_anchor (
    chain        TEXT    PRIMARY KEY,
    pos          INTEGER NOT NULL,
    hash         TEXT    NOT NULL,
    at           INTEGER NOT NULL
);
CREATE TRIGGER audit_anchor_no_delete BEFORE DELETE ON audit_anchor BEGIN SELECT RAISE(ABORT, 'audit_anchor cannot be deleted'); END;
CREATE TRIGGER audit_anchor_forward BEFORE UPDATE ON audit_anchor WHEN NEW.pos < OLD.pos BEGIN SELECT RAISE(ABORT, 'audit_anchor only moves forward'); END
