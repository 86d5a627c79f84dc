//! Which OData properties of each entity can be filtered and sorted, the column each maps
//! to and how it is stored: one table for every backend, each compiling it to its SQL
//! (`sqlite/filter.rs`, `postgres/filter.rs`).

use crate::{Result, StoreError};

/// How a wire property is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stored {
    Text,
    /// Compared case-insensitively (host names, user names, ids clients may upper-case).
    TextNoCase,
    /// An action's GUID: PostgreSQL's `uuid`, SQLite's lower-case text (compared as its
    /// text form on both).
    Guid,
    /// An instant: SQLite's integer microseconds, PostgreSQL's `timestamptz`.
    Time,
    Integer,
    /// An array of strings (JSON text in SQLite, `jsonb` in PostgreSQL).
    List,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Column {
    pub property: &'static str,
    pub sql: &'static str,
    pub stored: Stored,
}

const fn col(property: &'static str, sql: &'static str, stored: Stored) -> Column {
    Column { property, sql, stored }
}

pub(crate) const ACTION_COLUMNS: &[Column] = &[
    col("id", "id", Stored::Guid),
    col("type", "type", Stored::Text),
    col("status", "status", Stored::Text),
    col("machineId", "machine_id", Stored::Text),
    col("computerDnsName", "computer_dns_name", Stored::TextNoCase),
    col("requestor", "requestor", Stored::TextNoCase),
    col("requestorComment", "requestor_comment", Stored::Text),
    col("requestSource", "request_source", Stored::Text),
    col("externalId", "external_id", Stored::Text),
    col("title", "title", Stored::Text),
    col("creationDateTimeUtc", "created_at", Stored::Time),
    col("lastUpdateDateTimeUtc", "updated_at", Stored::Time),
    col("cancellationRequestor", "cancellation_requestor", Stored::TextNoCase),
    col("cancellationDateTimeUtc", "cancelled_at", Stored::Time),
    col("errorHResult", "error_hresult", Stored::Integer),
    col("casefileProfile", "profile", Stored::Text),
];

pub(crate) const MACHINE_COLUMNS: &[Column] = &[
    col("id", "id", Stored::TextNoCase),
    col("computerDnsName", "computer_dns_name", Stored::TextNoCase),
    col("firstSeen", "first_seen", Stored::Time),
    col("lastSeen", "last_seen", Stored::Time),
    col("osPlatform", "os_platform", Stored::TextNoCase),
    col("version", "os_version", Stored::Text),
    col("osVersion", "os_version", Stored::Text),
    col("osBuild", "os_build", Stored::Integer),
    col("osArchitecture", "os_architecture", Stored::Text),
    col("agentVersion", "agent_version", Stored::Text),
    col("lastIpAddress", "last_ip_address", Stored::Text),
    col("machineTags", "machine_tags", Stored::List),
    col("rbacGroupId", "rbac_group_id", Stored::Integer),
];

/// The column of `property`; an unknown one is a bug in the caller's property table.
pub(crate) fn column(columns: &[Column], property: &str) -> Result<Column> {
    columns
        .iter()
        .find(|c| c.property == property)
        .copied()
        .ok_or_else(|| StoreError::Query(format!("no column for property '{property}'")))
}
