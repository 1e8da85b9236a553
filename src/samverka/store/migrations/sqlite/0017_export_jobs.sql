-- Schema v17: Bulk Data export jobs (samverka.interactions.export). A job's `spec` (JSON) is fixed at kick-off:
-- the types, `_since`, the transaction time, `_typeFilter` queries and the access filters of the requester.
-- Its `state` (JSON) is the progress the runner commits after each page it appends to a file: the type being
-- written, the keyset cursor, the current file's name, lines and byte length, and the finished files. A runner
-- that dies is replaced by whoever claims the job; the file is cut back to the committed length first.
-- `export_patients` lists, per output file, the patients whose data it holds (the download's audit record).
CREATE TABLE export_jobs (
    id           TEXT    PRIMARY KEY,      -- random, unguessable: part of the status and file URLs
    status       TEXT    NOT NULL,         -- running | done | failed | cancelled
    client_id    TEXT,                     -- who may poll and download (NULL: auth off)
    user_id      TEXT,
    request      TEXT    NOT NULL,         -- the kick-off request URL
    spec         TEXT    NOT NULL,
    state        TEXT    NOT NULL,
    runner       TEXT,                     -- host:pid:thread of the runner (interactions.jobs)
    heartbeat    INTEGER NOT NULL,
    created      INTEGER NOT NULL,
    finished     INTEGER,
    error        TEXT
);
CREATE TABLE export_patients (
    job          TEXT    NOT NULL,
    file         TEXT    NOT NULL,
    patient      TEXT    NOT NULL,
    PRIMARY KEY (job, file, patient)
);
