-- Samverka schema v1 (SQLite). Layout and a worked example: docs/architecture.md.
CREATE TABLE resources (
    pk           INTEGER PRIMARY KEY,      -- compact key used by every index row
    type         TEXT    NOT NULL,
    id           TEXT    NOT NULL,
    version      INTEGER NOT NULL,         -- current version
    seq          INTEGER NOT NULL,         -- history.seq of the current version
    deleted      INTEGER NOT NULL DEFAULT 0,
    last_updated INTEGER NOT NULL,         -- microseconds since the epoch
    compartment  TEXT,                     -- Patient id of the patient compartment (shard key)
    UNIQUE (type, id)
);
CREATE TABLE history (
    seq          INTEGER PRIMARY KEY,      -- global, monotonic order of writes
    pk           INTEGER NOT NULL,         -- resources.pk
    type         TEXT    NOT NULL,
    version      INTEGER NOT NULL,
    last_updated INTEGER NOT NULL,
    method       TEXT    NOT NULL,         -- POST | PUT | PATCH | DELETE
    data         BLOB                      -- the JSON; NULL for a deletion
);
CREATE UNIQUE INDEX history_by_resource ON history (pk, version);
CREATE INDEX history_by_type ON history (type, seq);
CREATE INDEX history_by_time ON history (last_updated);

CREATE TABLE idx_token (param INTEGER NOT NULL, code INTEGER NOT NULL, system INTEGER NOT NULL,
    res INTEGER NOT NULL, PRIMARY KEY (param, code, system, res)) WITHOUT ROWID;
CREATE INDEX idx_token_res ON idx_token (res);
CREATE TABLE idx_token_text (param INTEGER NOT NULL, text TEXT NOT NULL, res INTEGER NOT NULL,
    PRIMARY KEY (param, text, res)) WITHOUT ROWID;
CREATE INDEX idx_token_text_res ON idx_token_text (res);
CREATE TABLE idx_string (param INTEGER NOT NULL, norm TEXT NOT NULL, exact TEXT NOT NULL,
    res INTEGER NOT NULL, PRIMARY KEY (param, norm, exact, res)) WITHOUT ROWID;
CREATE INDEX idx_string_res ON idx_string (res);
CREATE TABLE idx_date (param INTEGER NOT NULL, lo INTEGER NOT NULL, hi INTEGER NOT NULL,
    res INTEGER NOT NULL, PRIMARY KEY (param, lo, hi, res)) WITHOUT ROWID;
CREATE INDEX idx_date_res ON idx_date (res);
CREATE TABLE idx_number (param INTEGER NOT NULL, lo REAL NOT NULL, hi REAL NOT NULL,
    res INTEGER NOT NULL, PRIMARY KEY (param, lo, hi, res)) WITHOUT ROWID;
CREATE INDEX idx_number_res ON idx_number (res);
CREATE TABLE idx_quantity (param INTEGER NOT NULL, code INTEGER NOT NULL, system INTEGER NOT NULL,
    lo REAL NOT NULL, hi REAL NOT NULL, res INTEGER NOT NULL,
    PRIMARY KEY (param, code, system, lo, hi, res)) WITHOUT ROWID;
CREATE INDEX idx_quantity_res ON idx_quantity (res);
CREATE TABLE idx_reference (param INTEGER NOT NULL, ref INTEGER NOT NULL, res INTEGER NOT NULL,
    target_type TEXT NOT NULL, target TEXT NOT NULL, PRIMARY KEY (param, ref, res)) WITHOUT ROWID;
CREATE INDEX idx_reference_res ON idx_reference (res);
CREATE TABLE idx_uri (param INTEGER NOT NULL, uri TEXT NOT NULL, res INTEGER NOT NULL,
    PRIMARY KEY (param, uri, res)) WITHOUT ROWID;
CREATE INDEX idx_uri_res ON idx_uri (res);
CREATE TABLE idx_composite (param INTEGER NOT NULL, code1 INTEGER NOT NULL, system1 INTEGER NOT NULL,
    h2 INTEGER NOT NULL, lo2 REAL NOT NULL, hi2 REAL NOT NULL, res INTEGER NOT NULL,
    PRIMARY KEY (param, code1, system1, h2, lo2, hi2, res)) WITHOUT ROWID;
CREATE INDEX idx_composite_res ON idx_composite (res);
