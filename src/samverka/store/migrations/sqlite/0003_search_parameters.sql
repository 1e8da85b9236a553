-- Schema v3: custom SearchParameters and reindex jobs (https://hl7.org/fhir/R4/searchparameter.html).
-- search_state.generation changes whenever the set of searchable parameters (or their readiness)
-- changes; every process compares it with the generation of its registry and reloads on a change.
CREATE TABLE search_state (id INTEGER PRIMARY KEY CHECK (id = 1), generation INTEGER NOT NULL);
INSERT INTO search_state (id, generation) VALUES (1, 0);
-- One row per SearchParameter resource that is (or was, until its rows are purged) searchable.
-- active = 0: retired or deleted, its index rows still to be removed; ready = 0: a reindex is due.
CREATE TABLE search_parameters (
    url          TEXT    PRIMARY KEY,
    resource_id  TEXT    NOT NULL,          -- the SearchParameter's id
    param        INTEGER NOT NULL,          -- search.params.param_id(url), the index tables' param
    definition   BLOB    NOT NULL,          -- the SearchParameter JSON
    active       INTEGER NOT NULL,
    ready        INTEGER NOT NULL,
    changed      INTEGER NOT NULL,          -- search_state.generation of the last indexing change
    bases        TEXT    NOT NULL           -- JSON: types whose rows its next reindex visits (old and new)
);
CREATE INDEX search_parameters_by_resource ON search_parameters (resource_id);
-- A reindex: re-extract rows of `params` (JSON list of urls) for resources with pk in (last_pk, max_pk],
-- in pk order, one short transaction per batch; progress commits with each batch.
CREATE TABLE reindex_jobs (
    id           INTEGER PRIMARY KEY,
    params       TEXT    NOT NULL,
    status       TEXT    NOT NULL,          -- running | done | failed
    since        INTEGER NOT NULL,          -- search_state.generation the job's definitions are from
    last_pk      INTEGER NOT NULL DEFAULT 0,
    max_pk       INTEGER NOT NULL,
    done         INTEGER NOT NULL DEFAULT 0,
    total        INTEGER NOT NULL,
    owner        TEXT,                      -- host:pid:thread of the runner, while one runs it
    heartbeat    INTEGER NOT NULL,          -- microseconds since the epoch
    created      INTEGER NOT NULL,
    finished     INTEGER,
    error        TEXT
);
