//! The machines area.

use async_trait::async_trait;
use casefile_proto::time::Timestamp;

use crate::*;

/// Machines: enrollment, host facts, groups and tags.
///
/// Scope: reads and writes reached from an analyst's or admin's request take the
/// [`TenantId`] (`machine`, `machines`, `machines_named`, `create_enroll_challenge`,
/// `reset_machine_identity`, `set_machine_group`, `change_machine_tag`). The agent's own
/// calls take the machine id of its credential (`update_host_facts`, `touch_machine`).
/// Enrollment carries its tenant in the record (`enroll_machine`, `enroll_with_token`,
/// which also checks the token's tenant), and `machine_by_credential` is the lookup that
/// authenticates an agent: a credential hash is unique across tenants.
#[async_trait]
pub trait MachineStore: Send + Sync + 'static {
    /// Creates the machine or, for a host that enrolls again, replaces its credential
    /// and host facts while keeping `first_seen`.
    async fn enroll_machine(&self, machine: &MachineEnrollment) -> Result<MachineRecord>;
    async fn machine_by_credential(&self, hash: &str) -> Result<Option<MachineRecord>>;
    /// By id, or by computer name (case-insensitive). An id always wins over a name; a name
    /// that more than one of the tenant's machines reports is [`StoreError::AmbiguousName`].
    async fn machine(&self, tenant: &TenantId, id_or_name: &str) -> Result<Option<MachineRecord>>;
    /// Filter and order use the Machine entity's wire names (`computerDnsName`, `lastSeen`).
    async fn machines(&self, tenant: &TenantId, query: &ListQuery) -> Result<Listed<MachineRecord>>;
    /// The tenant's machines reporting `name` (case-insensitive), most recently seen first.
    async fn machines_named(&self, tenant: &TenantId, name: &str) -> Result<Vec<MachineRecord>>;
    /// `audit` (a rename's entry) is written in the same transaction.
    async fn update_host_facts(
        &self,
        machine_id: &str,
        facts: &HostFacts,
        at: Timestamp,
        audit: Option<&AuditEntry>,
    ) -> Result<()>;
    async fn touch_machine(&self, machine_id: &str, at: Timestamp, ip: Option<&str>) -> Result<()>;

    /// Enrolls by token in one transaction: takes one use of the token, then creates the
    /// machine, or re-keys an existing one only with a valid [`KeyProof`] (consuming its
    /// challenge) or after [`MachineStore::reset_machine_identity`]. Anything else changes nothing.
    async fn enroll_with_token(&self, enrollment: &TokenEnrollment) -> Result<EnrollOutcome>;
    /// Issues a challenge for the machine (replacing an outstanding one). `false`: no such
    /// machine in the tenant with a registered key.
    async fn create_enroll_challenge(&self, tenant: &TenantId, challenge: &EnrollChallengeRecord) -> Result<bool>;
    /// Voids the machine's credential and key; its next enrollment by token creates the
    /// identity afresh. `entry` is appended to the audit trail in the same transaction.
    /// `None`: no such machine in the tenant.
    async fn reset_machine_identity(
        &self,
        tenant: &TenantId,
        machine_id: &str,
        entry: &AuditEntry,
    ) -> Result<Option<MachineRecord>>;
    /// Puts the tenant's machine into `group` (`None`: ungrouped); a machine of another
    /// tenant is left alone.
    async fn set_machine_group(&self, tenant: &TenantId, machine_id: &str, group: Option<i64>) -> Result<()>;
    /// Adds `tag` (if no tag equal to it, case aside, is there) or removes it, in one
    /// statement so concurrent changes are not lost; the machine afterwards. `None`: no
    /// such machine in the tenant.
    async fn change_machine_tag(
        &self,
        tenant: &TenantId,
        machine_id: &str,
        tag: &str,
        add: bool,
    ) -> Result<Option<MachineRecord>>;
}
