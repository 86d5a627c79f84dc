//! Every mapping between SQLite rows and the store's records, in one place: the column
//! lists, `*_from_row`, and the encodings of timestamps (microseconds) and lists (JSON).

use casefile_proto::action::{ActionStatus, ActionType, MachineAction};
use casefile_proto::time::Timestamp;
use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;
use uuid::Uuid;

use crate::*;

pub(super) fn micros(t: Timestamp) -> i64 {
    t.timestamp_micros()
}

pub(super) fn from_micros(v: i64) -> Result<Timestamp> {
    DateTime::<Utc>::from_timestamp_micros(v).ok_or_else(|| StoreError::Corrupt(format!("timestamp {v}")))
}

pub(super) fn opt_from_micros(v: Option<i64>) -> Result<Option<Timestamp>> {
    v.map(from_micros).transpose()
}

pub(super) fn json_list<T: serde::de::DeserializeOwned>(raw: &str) -> Result<Vec<T>> {
    serde_json::from_str(raw).map_err(|e| StoreError::Corrupt(format!("json list: {e}")))
}

pub(super) const ACTION_COLUMNS: &str = "id, machine_id, type, status, title, requestor, requestor_comment, external_id, \
     request_source, computer_dns_name, created_at, updated_at, cancellation_requestor, \
     cancellation_comment, cancelled_at, error_hresult, troubleshoot_info, profile, progress";

pub(super) fn action_from_row(row: &SqliteRow) -> Result<MachineAction> {
    let id: String = row.try_get("id")?;
    let kind: String = row.try_get("type")?;
    let status: String = row.try_get("status")?;
    Ok(MachineAction {
        id: Uuid::parse_str(&id).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        action_type: ActionType::parse(&kind).ok_or_else(|| StoreError::Corrupt(format!("action type {kind}")))?,
        title: row.try_get("title")?,
        requestor: row.try_get("requestor")?,
        requestor_comment: row.try_get("requestor_comment")?,
        status: ActionStatus::parse(&status).ok_or_else(|| StoreError::Corrupt(format!("status {status}")))?,
        machine_id: row.try_get("machine_id")?,
        computer_dns_name: row.try_get("computer_dns_name")?,
        creation_date_time_utc: from_micros(row.try_get("created_at")?)?,
        last_update_date_time_utc: from_micros(row.try_get("updated_at")?)?,
        cancellation_requestor: row.try_get("cancellation_requestor")?,
        cancellation_comment: row.try_get("cancellation_comment")?,
        cancellation_date_time_utc: opt_from_micros(row.try_get("cancelled_at")?)?,
        error_h_result: row.try_get("error_hresult")?,
        scope: None,
        external_id: row.try_get("external_id")?,
        request_source: row.try_get("request_source")?,
        related_file_info: None,
        commands: Vec::new(),
        troubleshoot_info: row.try_get("troubleshoot_info")?,
        profile: row.try_get("profile")?,
        progress: row
            .try_get::<Option<String>, _>("progress")?
            .map(|raw| serde_json::from_str(&raw).map_err(|e| StoreError::Corrupt(format!("progress: {e}"))))
            .transpose()?,
    })
}

pub(super) const MACHINE_COLUMNS: &str = "id, tenant_id, computer_dns_name, os_platform, os_version, os_architecture, \
     os_build, agent_version, last_ip_address, ip_addresses, machine_tags, first_seen, last_seen, agent_public_key, \
     rbac_group_id";

pub(super) fn machine_from_row(row: &SqliteRow) -> Result<MachineRecord> {
    Ok(MachineRecord {
        id: row.try_get("id")?,
        tenant_id: tenant_column(row, "tenant_id")?,
        facts: HostFacts {
            computer_dns_name: row.try_get("computer_dns_name")?,
            os_platform: row.try_get("os_platform")?,
            os_version: row.try_get("os_version")?,
            os_architecture: row.try_get("os_architecture")?,
            os_build: row.try_get("os_build")?,
            agent_version: row.try_get("agent_version")?,
            ip_addresses: json_list(row.try_get::<&str, _>("ip_addresses")?)?,
        },
        last_ip_address: row.try_get("last_ip_address")?,
        machine_tags: json_list(row.try_get::<&str, _>("machine_tags")?)?,
        first_seen: from_micros(row.try_get("first_seen")?)?,
        last_seen: from_micros(row.try_get("last_seen")?)?,
        agent_public_key: row.try_get("agent_public_key")?,
        rbac_group_id: row.try_get("rbac_group_id")?,
    })
}

