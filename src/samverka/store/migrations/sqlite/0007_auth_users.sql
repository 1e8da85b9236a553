-- Schema v7: SMART App Launch (https://hl7.org/fhir/smart-app-launch/app-launch.html) and demo users.
-- Users who log in on the embedded login page: a Practitioner's HSA-id and an argon2 password hash.
-- Who the user is (name, assignments) is read from the Practitioner and PractitionerRole resources.
CREATE TABLE auth_users (
    hsa_id         TEXT    PRIMARY KEY,
    password_hash  TEXT    NOT NULL,          -- argon2id (PHC string); never the password
    created        INTEGER  NOT NULL,
    disabled       INTEGER
);
-- Short-lived and single-use handles of the authorization-code flow: pending authorization requests,
-- authorization codes, EHR launch contexts and refresh tokens. Only a SHA-256 of each handle is kept.
CREATE TABLE auth_handles (
    id             TEXT    PRIMARY KEY,       -- hex SHA-256 of the handle given out
    kind           TEXT    NOT NULL,          -- request | code | launch | refresh
    client_id      TEXT,
    family         TEXT,                      -- one grant: its code and every refresh token rotated from it
    data           TEXT    NOT NULL,          -- JSON
    exp            INTEGER  NOT NULL,
    used           INTEGER,                    -- when consumed (a second use is a replay)
    revoked        INTEGER
);
CREATE INDEX auth_handles_by_exp ON auth_handles (exp);
CREATE INDEX auth_handles_by_family ON auth_handles (family);
