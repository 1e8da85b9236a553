-- Samverka schema v1 (PostgreSQL): the same logical layout as migrations/sqlite/0001_initial.sql.
-- Text keys use the "C" collation: binary order, as in SQLite, so prefix ranges (>= x AND < x || U+10FFFF)
-- from the search layer mean the same thing on both backends.
CREATE TABLE resources (
    pk           bigserial PRIMARY KEY,    -- compact key used by every index row
    type         text     COLLATE "C" NOT NULL,
    id           text     COLLATE "C" NOT NULL,
    version      integer  NOT NULL,        -- current version
    seq          bigint   NOT NULL,        -- history.seq of the current version
    deleted      smallint NOT NULL DEFAULT 0,  -- 0/1, as in SQLite, so shared SQL compares it to 0
    last_updated bigint   NOT NULL,        -- microseconds since the epoch
    compartment  text,                     -- Patient id of the patient compartment (shard key)
    CONSTRAINT resources_type_id UNIQUE (type, id)
);
CREATE TABLE history (
    seq          bigserial PRIMARY KEY,    -- global, monotonic order of writes
    pk           bigint   NOT NULL,        -- resources.pk
    type         text     NOT NULL,
    version      integer  NOT NULL,
    last_updated bigint   NOT NULL,
    method       text     NOT NULL,        -- POST | PUT | PATCH | DELETE
    data         jsonb                     -- the resource; NULL for a deletion
);
CREATE UNIQUE INDEX history_by_resource ON history (pk, version);
CREATE INDEX history_by_type ON history (type, seq);
CREATE INDEX history_by_time ON history (last_updated);

CREATE TABLE idx_token (param integer NOT NULL, code bigint NOT NULL, system bigint NOT NULL,
    res bigint NOT NULL, PRIMARY KEY (param, code, system, res));
CREATE INDEX idx_token_res ON idx_token (res);
CREATE TABLE idx_token_text (param integer NOT NULL, text text COLLATE "C" NOT NULL, res bigint NOT NULL,
    PRIMARY KEY (param, text, res));
CREATE INDEX idx_token_text_res ON idx_token_text (res);
CREATE TABLE idx_string (param integer NOT NULL, norm text COLLATE "C" NOT NULL, exact text COLLATE "C" NOT NULL,
    res bigint NOT NULL, PRIMARY KEY (param, norm, exact, res));
CREATE INDEX idx_string_res ON idx_string (res);
CREATE TABLE idx_date (param integer NOT NULL, lo bigint NOT NULL, hi bigint NOT NULL,
    res bigint NOT NULL, PRIMARY KEY (param, lo, hi, res));
CREATE INDEX idx_date_res ON idx_date (res);
CREATE TABLE idx_number (param integer NOT NULL, lo double precision NOT NULL, hi double precision NOT NULL,
    res bigint NOT NULL, PRIMARY KEY (param, lo, hi, res));
CREATE INDEX idx_number_res ON idx_number (res);
CREATE TABLE idx_quantity (param integer NOT NULL, code bigint NOT NULL, system bigint NOT NULL,
    lo double precision NOT NULL, hi double precision NOT NULL, res bigint NOT NULL,
    PRIMARY KEY (param, code, system, lo, hi, res));
CREATE INDEX idx_quantity_res ON idx_quantity (res);
CREATE TABLE idx_reference (param integer NOT NULL, ref bigint NOT NULL, res bigint NOT NULL,
    target_type text COLLATE "C" NOT NULL, target text COLLATE "C" NOT NULL, PRIMARY KEY (param, ref, res));
CREATE INDEX idx_reference_res ON idx_reference (res);
CREATE TABLE idx_uri (param integer NOT NULL, uri text COLLATE "C" NOT NULL, res bigint NOT NULL,
    PRIMARY KEY (param, uri, res));
CREATE INDEX idx_uri_res ON idx_uri (res);
CREATE TABLE idx_composite (param integer NOT NULL, code1 bigint NOT NULL, system1 bigint NOT NULL,
    h2 bigint NOT NULL, lo2 double precision NOT NULL, hi2 double precision NOT NULL, res bigint NOT NULL,
    PRIMARY KEY (param, code1, system1, h2, lo2, hi2, res));
CREATE INDEX idx_composite_res ON idx_composite (res);
