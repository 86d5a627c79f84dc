//! Views of a store bound to one tenant or one machine: what request handlers use, so a
//! handler cannot write a row by id alone across tenants. [`TenantScope`] passes its
//! tenant to every call (the SQL matches it); [`MachineScope`] passes the authenticated
//! machine's id, so an agent only reaches its own actions.
//!
//! The views borrow the store; take them from any `dyn Store`: `store.tenant(&tid)`,
//! `store.machine_scope(&machine)`.

use casefile_proto::action::MachineAction;
use casefile_proto::rbac::{DeviceGroup, Role};
use casefile_proto::time::Timestamp;
use uuid::Uuid;

use crate::*;

impl dyn Store {
    /// This store as one tenant sees it.
    pub fn tenant<'a>(&'a self, tenant: &'a TenantId) -> TenantScope<'a> {
        TenantScope { store: self, tenant }
    }

    /// This store as the agent of `machine` sees it (its credential was checked).
    pub fn machine_scope<'a>(&'a self, machine: &'a MachineRecord) -> MachineScope<'a> {
        MachineScope { store: self, machine }
    }
}

/// The operations on one tenant's data, without a tenant parameter.
#[derive(Clone, Copy)]
pub struct TenantScope<'a> {
    store: &'a dyn Store,
    tenant: &'a TenantId,
}

impl<'a> TenantScope<'a> {
    pub fn id(&self) -> &'a TenantId {
        self.tenant
    }

    // Actions and packages.
    pub async fn create_action(&self, action: &MachineAction, audit: Option<&AuditEntry>) -> Result<()> {
        self.store.create_action(self.tenant, action, audit).await
    }
    pub async fn action(&self, id: Uuid) -> Result<Option<MachineAction>> {
        self.store.action(self.tenant, id).await
    }
    pub async fn actions(&self, query: &ListQuery) -> Result<Listed<MachineAction>> {
        self.store.actions(self.tenant, query).await
    }
    pub async fn request_cancel(
        &self,
        id: Uuid,
        request: &CancelRequest,
        audit: Option<&AuditEntry>,
    ) -> Result<Option<CancelOutcome>> {
        self.store.request_cancel(self.tenant, id, request, audit).await
    }
    pub async fn package(&self, action_id: Uuid) -> Result<Option<PackageRecord>> {
        self.store.package(self.tenant, action_id).await
    }
    pub async fn package_by_sha256(&self, sha256: &str) -> Result<Option<PackageRecord>> {
        self.store.package_by_sha256(self.tenant, sha256).await
    }
    pub async fn import_package(
        &self,
        action: &MachineAction,
        package: &PackageRecord,
        audit: Option<&AuditEntry>,
    ) -> Result<()> {
        if package.tenant_id != *self.tenant {
            return Err(StoreError::Query(format!(
                "a package of tenant {} imported through tenant {}'s view",
                package.tenant_id, self.tenant
            )));
        }
        self.store.import_package(self.tenant, action, package, audit).await
    }

    // Machines.
    pub async fn machine(&self, id_or_name: &str) -> Result<Option<MachineRecord>> {
        self.store.machine(self.tenant, id_or_name).await
    }
    pub async fn machines(&self, query: &ListQuery) -> Result<Listed<MachineRecord>> {
        self.store.machines(self.tenant, query).await
    }
    pub async fn machines_named(&self, name: &str) -> Result<Vec<MachineRecord>> {
        self.store.machines_named(self.tenant, name).await
    }
    pub async fn set_machine_group(&self, machine_id: &str, group: Option<i64>) -> Result<()> {
        self.store.set_machine_group(self.tenant, machine_id, group).await
    }
    pub async fn change_machine_tag(&self, machine_id: &str, tag: &str, add: bool) -> Result<Option<MachineRecord>> {
        self.store.change_machine_tag(self.tenant, machine_id, tag, add).await
    }
    pub async fn create_enroll_challenge(&self, challenge: &EnrollChallengeRecord) -> Result<bool> {
        self.store.create_enroll_challenge(self.tenant, challenge).await
    }
    pub async fn reset_machine_identity(&self, machine_id: &str, entry: &AuditEntry) -> Result<Option<MachineRecord>> {
        self.store.reset_machine_identity(self.tenant, machine_id, entry).await
    }

    // Access.
    pub async fn roles(&self) -> Result<Vec<Role>> {
        self.store.roles(self.tenant).await
    }
    pub async fn put_role(&self, role: &Role) -> Result<()> {
        self.store.put_role(self.tenant, role).await
    }
    pub async fn delete_role(&self, name: &str) -> Result<bool> {
        self.store.delete_role(self.tenant, name).await
    }
    pub async fn device_groups(&self) -> Result<Vec<DeviceGroup>> {
        self.store.device_groups(self.tenant).await
    }
    pub async fn create_device_group(&self, group: &DeviceGroup) -> Result<DeviceGroup> {
        self.store.create_device_group(self.tenant, group).await
    }
    pub async fn delete_device_group(&self, id: i64) -> Result<bool> {
        self.store.delete_device_group(self.tenant, id).await
    }
    pub async fn ungrouped_user_groups(&self) -> Result<Vec<String>> {
        self.store.ungrouped_user_groups(self.tenant).await
    }
    pub async fn set_ungrouped_user_groups(&self, groups: &[String]) -> Result<()> {
        self.store.set_ungrouped_user_groups(self.tenant, groups).await
    }

    // Local users.
    pub async fn user_by_name(&self, name: &str) -> Result<Option<UserRecord>> {
        self.store.user_by_name(self.tenant, name).await
    }
    pub async fn users(&self) -> Result<Vec<UserRecord>> {
        self.store.users(self.tenant).await
    }
    pub async fn change_user(&self, name: &str, change: &UserChange) -> Result<Option<UserRecord>> {
        self.store.change_user(self.tenant, name, change).await
    }

    // Applications and enrollment tokens.
    pub async fn applications(&self) -> Result<Vec<ApplicationRecord>> {
        self.store.applications(self.tenant).await
    }
    pub async fn application(&self, client_id: Uuid) -> Result<Option<ApplicationRecord>> {
        self.store.application(self.tenant, client_id).await
    }
    pub async fn update_application_roles(
        &self,
        client_id: Uuid,
        roles: &[String],
    ) -> Result<Option<ApplicationRecord>> {
        self.store.update_application_roles(self.tenant, client_id, roles).await
    }
    pub async fn set_application_disabled(
        &self,
        client_id: Uuid,
        disabled_at: Option<Timestamp>,
    ) -> Result<Option<ApplicationRecord>> {
        self.store.set_application_disabled(self.tenant, client_id, disabled_at).await
    }
    pub async fn rotate_application_secret(
        &self,
        client_id: Uuid,
        secret_hash: &str,
        at: Timestamp,
    ) -> Result<Option<ApplicationRecord>> {
        self.store.rotate_application_secret(self.tenant, client_id, secret_hash, at).await
    }
    pub async fn enrollment_tokens(&self) -> Result<Vec<EnrollmentTokenRecord>> {
        self.store.enrollment_tokens(self.tenant).await
    }
    pub async fn revoke_enrollment_token(&self, id: Uuid, at: Timestamp) -> Result<Option<EnrollmentTokenRecord>> {
        self.store.revoke_enrollment_token(self.tenant, id, at).await
    }
}

