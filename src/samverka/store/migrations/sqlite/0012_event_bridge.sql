-- Schema v12: the optional NATS JetStream bridge (samverka.events.nats). One row per bridge (its name is
-- "nats:<stream>"): the last outbox seq whose messages JetStream acknowledged, and the bridge's own
-- leader lease (exactly one server process publishes; the others wait until the lease expires).
-- Rows are created by the bridge when it first runs; a new bridge starts at 0 and publishes every
-- committed event from the first one.
CREATE TABLE event_bridge (
    name         TEXT    PRIMARY KEY,
    published    INTEGER NOT NULL DEFAULT 0,  -- last event_outbox.seq acknowledged by the stream
    lease_holder TEXT,
    lease_until  INTEGER NOT NULL DEFAULT 0   -- µs since the epoch
)
