//! The actions area: machine actions, packages, cancellation, leased claims.

use async_trait::async_trait;
use casefile_proto::action::MachineAction;
use casefile_proto::time::Timestamp;
use uuid::Uuid;

use crate::*;

/// Machine actions, their packages and their cancellation.
///
/// Scope: every method reached from an analyst's or admin's request takes the
/// [`TenantId`] and matches it in SQL (`create_action`, `action`, `actions`, `package`,
/// `import_package`, `package_by_sha256`, `request_cancel`). The others are the agent's
/// and take the machine id of the agent's own credential instead (`transition`,
/// `complete_with_package`, `cancel_requests`, `confirm_cancel`, `fail_in_progress`,
/// `fail_in_progress_except`, `claim_leased`, `accept_action`, `next_lease_end`): a
/// machine belongs to one tenant, so they cannot reach another tenant's rows.
#[async_trait]
pub trait ActionStore: Send + Sync + 'static {
    /// Inserts a new `Pending` action; [`StoreError::ActiveRequestExists`] when the
    /// machine already has a live action of that type.
    /// `audit`, when given, is written in the same transaction: the change and its entry
    /// persist together or not at all (likewise on every method that takes one).
    async fn create_action(&self, tenant: &TenantId, action: &MachineAction, audit: Option<&AuditEntry>) -> Result<()>;
    async fn action(&self, tenant: &TenantId, id: Uuid) -> Result<Option<MachineAction>>;
    /// Filter and order use the MachineAction entity's wire names (`status`, `machineId`).
    async fn actions(&self, tenant: &TenantId, query: &ListQuery) -> Result<Listed<MachineAction>>;
    /// Applies `change` if the action belongs to `machine_id` and is in one of the
    /// statuses allowed to precede it. `None`: nothing changed.
    async fn transition(
        &self,
        id: Uuid,
        machine_id: &str,
        change: &Transition,
        audit: Option<&AuditEntry>,
    ) -> Result<Option<MachineAction>>;
    /// Records the verified package and marks the action `Succeeded`, in one transaction.
    async fn complete_with_package(
        &self,
        machine_id: &str,
        package: &PackageRecord,
        at: Timestamp,
        audit: Option<&AuditEntry>,
    ) -> Result<Option<MachineAction>>;
    /// The package of an action, including one that retention has deleted.
    async fn package(&self, tenant: &TenantId, action_id: Uuid) -> Result<Option<PackageRecord>>;
    /// Records an imported package and its (already `Succeeded`) action, in one transaction.
    async fn import_package(
        &self,
        tenant: &TenantId,
        action: &MachineAction,
        package: &PackageRecord,
        audit: Option<&AuditEntry>,
    ) -> Result<()>;
    /// A live (not deleted) package of `tenant` whose zip has this SHA-256 (hex, lower case).
    async fn package_by_sha256(&self, tenant: &TenantId, sha256: &str) -> Result<Option<PackageRecord>>;

    /// Cancels a `Pending` action at once; for an `InProgress` one, records the request
    /// so its agent is told to stop. `None`: no such action in the tenant.
    /// `audit` is written only when something changed.
    async fn request_cancel(
        &self,
        tenant: &TenantId,
        id: Uuid,
        request: &CancelRequest,
        audit: Option<&AuditEntry>,
    ) -> Result<Option<CancelOutcome>>;
    /// `InProgress` actions of the machine whose cancellation awaits the agent.
    async fn cancel_requests(&self, machine_id: &str) -> Result<Vec<Uuid>>;
    /// The agent stopped a collection it was asked to cancel: the action ends `Cancelled`.
    async fn confirm_cancel(
        &self,
        machine_id: &str,
        id: Uuid,
        at: Timestamp,
        audit: Option<&AuditEntry>,
    ) -> Result<Option<MachineAction>>;
    /// Fails every `InProgress` action of a machine (its agent restarted without them);
    /// returns their ids.
    async fn fail_in_progress(&self, machine_id: &str, change: &Transition) -> Result<Vec<Uuid>>;
    /// [`Store::fail_in_progress`] sparing `keep`: the actions whose results the restarted
    /// agent still holds and is delivering.
    async fn fail_in_progress_except(&self, machine_id: &str, keep: &[Uuid], change: &Transition) -> Result<Vec<Uuid>>;
    /// Hands out the machine's next action under a lease ending at `lease_until`: an
    /// `InProgress` action whose earlier claim was never accepted and whose lease ended by
    /// `at` (offered again, oldest claim first), else the oldest `Pending` one (now
    /// `InProgress`). Without a lease (an agent that does not confirm receipt) the claim
    /// counts as accepted at once. In one transaction.
    /// `audit` makes the claim's entry once the claimed action is known; it commits with the
    /// claim.
    async fn claim_leased(
        &self,
        machine_id: &str,
        at: Timestamp,
        lease_until: Option<Timestamp>,
        audit: Option<&(dyn for<'c> Fn(&'c Claim) -> AuditEntry + Sync)>,
    ) -> Result<Option<Claim>>;
    /// The agent confirms it received the action: its claim is no longer offered again.
    /// `false` when the action is not `InProgress` on that machine.
    async fn accept_action(
        &self,
        machine_id: &str,
        id: Uuid,
        at: Timestamp,
        audit: Option<&AuditEntry>,
    ) -> Result<bool>;
    /// When the machine's earliest unconfirmed claim can be offered again, if it has one: a
    /// waiting poll wakes then.
    async fn next_lease_end(&self, machine_id: &str) -> Result<Option<Timestamp>>;
    /// Records the progress the machine's agent reports for its running action (its
    /// `updated_date_time_utc` set by the caller). `false` when the action is not
    /// `InProgress` on that machine. Not audited: it changes no state of the action.
    async fn set_progress(
        &self,
        machine_id: &str,
        id: Uuid,
        progress: &casefile_proto::action::Progress,
    ) -> Result<bool>;
}

/// An action handed to an agent by [`Store::claim_leased`].
#[derive(Debug, Clone)]
pub struct Claim {
    pub action: MachineAction,
    /// How many times the action has been handed out, this time included: more than one
    /// means an earlier answer never reached the agent.
    pub offers: u32,
}
