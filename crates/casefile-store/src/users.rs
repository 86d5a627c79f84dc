//! The users area: local console users and console sessions.

use crate::*;
use async_trait::async_trait;
use casefile_proto::time::Timestamp;

/// Local users (tenant-scoped) and console sessions.
///
/// Scope: user methods take the [`TenantId`]. A session is found by the hash of the secret
/// its browser holds, which names its tenant (as an agent's credential names its machine);
/// the cleanup of ended sessions is cross-tenant by design.
#[async_trait]
pub trait UserStore: Send + Sync + 'static {
    /// [`StoreError::Duplicate`] for a name the tenant has already (in any letter case).
    async fn create_user(&self, user: &UserRecord) -> Result<()>;
    /// The user of that name, compared without letter case.
    async fn user_by_name(&self, tenant: &TenantId, name: &str) -> Result<Option<UserRecord>>;
    /// The tenant's users by name.
    async fn users(&self, tenant: &TenantId) -> Result<Vec<UserRecord>>;
    /// Applies `change` to the user of that name and returns it changed (`None`: no such
    /// user). Disabling it or setting its password deletes its sessions in the same
    /// transaction.
    async fn change_user(&self, tenant: &TenantId, name: &str, change: &UserChange) -> Result<Option<UserRecord>>;
    /// Starts a sign-in attempt of the user of that name, in one transaction: when its
    /// failures still impose a wait ([`sign_in_wait`]), nothing changes and the wait is
    /// returned; otherwise the attempt is counted as a failure now (a success resets the
    /// count with [`UserChange::LoginSucceeded`]), so attempts racing each other are each
    /// counted before any password is checked. `None`: no such user.
    async fn attempt_sign_in(
        &self,
        tenant: &TenantId,
        name: &str,
        at: Timestamp,
        backoff: Backoff,
    ) -> Result<Option<(UserRecord, Option<std::time::Duration>)>>;

    async fn create_session(&self, session: &SessionRecord) -> Result<()>;
    /// The session whose secret hashes to `id_hash`, ended or not (the caller judges).
    async fn session(&self, id_hash: &str) -> Result<Option<SessionRecord>>;
    /// Moves the session's `last_seen` to `at`.
    async fn touch_session(&self, id_hash: &str, at: Timestamp) -> Result<()>;
    async fn delete_session(&self, id_hash: &str) -> Result<bool>;
    /// Deletes sessions past their absolute end or unused since `idle_since`. Cross-tenant
    /// (the lifecycle sweeper).
    async fn delete_ended_sessions(&self, now: Timestamp, idle_since: Timestamp) -> Result<u64>;
}
