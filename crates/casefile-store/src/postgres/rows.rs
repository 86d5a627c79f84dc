//! Rows to records, in one place: the column lists every query selects and the mapping
//! of each table's row.

use casefile_proto::action::{ActionStatus, ActionType, MachineAction};
use sqlx::Row;
use sqlx::postgres::PgRow;
use sqlx::types::Json;

use crate::*;

pub(super) const ACTION_COLUMNS: &str = "id, machine_id, type, status, title, requestor, requestor_comment, \
     external_id, request_source, computer_dns_name, created_at, updated_at, cancellation_requestor, \
     cancellation_comment, cancelled_at, error_hresult, troubleshoot_info, profile, progress";

pub(super) fn action(row: &PgRow) -> Result<MachineAction> {
    let kind: String = row.try_get("type")?;
    let status: String = row.try_get("status")?;
    Ok(MachineAction {
        id: row.try_get("id")?,
        action_type: ActionType::parse(&kind).ok_or_else(|| StoreError::Corrupt(format!("action type {kind}")))?,
        title: row.try_get("title")?,
        requestor: row.try_get("requestor")?,
        requestor_comment: row.try_get("requestor_comment")?,
        status: ActionStatus::parse(&status).ok_or_else(|| StoreError::Corrupt(format!("status {status}")))?,
        machine_id: row.try_get("machine_id")?,
        computer_dns_name: row.try_get("computer_dns_name")?,
        creation_date_time_utc: row.try_get("created_at")?,
        last_update_date_time_utc: row.try_get("updated_at")?,
        cancellation_requestor: row.try_get("cancellation_requestor")?,
        cancellation_comment: row.try_get("cancellation_comment")?,
        cancellation_date_time_utc: row.try_get("cancelled_at")?,
        error_h_result: row.try_get("error_hresult")?,
        scope: None,
        external_id: row.try_get("external_id")?,
        request_source: row.try_get("request_source")?,
        related_file_info: None,
        commands: Vec::new(),
        troubleshoot_info: row.try_get("troubleshoot_info")?,
        profile: row.try_get("profile")?,
        progress: row.try_get::<Option<Json<casefile_proto::action::Progress>>, _>("progress")?.map(|p| p.0),
    })
}

pub(super) const MACHINE_COLUMNS: &str = "id, tenant_id, computer_dns_name, os_platform, os_version, \
     os_architecture, os_build, agent_version, last_ip_address, ip_addresses, machine_tags, first_seen, last_seen, \
     agent_public_key, rbac_group_id";

pub(super) fn machine(row: &PgRow) -> Result<MachineRecord> {
    Ok(MachineRecord {
        id: row.try_get("id")?,
        tenant_id: tenant(row)?,
        facts: HostFacts {
            computer_dns_name: row.try_get("computer_dns_name")?,
            os_platform: row.try_get("os_platform")?,
            os_version: row.try_get("os_version")?,
            os_architecture: row.try_get("os_architecture")?,
            os_build: row.try_get("os_build")?,
            agent_version: row.try_get("agent_version")?,
            ip_addresses: json_list(row, "ip_addresses")?,
        },
        last_ip_address: row.try_get("last_ip_address")?,
        machine_tags: json_list(row, "machine_tags")?,
        first_seen: row.try_get("first_seen")?,
        last_seen: row.try_get("last_seen")?,
        agent_public_key: row.try_get("agent_public_key")?,
        rbac_group_id: row.try_get("rbac_group_id")?,
    })
}

pub(super) const TOKEN_COLUMNS: &str =
    "id, tenant_id, token_hash, created_at, expires_at, revoked_at, uses_allowed, uses, last_used_at";

pub(super) fn token(r: &PgRow) -> Result<EnrollmentTokenRecord> {
    let count = |column: &str| -> Result<u32> {
        let v: i64 = r.try_get(column)?;
        u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("enrollment token {column} {v}")))
    };
    Ok(EnrollmentTokenRecord {
        id: r.try_get("id")?,
        tenant_id: tenant(r)?,
        token_hash: r.try_get("token_hash")?,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
        revoked_at: r.try_get("revoked_at")?,
        uses_allowed: count("uses_allowed")?,
        uses: count("uses")?,
        last_used_at: r.try_get("last_used_at")?,
    })
}

pub(super) const PACKAGE_COLUMNS: &str = "action_id, tenant_id, blob_key, size, sha256, stored_at, deleted_at";

pub(super) fn package(row: &PgRow) -> Result<PackageRecord> {
    let size: i64 = row.try_get("size")?;
    Ok(PackageRecord {
        action_id: row.try_get("action_id")?,
        tenant_id: tenant(row)?,
        blob_key: row.try_get("blob_key")?,
        size: u64::try_from(size).map_err(|_| StoreError::Corrupt(format!("package size {size}")))?,
        sha256: row.try_get("sha256")?,
        stored_at: row.try_get("stored_at")?,
        deleted_at: row.try_get("deleted_at")?,
    })
}

pub(super) const APPLICATION_COLUMNS: &str =
    "client_id, tenant_id, name, secret_hash, roles, created_at, secret_rotated_at, disabled_at";

