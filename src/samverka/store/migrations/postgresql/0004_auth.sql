-- Schema v4: the built-in SMART on FHIR authorization server (https://hl7.org/fhir/smart-app-launch/).
-- Registered clients (RFC 7591). jwks holds public keys only; revoked is set when a client is revoked.
CREATE TABLE auth_clients (
    client_id    TEXT    PRIMARY KEY,
    name         TEXT    NOT NULL,
    auth_method  TEXT    NOT NULL,          -- private_key_jwt | none
    scope        TEXT    NOT NULL,          -- the scopes the client may be granted (space separated)
    grant_types  TEXT    NOT NULL,          -- space separated
    jwks         TEXT,                      -- inline JWKS (JSON)
    jwks_uri     TEXT,                      -- or where to fetch it (loopback only)
    metadata     TEXT    NOT NULL,          -- the registered client metadata (JSON)
    created      bigint  NOT NULL,          -- seconds since the epoch
    revoked      bigint                     -- seconds since the epoch, once revoked
);
-- Client assertion ids seen, kept until the assertion expires: a second use is a replay.
CREATE TABLE auth_assertions (
    client_id    TEXT    NOT NULL,
    jti          TEXT    NOT NULL,
    exp          bigint  NOT NULL,
    PRIMARY KEY (client_id, jti)
);
CREATE INDEX auth_assertions_by_exp ON auth_assertions (exp);
-- The server's token signing keys. The newest unretired key signs; retired keys stay published
-- until every token they signed has expired. private_jwk is never served or logged.
CREATE TABLE auth_keys (
    kid          TEXT    PRIMARY KEY,
    alg          TEXT    NOT NULL,
    private_jwk  TEXT    NOT NULL,
    public_jwk   TEXT    NOT NULL,
    created      bigint  NOT NULL,
    retired      bigint
);
-- Access tokens revoked before their expiry (RFC 7009), kept until they expire.
CREATE TABLE auth_revoked (
    jti          TEXT    PRIMARY KEY,
    exp          bigint  NOT NULL
);
CREATE INDEX auth_revoked_by_exp ON auth_revoked (exp);
