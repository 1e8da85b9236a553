-- Schema v15: the audit log's patient and entity rows are written behind the chain, many records per
-- transaction (samverka.audit.side). `audit_indexed.pos` is the watermark: every record up to it has its
-- rows, none after it; indexers lock this row (FOR UPDATE). Existing records are all indexed already.
CREATE TABLE audit_indexed (
    one          integer PRIMARY KEY CHECK (one = 1),
    pos          bigint  NOT NULL
);
INSERT INTO audit_indexed (one, pos) SELECT 1, pos FROM audit_head WHERE one = 1;
CREATE TRIGGER audit_indexed_no_delete BEFORE DELETE ON audit_indexed
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