pub(super) fn application(row: &PgRow) -> Result<ApplicationRecord> {
    Ok(ApplicationRecord {
        client_id: row.try_get("client_id")?,
        tenant_id: tenant(row)?,
        name: row.try_get("name")?,
        secret_hash: row.try_get("secret_hash")?,
        roles: json_list(row, "roles")?,
        created_at: row.try_get("created_at")?,
        secret_rotated_at: row.try_get("secret_rotated_at")?,
        disabled_at: row.try_get("disabled_at")?,
    })
}

pub(super) const SIGNING_KEY_COLUMNS: &str = "kid, purpose, algorithm, private_key, public_key, created_at, retired_at";

pub(super) fn signing_key(r: &PgRow) -> Result<SigningKeyRecord> {
    Ok(SigningKeyRecord {
        kid: r.try_get("kid")?,
        purpose: r.try_get("purpose")?,
        algorithm: r.try_get("algorithm")?,
        private_key: r.try_get("private_key")?,
        public_key: r.try_get("public_key")?,
        created_at: r.try_get("created_at")?,
        retired_at: r.try_get("retired_at")?,
    })
}

pub(super) const AUDIT_COLUMNS: &str = "seq, at, tenant_id, actor_kind, actor, event, target, outcome, \
     http_status, source_ip, correlation_id, detail";

pub(super) fn audit(r: &PgRow) -> Result<AuditRecord> {
    let status: Option<i32> = r.try_get("http_status")?;
    let detail: Option<Json<serde_json::Value>> = r.try_get("detail")?;
    Ok(AuditRecord {
        seq: r.try_get("seq")?,
        entry: AuditEntry {
            at: r.try_get("at")?,
            tenant_id: r.try_get("tenant_id")?,
            actor_kind: r.try_get("actor_kind")?,
            actor: r.try_get("actor")?,
            event: r.try_get("event")?,
            target: r.try_get("target")?,
            outcome: r.try_get("outcome")?,
            http_status: status.and_then(|s| u16::try_from(s).ok()),
            source_ip: r.try_get("source_ip")?,
            correlation_id: r.try_get("correlation_id")?,
            detail: detail.map(|d| d.0),
        },
    })
}

pub(super) fn role(r: &PgRow) -> Result<casefile_proto::rbac::Role> {
    Ok(casefile_proto::rbac::Role {
        name: r.try_get("name")?,
        permissions: json_list(r, "permissions")?,
        users: json_list(r, "users")?,
        groups: json_list(r, "groups")?,
    })
}

pub(super) fn device_group(r: &PgRow) -> Result<casefile_proto::rbac::DeviceGroup> {
    Ok(casefile_proto::rbac::DeviceGroup {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        rank: r.try_get("rank")?,
        rules: json_list(r, "rules")?,
        user_groups: json_list(r, "user_groups")?,
    })
}

/// The row's `tenant_id`.
fn tenant(row: &PgRow) -> Result<TenantId> {
    let raw: String = row.try_get("tenant_id")?;
    TenantId::try_from(raw).map_err(StoreError::Corrupt)
}

/// A `jsonb` list column.
pub(super) fn json_list<T: serde::de::DeserializeOwned>(row: &PgRow, column: &str) -> Result<Vec<T>> {
    let value: serde_json::Value = row.try_get(column)?;
    serde_json::from_value(value).map_err(|e| StoreError::Corrupt(format!("{column}: {e}")))
}

/// A list as the `jsonb` value to bind.
pub(super) fn json<T: serde::Serialize>(value: &T) -> Result<serde_json::Value> {
    serde_json::to_value(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub(super) const USER_COLUMNS: &str =
    "id, tenant_id, name, password_hash, created_at, password_changed_at, disabled_at, failed_logins, last_failed_at";

pub(super) fn user(r: &PgRow) -> Result<UserRecord> {
    let failed: i64 = r.try_get("failed_logins")?;
    Ok(UserRecord {
        id: r.try_get("id")?,
        tenant_id: tenant(r)?,
        name: r.try_get("name")?,
        password_hash: r.try_get("password_hash")?,
        created_at: r.try_get("created_at")?,
        password_changed_at: r.try_get("password_changed_at")?,
        disabled_at: r.try_get("disabled_at")?,
        failed_logins: u32::try_from(failed).unwrap_or(u32::MAX),
        last_failed_at: r.try_get("last_failed_at")?,
    })
}

pub(super) const SESSION_COLUMNS: &str =
    "id_hash, tenant_id, local_user, identity, csrf, created_at, last_seen, expires_at";

pub(super) fn session(r: &PgRow) -> Result<SessionRecord> {
    let identity: serde_json::Value = r.try_get("identity")?;
    Ok(SessionRecord {
        id_hash: r.try_get("id_hash")?,
        tenant_id: tenant(r)?,
        local_user: r.try_get("local_user")?,
        identity: serde_json::from_value(identity).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        csrf: r.try_get("csrf")?,
        created_at: r.try_get("created_at")?,
        last_seen: r.try_get("last_seen")?,
        expires_at: r.try_get("expires_at")?,
    })
}
