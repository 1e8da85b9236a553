-- Schema v9: the transactional outbox and topic-based subscriptions (samverka.events,
-- https://hl7.org/fhir/uv/subscriptions-backport/). Every committed resource change appends one
-- `event_outbox` row in its own transaction; `seq` comes from `event_head`, whose row each writer
-- updates just before commit, so sequence numbers follow commit order without gaps on every backend.
CREATE TABLE event_head (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    seq          INTEGER NOT NULL          -- the last outbox sequence number handed out
);
INSERT INTO event_head (id, seq) VALUES (1, 0);
CREATE TABLE event_outbox (
    seq          INTEGER PRIMARY KEY,      -- global order of committed changes, 1, 2, 3, ...
    type         TEXT    NOT NULL,
    id           TEXT    NOT NULL,
    version      INTEGER NOT NULL,         -- the version written (the "after" version)
    before_version INTEGER,                -- the version it replaced; NULL for a create
    interaction  TEXT    NOT NULL,         -- create | update | delete
    at_us        INTEGER NOT NULL          -- the version's lastUpdated, µs since the epoch
);
-- One row: how far the dispatcher has matched the outbox against subscriptions, and the delivery lease
-- (exactly one server process delivers; the others wait until the lease expires).
CREATE TABLE event_state (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    dispatched   INTEGER NOT NULL,         -- last outbox seq matched against the subscriptions
    lease_holder TEXT,
    lease_until  INTEGER NOT NULL          -- µs since the epoch
);
INSERT INTO event_state (id, dispatched, lease_holder, lease_until) VALUES (1, 0, NULL, 0);
-- The server's side of each Subscription resource: its parsed channel and its delivery state.
CREATE TABLE event_subscription (
    id           TEXT    PRIMARY KEY,      -- Subscription.id
    topic        TEXT    NOT NULL,         -- canonical URL (Subscription.criteria)
    filter       TEXT,                     -- backport-filter-criteria, as "Type?query"
    payload      TEXT    NOT NULL,         -- empty | id-only | full-resource
    endpoint     TEXT    NOT NULL,
    headers      TEXT    NOT NULL,         -- JSON list of "Name: value"
    heartbeat    INTEGER,                  -- seconds
    timeout      INTEGER,                  -- seconds
    max_count    INTEGER,
    end_us       INTEGER,                  -- Subscription.end
    owner        TEXT,                     -- client_id of the token that created it
    owner_scope  TEXT,
    owner_patient TEXT,
    status       TEXT    NOT NULL,         -- requested | active | error | off
    start_seq    INTEGER NOT NULL,         -- outbox seq when it was created: later events only
    events_since_start INTEGER NOT NULL DEFAULT 0,
    delivered    INTEGER NOT NULL DEFAULT 0,  -- last event number the endpoint acknowledged (2xx)
    error_count  INTEGER NOT NULL DEFAULT 0,
    failing_since INTEGER,                 -- µs: first failure of the current run of failures
    next_try     INTEGER NOT NULL DEFAULT 0,  -- µs: not before this
    last_sent    INTEGER NOT NULL DEFAULT 0,  -- µs: last successful POST (heartbeats count from it)
    last_error   TEXT
);
-- The events of each subscription, numbered 1, 2, 3, ... (eventsSinceSubscriptionStart).
CREATE TABLE event_notification (
    sub          TEXT    NOT NULL,
    number       INTEGER NOT NULL,
    seq          INTEGER NOT NULL,         -- event_outbox.seq
    PRIMARY KEY (sub, number)
)
