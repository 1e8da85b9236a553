-- Schema v17: Bulk Data export jobs (samverka.interactions.export); see the SQLite migration for the layout.
CREATE TABLE export_jobs (
    id           text    PRIMARY KEY,
    status       text    NOT NULL,
    client_id    text,
    user_id      text,
    request      text    NOT NULL,
    spec         text    NOT NULL,
    state        text    NOT NULL,
    runner       text,
    heartbeat    bigint  NOT NULL,
    created      bigint  NOT NULL,
    finished     bigint,
    error        text
);
CREATE TABLE export_patients (
    job          text    NOT NULL,
    file         text    NOT NULL,
    patient      text    NOT NULL,
    PRIMARY KEY (job, file, patient)
);