pub(super) const TOKEN_COLUMNS: &str =
    "id, tenant_id, token_hash, created_at, expires_at, revoked_at, uses_allowed, uses, last_used_at";

pub(super) fn token_from_row(r: &SqliteRow) -> Result<EnrollmentTokenRecord> {
    let id: String = r.try_get("id")?;
    let count = |column: &str| -> Result<u32> {
        let v: i64 = r.try_get(column)?;
        u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("enrollment token {column} {v}")))
    };
    Ok(EnrollmentTokenRecord {
        id: Uuid::parse_str(&id).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        tenant_id: tenant_column(r, "tenant_id")?,
        token_hash: r.try_get("token_hash")?,
        created_at: from_micros(r.try_get("created_at")?)?,
        expires_at: from_micros(r.try_get("expires_at")?)?,
        revoked_at: opt_from_micros(r.try_get("revoked_at")?)?,
        uses_allowed: count("uses_allowed")?,
        uses: count("uses")?,
        last_used_at: opt_from_micros(r.try_get("last_used_at")?)?,
    })
}

pub(super) fn json_text<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub(super) fn uuid_column(row: &SqliteRow, name: &str) -> Result<Uuid> {
    let raw: String = row.try_get(name)?;
    Uuid::parse_str(&raw).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub(super) const PACKAGE_COLUMNS: &str = "action_id, tenant_id, blob_key, size, sha256, stored_at, deleted_at";

pub(super) fn package_from_row(row: &SqliteRow) -> Result<PackageRecord> {
    let size: i64 = row.try_get("size")?;
    Ok(PackageRecord {
        action_id: uuid_column(row, "action_id")?,
        tenant_id: tenant_column(row, "tenant_id")?,
        blob_key: row.try_get("blob_key")?,
        size: size as u64,
        sha256: row.try_get("sha256")?,
        stored_at: from_micros(row.try_get("stored_at")?)?,
        deleted_at: opt_from_micros(row.try_get("deleted_at")?)?,
    })
}

pub(super) const APPLICATION_COLUMNS: &str =
    "client_id, tenant_id, name, secret_hash, roles, created_at, secret_rotated_at, disabled_at";

pub(super) fn application_from_row(row: &SqliteRow) -> Result<ApplicationRecord> {
    Ok(ApplicationRecord {
        client_id: uuid_column(row, "client_id")?,
        tenant_id: tenant_column(row, "tenant_id")?,
        name: row.try_get("name")?,
        secret_hash: row.try_get("secret_hash")?,
        roles: json_list(row.try_get::<&str, _>("roles")?)?,
        created_at: from_micros(row.try_get("created_at")?)?,
        secret_rotated_at: opt_from_micros(row.try_get("secret_rotated_at")?)?,
        disabled_at: opt_from_micros(row.try_get("disabled_at")?)?,
    })
}

pub(super) fn roles_json(roles: &[String]) -> Result<String> {
    serde_json::to_string(roles).map_err(|e| StoreError::Corrupt(e.to_string()))
}

impl<T> Listed<T> {
    pub(super) fn try_map<U>(self, f: impl Fn(&T) -> Result<U>) -> Result<Listed<U>> {
        Ok(Listed { items: self.items.iter().map(f).collect::<Result<_>>()?, total: self.total, more: self.more })
    }
}

pub(super) fn tenant_column(row: &SqliteRow, name: &str) -> Result<TenantId> {
    let raw: String = row.try_get(name)?;
    TenantId::try_from(raw).map_err(StoreError::Corrupt)
}

pub(super) fn role_from_row(r: &SqliteRow) -> Result<casefile_proto::rbac::Role> {
    Ok(casefile_proto::rbac::Role {
        name: r.try_get("name")?,
        permissions: json_list(r.try_get::<&str, _>("permissions")?)?,
        users: json_list(r.try_get::<&str, _>("users")?)?,
        groups: json_list(r.try_get::<&str, _>("groups")?)?,
    })
}

pub(super) fn device_group_from_row(r: &SqliteRow) -> Result<casefile_proto::rbac::DeviceGroup> {
    Ok(casefile_proto::rbac::DeviceGroup {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        rank: r.try_get("rank")?,
        rules: json_list(r.try_get::<&str, _>("rules")?)?,
        user_groups: json_list(r.try_get::<&str, _>("user_groups")?)?,
    })
}

pub(super) fn audit_from_row(r: &SqliteRow) -> Result<AuditRecord> {
    let status: Option<i64> = r.try_get("http_status")?;
    let detail: Option<String> = r.try_get("detail")?;
    Ok(AuditRecord {
        seq: r.try_get("seq")?,
        entry: AuditEntry {
            at: from_micros(r.try_get("at")?)?,
            tenant_id: r.try_get("tenant_id")?,
            actor_kind: r.try_get("actor_kind")?,
            actor: r.try_get("actor")?,
            event: r.try_get("event")?,
            target: r.try_get("target")?,
            outcome: r.try_get("outcome")?,
            http_status: status.and_then(|s| u16::try_from(s).ok()),
            source_ip: r.try_get("source_ip")?,
            correlation_id: r.try_get("correlation_id")?,
            detail: detail
                .map(|d| serde_json::from_str(&d).map_err(|e| StoreError::Corrupt(format!("audit detail: {e}"))))
                .transpose()?,
        },
    })
}

pub(super) fn signing_key_from_row(r: &SqliteRow) -> Result<SigningKeyRecord> {
    Ok(SigningKeyRecord {
        kid: r.try_get("kid")?,
        purpose: r.try_get("purpose")?,
        algorithm: r.try_get("algorithm")?,
        private_key: r.try_get("private_key")?,
        public_key: r.try_get("public_key")?,
        created_at: from_micros(r.try_get("created_at")?)?,
        retired_at: opt_from_micros(r.try_get("retired_at")?)?,
    })
}

pub(super) const USER_COLUMNS: &str =
    "id, tenant_id, name, password_hash, created_at, password_changed_at, disabled_at, failed_logins, last_failed_at";

pub(super) fn user_from_row(r: &SqliteRow) -> Result<UserRecord> {
    let failed: i64 = r.try_get("failed_logins")?;
    Ok(UserRecord {
        id: uuid_column(r, "id")?,
        tenant_id: tenant_column(r, "tenant_id")?,
        name: r.try_get("name")?,
        password_hash: r.try_get("password_hash")?,
        created_at: from_micros(r.try_get("created_at")?)?,
        password_changed_at: from_micros(r.try_get("password_changed_at")?)?,
        disabled_at: opt_from_micros(r.try_get("disabled_at")?)?,
        failed_logins: u32::try_from(failed).unwrap_or(u32::MAX),
        last_failed_at: opt_from_micros(r.try_get("last_failed_at")?)?,
    })
}

pub(super) const SESSION_COLUMNS: &str =
    "id_hash, tenant_id, local_user, identity, csrf, created_at, last_seen, expires_at";

pub(super) fn session_from_row(r: &SqliteRow) -> Result<SessionRecord> {
    let local_user: Option<String> = r.try_get("local_user")?;
    Ok(SessionRecord {
        id_hash: r.try_get("id_hash")?,
        tenant_id: tenant_column(r, "tenant_id")?,
        local_user: local_user
            .map(|id| Uuid::parse_str(&id).map_err(|e| StoreError::Corrupt(e.to_string())))
            .transpose()?,
        identity: serde_json::from_str(r.try_get("identity")?).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        csrf: r.try_get("csrf")?,
        created_at: from_micros(r.try_get("created_at")?)?,
        last_seen: from_micros(r.try_get("last_seen")?)?,
        expires_at: from_micros(r.try_get("expires_at")?)?,
    })
}
