//! casefile's persistence. The server talks to a [`Store`]; each database has its own
//! implementation with its own migrations (SQLite here; PostgreSQL slots in beside it),
//! so no SQL dialect leaks into the server.

pub mod cluster;
pub mod query;
mod records;
pub mod sqlite;

use async_trait::async_trait;
use casefile_proto::action::MachineAction;
use casefile_proto::time::Timestamp;
use uuid::Uuid;

pub use cluster::{ClusterEvent, ClusterStore, LeaderGuard, LocalCluster, PgCluster, WindowCount};
pub use query::{ListQuery, Listed, Visibility};
pub use records::*;
pub use sqlite::{Schema, SqliteStore};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A collection is already `Pending` or `InProgress` on that machine.
    #[error("an action of this type is already pending or in progress on the machine")]
    ActiveRequestExists,
    /// A name that must be unique is taken (an application name within its tenant).
    #[error("{0} already exists")]
    Duplicate(String),
    /// The disk (or the database's size limit) is full: the write did not happen.
    #[error("storage is full: {0}")]
    Full(String),
    /// A computer name that several machines of the tenant report: names are reported
    /// facts, not identities (issue 9 item 2).
    #[error("the name '{name}' matches several machines: {}", candidates.join(", "))]
    AmbiguousName { name: String, candidates: Vec<String> },
    #[error("database error: {0}")]
    Database(sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The schema lags this binary's: `casefile migrate` brings it up to date.
    #[error(
        "the database schema (version {database}) is older than this casefile's (version {binary}): \
         run `casefile migrate` (it takes a backup first)"
    )]
    SchemaOlder { database: i64, binary: i64 },
    /// The schema is ahead of this binary's: it was migrated by a newer casefile.
    #[error(
        "the database schema (version {database}) is newer than this casefile's (version {binary}): \
         this binary is older than the database; run the newer casefile (or restore a backup taken before the upgrade)"
    )]
    SchemaNewer { database: i64, binary: i64 },
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// A query names a property the store cannot filter or sort by: a bug in the
    /// caller's property table, never user input (the API layer checks that first).
    #[error("unsupported query: {0}")]
    Query(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        // SQLITE_FULL (13) also stands for a write that met ENOSPC; 53100 is PostgreSQL's
        // disk_full. Both mean "nothing was written", which callers answer differently
        // from other database failures.
        if let sqlx::Error::Database(db) = &e
            && matches!(db.code().as_deref(), Some("13" | "53100"))
        {
            return Self::Full(db.message().to_owned());
        }
        Self::Database(e)
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Periodic upkeep (planner statistics); cheap when nothing changed.
    async fn optimize(&self) -> Result<()>;

    /// Closes every connection and waits until they are closed. Later calls fail.
    async fn close(&self) {}
    /// A consistent copy of the whole database in a new file at `dest`, taken while
    /// others keep writing (`casefile backup`).
    async fn backup_into(&self, dest: &std::path::Path) -> Result<()>;

    // Operations (`/readyz`, `/metrics`).
    /// Commits a write that changes nothing, proving the database takes writes now (a full
    /// disk answers [`StoreError::Full`]).
    async fn probe_write(&self) -> Result<()>;
    /// How many actions there are of each type and status, across tenants:
    /// `(type, status, count)`.
    async fn action_counts(&self) -> Result<Vec<(String, String, u64)>>;
    /// How many machines, across tenants, called the server at or after `since`.
    async fn machines_seen_since(&self, since: Timestamp) -> Result<u64>;

    // Signing keys.
    async fn signing_keys(&self, purpose: &str) -> Result<Vec<SigningKeyRecord>>;
    async fn insert_signing_key(&self, key: &SigningKeyRecord) -> Result<()>;
    /// Marks a key retired from `at` on: it neither signs nor verifies any more.
    /// `false` when no such key was in service.
    async fn retire_signing_key(&self, kid: &str, at: Timestamp) -> Result<bool>;

    // Applications (clients of the token endpoint; secrets stored as argon2 hashes).
    /// Inserts a new application; [`StoreError::Duplicate`] when its tenant already has one
    /// of that name (letter case aside).
    async fn create_application(&self, app: &ApplicationRecord) -> Result<()>;
    async fn application(&self, tenant: &str, client_id: Uuid) -> Result<Option<ApplicationRecord>>;
    /// By client id alone (client ids are unique across tenants): the token endpoint
    /// compares the tenant itself.
    async fn application_by_client_id(&self, client_id: Uuid) -> Result<Option<ApplicationRecord>>;
    /// The tenant's applications, by name.
    async fn applications(&self, tenant: &str) -> Result<Vec<ApplicationRecord>>;
    /// Replaces the application's roles. `None`: no such application in the tenant.
    async fn update_application_roles(
        &self,
        tenant: &str,
        client_id: Uuid,
        roles: &[String],
    ) -> Result<Option<ApplicationRecord>>;
    /// Disables the application from `Some(at)` on (an already disabled one keeps its
    /// first `disabled_at`), or enables it with `None`. `None`: no such application.
    async fn set_application_disabled(
        &self,
        tenant: &str,
        client_id: Uuid,
        disabled_at: Option<Timestamp>,
    ) -> Result<Option<ApplicationRecord>>;
    /// Replaces the secret's hash; the old secret stops working at once. `None`: no such
    /// application.
    async fn rotate_application_secret(
        &self,
        tenant: &str,
        client_id: Uuid,
        secret_hash: &str,
        at: Timestamp,
    ) -> Result<Option<ApplicationRecord>>;

    // Enrollment tokens (stored as hashes).
    async fn insert_enrollment_token(&self, token: &EnrollmentTokenRecord) -> Result<()>;
    async fn enrollment_token_by_hash(&self, hash: &str) -> Result<Option<EnrollmentTokenRecord>>;

    // Machines.
    /// Creates the machine or, for a host that enrolls again, replaces its credential
    /// and host facts while keeping `first_seen`.
    async fn enroll_machine(&self, machine: &MachineEnrollment) -> Result<MachineRecord>;
    async fn machine_by_credential(&self, hash: &str) -> Result<Option<MachineRecord>>;
    /// By id, or by computer name (case-insensitive). An id always wins over a name; a name
    /// that more than one of the tenant's machines reports is [`StoreError::AmbiguousName`].
    async fn machine(&self, tenant: &str, id_or_name: &str) -> Result<Option<MachineRecord>>;
    /// Filter and order use the Machine entity's wire names (`computerDnsName`, `lastSeen`).
    async fn machines(&self, tenant: &str, query: &ListQuery) -> Result<Listed<MachineRecord>>;
    /// `audit` (a rename's entry) is written in the same transaction.
    async fn update_host_facts(
        &self,
        machine_id: &str,
        facts: &HostFacts,
        at: Timestamp,
        audit: Option<&AuditEntry>,
    ) -> Result<()>;
    async fn touch_machine(&self, machine_id: &str, at: Timestamp, ip: Option<&str>) -> Result<()>;

    // Machine actions.
    /// Inserts a new `Pending` action; [`StoreError::ActiveRequestExists`] when the
    /// machine already has a live action of that type.
    /// `audit`, when given, is written in the same transaction: the change and its entry
    /// persist together or not at all (likewise on every method that takes one).
    async fn create_action(&self, tenant: &str, action: &MachineAction, audit: Option<&AuditEntry>) -> Result<()>;
    async fn action(&self, tenant: &str, id: Uuid) -> Result<Option<MachineAction>>;
    /// Filter and order use the MachineAction entity's wire names (`status`, `machineId`).
    async fn actions(&self, tenant: &str, query: &ListQuery) -> Result<Listed<MachineAction>>;
    /// Applies `change` if the action is in one of the statuses allowed to precede it
    /// (and, with `machine_id`, belongs to that machine). `None`: nothing changed.
    async fn transition(
        &self,
        id: Uuid,
        machine_id: Option<&str>,
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
    async fn package(&self, tenant: &str, action_id: Uuid) -> Result<Option<PackageRecord>>;
    /// Records an imported package and its (already `Succeeded`) action, in one transaction.
    async fn import_package(
        &self,
        tenant: &str,
        action: &MachineAction,
        package: &PackageRecord,
        audit: Option<&AuditEntry>,
    ) -> Result<()>;
    /// Packages stored before `stored_before` and not yet deleted, oldest first.
    async fn expired_packages(&self, stored_before: Timestamp, limit: u32) -> Result<Vec<PackageRecord>>;
    /// Marks a package deleted; downloads and links refuse it from then on.
    async fn mark_package_deleted(&self, action_id: Uuid, at: Timestamp) -> Result<()>;

    // Cancellation.
    /// Cancels a `Pending` action at once; for an `InProgress` one, records the request
    /// so its agent is told to stop. `None`: no such action in the tenant.
    /// `audit` is written only when something changed.
    async fn request_cancel(
        &self,
        tenant: &str,
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

    // Audit trail (append-only).
    async fn append_audit(&self, entry: &AuditEntry) -> Result<i64>;
    /// Entries matching `filter`, oldest first.
    async fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>>;

    // Roles and device groups (delegated users).
    async fn roles(&self, tenant: &str) -> Result<Vec<casefile_proto::rbac::Role>>;
    /// Creates or replaces the role of that name.
    async fn put_role(&self, tenant: &str, role: &casefile_proto::rbac::Role) -> Result<()>;
    async fn delete_role(&self, tenant: &str, name: &str) -> Result<bool>;
    /// The tenant's groups, best rank first.
    async fn device_groups(&self, tenant: &str) -> Result<Vec<casefile_proto::rbac::DeviceGroup>>;
    /// Creates a group (its `id` is assigned); [`StoreError::Duplicate`] for a taken name.
    async fn create_device_group(
        &self,
        tenant: &str,
        group: &casefile_proto::rbac::DeviceGroup,
    ) -> Result<casefile_proto::rbac::DeviceGroup>;
    async fn delete_device_group(&self, tenant: &str, id: i64) -> Result<bool>;
    async fn set_machine_group(&self, machine_id: &str, group: Option<i64>) -> Result<()>;
    /// User groups that see the tenant's ungrouped machines; empty: every user.
    async fn ungrouped_user_groups(&self, tenant: &str) -> Result<Vec<String>>;
    async fn set_ungrouped_user_groups(&self, tenant: &str, groups: &[String]) -> Result<()>;
    /// Adds `tag` (if no tag equal to it, case aside, is there) or removes it, in one
    /// statement so concurrent changes are not lost; the machine afterwards.
    async fn change_machine_tag(&self, machine_id: &str, tag: &str, add: bool) -> Result<Option<MachineRecord>>;

    // Enrollment (issue 9 items 1 and 2), added at the end.
    /// Enrolls by token in one transaction: takes one use of the token, then creates the
    /// machine, or re-keys an existing one only with a valid [`KeyProof`] (consuming its
    /// challenge) or after [`Store::reset_machine_identity`]. Anything else changes nothing.
    async fn enroll_with_token(&self, enrollment: &TokenEnrollment) -> Result<EnrollOutcome>;
    /// Issues a challenge for the machine (replacing an outstanding one). `false`: no such
    /// machine in the tenant with a registered key.
    async fn create_enroll_challenge(&self, tenant: &str, challenge: &EnrollChallengeRecord) -> Result<bool>;
    /// Voids the machine's credential and key; its next enrollment by token creates the
    /// identity afresh. `entry` is appended to the audit trail in the same transaction.
    /// `None`: no such machine in the tenant.
    async fn reset_machine_identity(
        &self,
        tenant: &str,
        machine_id: &str,
        entry: &AuditEntry,
    ) -> Result<Option<MachineRecord>>;
    /// The tenant's enrollment tokens, newest first.
    async fn enrollment_tokens(&self, tenant: &str) -> Result<Vec<EnrollmentTokenRecord>>;
    /// Revokes the token (a revoked one keeps its first `revoked_at`). `None`: no such token.
    async fn revoke_enrollment_token(
        &self,
        tenant: &str,
        id: Uuid,
        at: Timestamp,
    ) -> Result<Option<EnrollmentTokenRecord>>;
    /// The tenant's machines reporting `name` (case-insensitive), most recently seen first.
    async fn machines_named(&self, tenant: &str, name: &str) -> Result<Vec<MachineRecord>>;
    // Leased claims (issue 9 item 11) and restarts that keep held results (item 10).
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
    /// [`Store::fail_in_progress`] sparing `keep`: the actions whose results the restarted
    /// agent still holds and is delivering.
    async fn fail_in_progress_except(&self, machine_id: &str, keep: &[Uuid], change: &Transition) -> Result<Vec<Uuid>>;
    /// When the machine's earliest unconfirmed claim can be offered again, if it has one: a
    /// waiting poll wakes then.
    async fn next_lease_end(&self, machine_id: &str) -> Result<Option<Timestamp>>;
    /// A live (not deleted) package of `tenant` whose zip has this SHA-256 (hex, lower case).
    async fn package_by_sha256(&self, tenant: &str, sha256: &str) -> Result<Option<PackageRecord>>;
}

/// An action handed to an agent by [`Store::claim_leased`].
#[derive(Debug, Clone)]
pub struct Claim {
    pub action: MachineAction,
    /// How many times the action has been handed out, this time included: more than one
    /// means an earlier answer never reached the agent.
    pub offers: u32,
}
