-- Times are microseconds since the Unix epoch (UTC): compact, indexable, totally ordered.

CREATE TABLE signing_keys (
    kid          TEXT PRIMARY KEY,
    purpose      TEXT NOT NULL,
    algorithm    TEXT NOT NULL,
    private_key  BLOB NOT NULL,
    public_key   BLOB NOT NULL,
    created_at   INTEGER NOT NULL,
    retired_at   INTEGER
);

CREATE TABLE enrollment_tokens (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL,
    token_hash   TEXT NOT NULL UNIQUE,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    revoked_at   INTEGER
);

CREATE TABLE machines (
    id                 TEXT PRIMARY KEY,
    tenant_id          TEXT NOT NULL,
    computer_dns_name  TEXT NOT NULL,
    os_platform        TEXT NOT NULL,
    os_version         TEXT,
    os_architecture    TEXT,
    os_build           INTEGER,
    agent_version      TEXT,
    last_ip_address    TEXT,
    ip_addresses       TEXT NOT NULL DEFAULT '[]',
    machine_tags       TEXT NOT NULL DEFAULT '[]',
    first_seen         INTEGER NOT NULL,
    last_seen          INTEGER NOT NULL,
    credential_hash    TEXT NOT NULL UNIQUE,
    agent_public_key   TEXT
);
CREATE INDEX machines_by_tenant_name ON machines (tenant_id, computer_dns_name COLLATE NOCASE);
CREATE INDEX machines_by_tenant_seen ON machines (tenant_id, last_seen DESC);

CREATE TABLE machine_actions (
    id                        TEXT PRIMARY KEY,
    tenant_id                 TEXT NOT NULL,
    machine_id                TEXT NOT NULL REFERENCES machines (id),
    type                      TEXT NOT NULL,
    status                    TEXT NOT NULL,
    title                     TEXT,
    requestor                 TEXT NOT NULL,
    requestor_comment         TEXT NOT NULL,
    external_id               TEXT,
    request_source            TEXT NOT NULL,
    computer_dns_name         TEXT,
    created_at                INTEGER NOT NULL,
    updated_at                INTEGER NOT NULL,
    cancellation_requestor    TEXT,
    cancellation_comment      TEXT,
    cancelled_at              INTEGER,
    error_hresult             INTEGER NOT NULL DEFAULT 0,
    troubleshoot_info         TEXT
);
-- At most one live collection per machine: the index, not application code, decides
-- which of several racing requests wins.
CREATE UNIQUE INDEX one_live_action_per_machine_and_type
    ON machine_actions (machine_id, type) WHERE status IN ('Pending', 'InProgress');
CREATE INDEX actions_by_tenant_created ON machine_actions (tenant_id, created_at DESC);
CREATE INDEX actions_by_machine_status ON machine_actions (machine_id, status, created_at);
CREATE INDEX actions_by_status_updated ON machine_actions (status, updated_at);

CREATE TABLE packages (
    action_id    TEXT PRIMARY KEY REFERENCES machine_actions (id),
    tenant_id    TEXT NOT NULL,
    blob_key     TEXT NOT NULL,
    size         INTEGER NOT NULL,
    sha256       TEXT NOT NULL,
    stored_at    INTEGER NOT NULL,
    deleted_at   INTEGER
);
