-- Schema v11: the module registry (samverka.modules). A module is a SMART backend-services client
-- (auth_clients.client_id) with topic-based Subscription resources; manifest is the JSON it was registered with.
CREATE TABLE modules (
    id             TEXT    PRIMARY KEY,
    role           TEXT    NOT NULL,
    state          TEXT    NOT NULL,          -- active | standby | disabled | replaced
    client_id      TEXT    NOT NULL,
    manifest       TEXT    NOT NULL,          -- JSON
    created        bigint  NOT NULL,          -- seconds since the epoch
    updated        bigint  NOT NULL,
    replaced_by    TEXT,
    replaces       TEXT
);
CREATE INDEX modules_by_role ON modules (role, state);
-- One row per Subscription resource a module owns. after_event / after_seq: the handover point a
-- replacement subscription continues from (its predecessor's last acknowledged event; NULL: none).
CREATE TABLE module_subscriptions (
    module_id      TEXT    NOT NULL,
    position       INTEGER NOT NULL,          -- index in the manifest's subscriptions list
    subscription   TEXT    NOT NULL,          -- Subscription.id
    topic          TEXT    NOT NULL,
    predecessor    TEXT,                      -- Subscription.id of the replaced module's subscription
    after_event    bigint,                    -- its last acknowledged event number (eventsSinceSubscriptionStart)
    after_seq      bigint,                    -- that event's outbox position, when the events package knows it
    PRIMARY KEY (module_id, position)
);
-- A client can be disabled and enabled again (revoked stays final): while disabled it gets no
-- tokens and its tokens are refused; tokens issued before valid_after are refused after an enable.
ALTER TABLE auth_clients ADD COLUMN disabled bigint;
ALTER TABLE auth_clients ADD COLUMN valid_after bigint
