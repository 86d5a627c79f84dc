-- PostgreSQL's schema, equivalent to SQLite's as of its migration 0011 (one consolidated
-- step; PostgreSQL migrations 0002 on are reserved for later changes). Times are
-- `timestamptz` (microseconds, as SQLite's integers), ids `uuid` where they are GUIDs,
-- lists of strings `jsonb`. Comparisons SQLite makes with `COLLATE NOCASE` are made on
-- `lower(...)` here, and the indexes are on the same expressions.

CREATE TABLE signing_keys (
    kid          text PRIMARY KEY,
    purpose      text NOT NULL,
    algorithm    text NOT NULL,
    private_key  bytea NOT NULL,
    public_key   bytea NOT NULL,
    created_at   timestamptz NOT NULL,
    retired_at   timestamptz
);

CREATE TABLE enrollment_tokens (
    id            uuid PRIMARY KEY,
    tenant_id     text NOT NULL,
    token_hash    text NOT NULL UNIQUE,
    created_at    timestamptz NOT NULL,
    expires_at    timestamptz NOT NULL,
    revoked_at    timestamptz,
    uses_allowed  bigint NOT NULL DEFAULT 1,
    uses          bigint NOT NULL DEFAULT 0,
    last_used_at  timestamptz
);
CREATE INDEX enrollment_tokens_by_tenant ON enrollment_tokens (tenant_id, created_at);

CREATE TABLE machines (
    id                 text PRIMARY KEY,
    tenant_id          text NOT NULL,
    computer_dns_name  text NOT NULL,
    os_platform        text NOT NULL,
    os_version         text,
    os_architecture    text,
    os_build           bigint,
    agent_version      text,
    last_ip_address    text,
    ip_addresses       jsonb NOT NULL DEFAULT '[]',
    machine_tags       jsonb NOT NULL DEFAULT '[]',
    first_seen         timestamptz NOT NULL,
    last_seen          timestamptz NOT NULL,
    credential_hash    text NOT NULL UNIQUE,
    agent_public_key   text,
    -- Its device group; NULL: ungrouped.
    rbac_group_id      bigint,
    -- Set by `casefile machine reset-identity`: the next enrollment by token creates the
    -- identity afresh (clearing this).
    identity_reset_at  timestamptz
);
CREATE INDEX machines_by_tenant_name ON machines (tenant_id, lower(computer_dns_name));
CREATE INDEX machines_by_tenant_seen ON machines (tenant_id, last_seen DESC);
CREATE INDEX machines_by_tenant_group ON machines (tenant_id, rbac_group_id);

CREATE TABLE machine_actions (
    id                        uuid PRIMARY KEY,
    tenant_id                 text NOT NULL,
    machine_id                text NOT NULL REFERENCES machines (id),
    type                      text NOT NULL,
    status                    text NOT NULL,
    title                     text,
    requestor                 text NOT NULL,
    requestor_comment         text NOT NULL,
    external_id               text,
    request_source            text NOT NULL,
    computer_dns_name         text,
    created_at                timestamptz NOT NULL,
    updated_at                timestamptz NOT NULL,
    cancellation_requestor    text,
    cancellation_comment      text,
    cancelled_at              timestamptz,
    error_hresult             integer NOT NULL DEFAULT 0,
    troubleshoot_info         text,
    -- The cancellation asked for while running; the action ends `Cancelled` when the
    -- agent confirms it stopped.
    cancel_requested_at       timestamptz,
    -- A claim is a lease the agent confirms: an action claimed but never accepted is
    -- offered again once its lease has ended; `offers` counts the hand-outs.
    lease_expires_at          timestamptz,
    accepted_at               timestamptz,
    offers                    bigint NOT NULL DEFAULT 0
);
-- At most one live collection per machine: the index, not application code, decides
-- which of several racing requests wins.
CREATE UNIQUE INDEX one_live_action_per_machine_and_type
    ON machine_actions (machine_id, type) WHERE status IN ('Pending', 'InProgress');
CREATE INDEX actions_by_tenant_created ON machine_actions (tenant_id, created_at DESC, id DESC);
CREATE INDEX actions_by_tenant_machine ON machine_actions (tenant_id, machine_id, created_at DESC);
CREATE INDEX actions_by_tenant_status ON machine_actions (tenant_id, status, created_at DESC);
CREATE INDEX actions_by_tenant_type ON machine_actions (tenant_id, type, created_at DESC);
CREATE INDEX actions_by_tenant_requestor ON machine_actions (tenant_id, lower(requestor), created_at DESC);
CREATE INDEX actions_by_machine_status ON machine_actions (machine_id, status, created_at);
CREATE INDEX actions_by_status_updated ON machine_actions (status, updated_at);
CREATE INDEX actions_cancel_requested ON machine_actions (machine_id)
    WHERE cancel_requested_at IS NOT NULL AND status = 'InProgress';
CREATE INDEX actions_pending_created ON machine_actions (created_at) WHERE status = 'Pending';
-- Playbooks find their actions again by `$filter=externalId eq '…'`.
CREATE INDEX actions_by_tenant_external_id ON machine_actions (tenant_id, external_id, created_at DESC, id DESC)
    WHERE external_id IS NOT NULL;

CREATE TABLE packages (
    action_id    uuid PRIMARY KEY REFERENCES machine_actions (id),
    tenant_id    text NOT NULL,
    blob_key     text NOT NULL,
    size         bigint NOT NULL,
    sha256       text NOT NULL,
    stored_at    timestamptz NOT NULL,
    deleted_at   timestamptz
);
CREATE INDEX packages_live_by_stored ON packages (stored_at) WHERE deleted_at IS NULL;
-- An import whose zip the tenant already holds is refused as a replay: find it by hash.
CREATE INDEX packages_live_by_sha256 ON packages (tenant_id, sha256) WHERE deleted_at IS NULL;

-- Application registrations (OAuth2 client credentials); the secret only as an argon2
-- PHC string. Names are unique per tenant, compared without letter case.
CREATE TABLE applications (
    client_id          uuid PRIMARY KEY,
    tenant_id          text NOT NULL,
    name               text NOT NULL,
    secret_hash        text NOT NULL,
    roles              jsonb NOT NULL DEFAULT '[]',
    created_at         timestamptz NOT NULL,
    secret_rotated_at  timestamptz,
    disabled_at        timestamptz
);
CREATE UNIQUE INDEX applications_by_tenant_name ON applications (tenant_id, lower(name));

-- The audit trail, append-only: the database itself refuses to change or remove a row.
-- `detail` is `json` (kept as written), not `jsonb`, which refuses `\u0000` in strings.
CREATE TABLE audit_log (
    seq             bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    at              timestamptz NOT NULL,
    tenant_id       text,
    actor_kind      text NOT NULL,
    actor           text NOT NULL,
    event           text NOT NULL,
    target          text,
    outcome         text NOT NULL,
    http_status     integer,
    source_ip       text,
    correlation_id  text,
    detail          json
);
CREATE INDEX audit_by_tenant_time ON audit_log (tenant_id, at);
CREATE INDEX audit_by_target ON audit_log (target, seq) WHERE target IS NOT NULL;

CREATE FUNCTION audit_log_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only';
END;
$$;
CREATE TRIGGER audit_log_is_append_only_update BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_is_append_only();
CREATE TRIGGER audit_log_is_append_only_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_is_append_only();

-- Roles and device groups for delegated users.
CREATE TABLE rbac_roles (
    tenant_id    text NOT NULL,
    name         text NOT NULL,
    permissions  jsonb NOT NULL DEFAULT '[]',
    users        jsonb NOT NULL DEFAULT '[]',
    "groups"     jsonb NOT NULL DEFAULT '[]'
);
CREATE UNIQUE INDEX rbac_roles_by_tenant_name ON rbac_roles (tenant_id, lower(name));

CREATE TABLE device_groups (
    id           bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    tenant_id    text NOT NULL,
    name         text NOT NULL,
    rank         bigint NOT NULL,
    rules        jsonb NOT NULL,
    user_groups  jsonb NOT NULL DEFAULT '[]'
);
CREATE UNIQUE INDEX device_groups_by_tenant_name ON device_groups (tenant_id, lower(name));

-- Who sees "Ungrouped devices (default)"; none means every user.
CREATE TABLE ungrouped_access (
    tenant_id    text PRIMARY KEY,
    user_groups  jsonb NOT NULL DEFAULT '[]'
);

-- Challenges for re-enrollment: at most one outstanding per machine, consumed by the
-- enrollment that answers it, useless after `expires_at`.
CREATE TABLE enroll_challenges (
    machine_id   text PRIMARY KEY REFERENCES machines (id),
    nonce        text NOT NULL UNIQUE,
    expires_at   timestamptz NOT NULL
);
