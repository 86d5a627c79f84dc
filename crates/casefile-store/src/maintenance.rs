//! The maintenance area: upkeep, operations, the lifecycle sweeper.

use async_trait::async_trait;
use casefile_proto::time::Timestamp;
use uuid::Uuid;

use crate::*;

/// Upkeep, operations and the lifecycle sweeper.
///
/// Scope: across tenants by design, for the server itself (`/readyz`, `/metrics`,
/// `casefile backup`, retention and time-outs); no request handler calls these with a
/// caller's input. `mark_package_deleted` takes the action id of a package
/// `expired_packages` returned.
#[async_trait]
pub trait MaintenanceStore: Send + Sync + 'static {
    /// Periodic upkeep (planner statistics); cheap when nothing changed.
    async fn optimize(&self) -> Result<()>;

    /// Closes every connection and waits until they are closed. Later calls fail.
    async fn close(&self) {}
    /// A consistent copy of the whole database in a new file at `dest`, taken while
    /// others keep writing (`casefile backup`).
    async fn backup_into(&self, dest: &std::path::Path) -> Result<()>;

    /// Commits a write that changes nothing, proving the database takes writes now (a full
    /// disk answers [`StoreError::Full`]).
    async fn probe_write(&self) -> Result<()>;
    /// How many actions there are of each type and status, across tenants:
    /// `(type, status, count)`.
    async fn action_counts(&self) -> Result<Vec<(String, String, u64)>>;
    /// How many machines, across tenants, called the server at or after `since`.
    async fn machines_seen_since(&self, since: Timestamp) -> Result<u64>;
    /// Packages stored before `stored_before` and not yet deleted, oldest first.
    async fn expired_packages(&self, stored_before: Timestamp, limit: u32) -> Result<Vec<PackageRecord>>;
    /// Marks a package deleted; downloads and links refuse it from then on.
    /// `false`: it was already marked (by another replica's sweeper), nothing changed.
    async fn mark_package_deleted(&self, action_id: Uuid, at: Timestamp) -> Result<bool>;
    /// Times out `Pending` actions created before `created_before` (no agent took them).
    async fn time_out_pending(&self, created_before: Timestamp, change: &Transition) -> Result<u64>;
    /// Times out `InProgress` actions whose machine has not been heard from since
    /// `silent_since`, or that have been running since before `started_before`.
    async fn time_out_stalled(
        &self,
        silent_since: Timestamp,
        started_before: Timestamp,
        change: &Transition,
    ) -> Result<u64>;
}
