//! The audit area: the append-only trail.

use crate::*;
use async_trait::async_trait;

/// The append-only audit trail.
///
/// Scope: each entry carries its own tenant (`None` for a caller whose token did not
/// verify); `audit` reads across tenants unless the filter names one (admin commands).
#[async_trait]
pub trait AuditStore: Send + Sync + 'static {
    async fn append_audit(&self, entry: &AuditEntry) -> Result<i64>;
    /// Entries matching `filter`, oldest first.
    async fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>>;
}
