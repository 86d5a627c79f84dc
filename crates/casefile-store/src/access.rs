//! The access area: roles and device groups of delegated users.

use crate::*;
use async_trait::async_trait;

/// Delegated access: roles, device groups and who sees ungrouped machines.
///
/// Scope: every method takes the [`TenantId`].
#[async_trait]
pub trait AccessStore: Send + Sync + 'static {
    async fn roles(&self, tenant: &TenantId) -> Result<Vec<casefile_proto::rbac::Role>>;
    /// Creates or replaces the role of that name.
    async fn put_role(&self, tenant: &TenantId, role: &casefile_proto::rbac::Role) -> Result<()>;
    async fn delete_role(&self, tenant: &TenantId, name: &str) -> Result<bool>;
    /// The tenant's groups, best rank first.
    async fn device_groups(&self, tenant: &TenantId) -> Result<Vec<casefile_proto::rbac::DeviceGroup>>;
    /// Creates a group (its `id` is assigned); [`StoreError::Duplicate`] for a taken name.
    async fn create_device_group(
        &self,
        tenant: &TenantId,
        group: &casefile_proto::rbac::DeviceGroup,
    ) -> Result<casefile_proto::rbac::DeviceGroup>;
    async fn delete_device_group(&self, tenant: &TenantId, id: i64) -> Result<bool>;
    /// User groups that see the tenant's ungrouped machines; empty: every user.
    async fn ungrouped_user_groups(&self, tenant: &TenantId) -> Result<Vec<String>>;
    async fn set_ungrouped_user_groups(&self, tenant: &TenantId, groups: &[String]) -> Result<()>;
}
