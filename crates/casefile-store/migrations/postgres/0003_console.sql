-- Issue 12: local console users and console sessions.
CREATE TABLE console_users (
    id                   uuid PRIMARY KEY,
    tenant_id            text NOT NULL,
    name                 text NOT NULL,
    password_hash        text NOT NULL,
    created_at           timestamptz NOT NULL,
    password_changed_at  timestamptz NOT NULL,
    disabled_at          timestamptz,
    failed_logins        bigint NOT NULL DEFAULT 0,
    last_failed_at       timestamptz
);
CREATE UNIQUE INDEX console_users_by_name ON console_users (tenant_id, lower(name));

-- A session is found by the SHA-256 of the secret its browser holds.
CREATE TABLE console_sessions (
    id_hash     text PRIMARY KEY,
    tenant_id   text NOT NULL,
    local_user  uuid REFERENCES console_users (id),
    identity    jsonb NOT NULL,
    csrf        text NOT NULL,
    created_at  timestamptz NOT NULL,
    last_seen   timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL
);
CREATE INDEX console_sessions_by_user ON console_sessions (local_user);
CREATE INDEX console_sessions_by_end ON console_sessions (expires_at);
CREATE INDEX console_sessions_by_use ON console_sessions (last_seen);