/// The operations an authenticated agent performs, bound to its machine.
#[derive(Clone, Copy)]
pub struct MachineScope<'a> {
    store: &'a dyn Store,
    machine: &'a MachineRecord,
}

impl<'a> MachineScope<'a> {
    pub fn machine(&self) -> &'a MachineRecord {
        self.machine
    }

    fn id(&self) -> &'a str {
        &self.machine.id
    }

    /// One of this machine's actions; another machine's (even of the same tenant) is
    /// `None`.
    pub async fn action(&self, id: Uuid) -> Result<Option<MachineAction>> {
        let action = self.store.action(&self.machine.tenant_id, id).await?;
        Ok(action.filter(|a| a.machine_id == self.machine.id))
    }
    pub async fn touch(&self, at: Timestamp, ip: Option<&str>) -> Result<()> {
        self.store.touch_machine(self.id(), at, ip).await
    }
    pub async fn update_host_facts(&self, facts: &HostFacts, at: Timestamp, audit: Option<&AuditEntry>) -> Result<()> {
        self.store.update_host_facts(self.id(), facts, at, audit).await
    }
    pub async fn transition(
        &self,
        id: Uuid,
        change: &Transition,
        audit: Option<&AuditEntry>,
    ) -> Result<Option<MachineAction>> {
        self.store.transition(id, self.id(), change, audit).await
    }
    pub async fn complete_with_package(
        &self,
        package: &PackageRecord,
        at: Timestamp,
        audit: Option<&AuditEntry>,
    ) -> Result<Option<MachineAction>> {
        if package.tenant_id != self.machine.tenant_id {
            return Err(StoreError::Query(format!(
                "a package of tenant {} recorded for a machine of tenant {}",
                package.tenant_id, self.machine.tenant_id
            )));
        }
        self.store.complete_with_package(self.id(), package, at, audit).await
    }
    pub async fn cancel_requests(&self) -> Result<Vec<Uuid>> {
        self.store.cancel_requests(self.id()).await
    }
    pub async fn confirm_cancel(
        &self,
        id: Uuid,
        at: Timestamp,
        audit: Option<&AuditEntry>,
    ) -> Result<Option<MachineAction>> {
        self.store.confirm_cancel(self.id(), id, at, audit).await
    }
    pub async fn fail_in_progress(&self, change: &Transition) -> Result<Vec<Uuid>> {
        self.store.fail_in_progress(self.id(), change).await
    }
    pub async fn fail_in_progress_except(&self, keep: &[Uuid], change: &Transition) -> Result<Vec<Uuid>> {
        self.store.fail_in_progress_except(self.id(), keep, change).await
    }
    pub async fn claim_leased(
        &self,
        at: Timestamp,
        lease_until: Option<Timestamp>,
        audit: Option<&(dyn for<'c> Fn(&'c Claim) -> AuditEntry + Sync)>,
    ) -> Result<Option<Claim>> {
        self.store.claim_leased(self.id(), at, lease_until, audit).await
    }
    pub async fn accept_action(&self, id: Uuid, at: Timestamp, audit: Option<&AuditEntry>) -> Result<bool> {
        self.store.accept_action(self.id(), id, at, audit).await
    }
    pub async fn next_lease_end(&self) -> Result<Option<Timestamp>> {
        self.store.next_lease_end(self.id()).await
    }
    pub async fn set_progress(&self, id: Uuid, progress: &casefile_proto::action::Progress) -> Result<bool> {
        self.store.set_progress(self.id(), id, progress).await
    }
}
