-- Issue 12: local console users and console sessions.
CREATE TABLE console_users (
    id                   TEXT PRIMARY KEY,
    tenant_id            TEXT NOT NULL,
    name                 TEXT NOT NULL,
    password_hash        TEXT NOT NULL,
    created_at           INTEGER NOT NULL,
    password_changed_at  INTEGER NOT NULL,
    disabled_at          INTEGER,
    failed_logins        INTEGER NOT NULL DEFAULT 0,
    last_failed_at       INTEGER
);
CREATE UNIQUE INDEX console_users_by_name ON console_users (tenant_id, name COLLATE NOCASE);

-- A session is found by the SHA-256 of the secret its browser holds.
CREATE TABLE console_sessions (
    id_hash     TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    local_user  TEXT REFERENCES console_users (id),
    identity    TEXT NOT NULL,
    csrf        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    last_seen   INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);
CREATE INDEX console_sessions_by_user ON console_sessions (local_user);
CREATE INDEX console_sessions_by_end ON console_sessions (expires_at);
CREATE INDEX console_sessions_by_use ON console_sessions (last_seen);
