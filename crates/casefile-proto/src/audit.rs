//! The audit trail and chains of custody as the admin API and `casefile audit` show them.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::action::ActionStatus;

/// One audited event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent {
    /// Position in the trail: strictly increasing.
    pub seq: i64,
    #[schema(value_type = String, format = DateTime)]
    pub at: String,
    pub tenant_id: Option<String>,
    pub event: String,
    /// `application`, `user`, `agent`, `link`, `server` or `anonymous`.
    pub actor_kind: String,
    pub actor: String,
    pub target: Option<String>,
    /// `ok`, or `refused (<status>)`.
    pub outcome: String,
    pub http_status: Option<u16>,
    pub source_ip: Option<String>,
    pub correlation_id: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub detail: Option<serde_json::Value>,
}

/// A page of the trail, oldest first; `nextAfter` continues it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditList {
    pub value: Vec<AuditEvent>,
    /// Pass as `after` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub next_after: Option<i64>,
}

/// A package's chain of custody.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Custody {
    pub action_id: Uuid,
    pub machine_id: String,
    pub computer_dns_name: Option<String>,
    pub status: ActionStatus,
    pub requested_by: String,
    #[schema(value_type = String, format = DateTime)]
    pub requested_at: String,
    pub request_comment: String,
    /// The stored package once verified; `null` before, or when the action failed.
    pub package: Option<StoredPackage>,
    /// Every audited step, oldest first.
    pub events: Vec<AuditEvent>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StoredPackage {
    pub size: u64,
    pub sha256: String,
    #[schema(value_type = String, format = DateTime)]
    pub stored_at: String,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub deleted_at: Option<String>,
}
