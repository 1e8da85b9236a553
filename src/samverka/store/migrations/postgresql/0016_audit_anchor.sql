-- Schema v16: the store's record of the audit chains kept in other files (samverka.audit.logs). PostgreSQL
-- keeps one chain, so nothing is anchored here; the table exists for the same schema on both backends.
-- Rows only move forward and are never deleted.
CREATE TABLE audit_anchor (
    chain        text    PRIMARY KEY,
    pos          bigint  NOT NULL,
    hash         text    NOT NULL,
    at           bigint  NOT NULL
);
CREATE FUNCTION audit_anchor_forward() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'audit_anchor cannot be deleted';
    END IF;
    IF NEW.pos < OLD.pos THEN
        RAISE EXCEPTION 'audit_anchor only moves forward';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER audit_anchor_guard BEFORE UPDATE OR DELETE ON audit_anchor
    FOR EACH ROW EXECUTE FUNCTION audit_anchor_forward();
