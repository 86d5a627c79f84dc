//! The server database: PostgreSQL, for several replicas sharing one store (issue 11).
//!
//! Same semantics as the SQLite backend, checked by the same conformance suite. What
//! differs, and why:
//! * SQLite has one writer at a time; here writers run concurrently under READ COMMITTED.
//!   Guarded updates (`UPDATE … WHERE status IN (…) RETURNING`) stay atomic (a row changed
//!   meanwhile is re-checked against the `WHERE` before it is written); claims pick their
//!   row with `FOR UPDATE SKIP LOCKED`, so two servers never hand out the same action; an
//!   enrollment inserts with `ON CONFLICT DO NOTHING` and locks an existing machine's row
//!   before deciding.
//! * `COLLATE NOCASE` becomes `lower(…)`, with indexes on the same expressions.
//! * A backup is `pg_dump`'s job ([`Store::backup_into`] says so).

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use casefile_proto::action::MachineAction;
use casefile_proto::time::Timestamp;
use sqlx::{Postgres, QueryBuilder, Row};
use uuid::Uuid;

use crate::*;

mod access;
mod actions;
mod audit;
mod filter;
mod identity;
mod machines;
mod maintenance;
mod rows;

/// This binary's PostgreSQL schema: the embedded migrations.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// A PostgreSQL database.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: sqlx::PgPool,
}

/// Connections per store (per replica): PostgreSQL's default `max_connections` is 100.
const MAX_CONNECTIONS: u32 = 16;

impl PgStore {
    /// Connects and applies pending migrations (the demo and tests; a service uses
    /// [`PgStore::open_checked`]).
    pub async fn open(url: &str) -> Result<Self> {
        let store = Self::connect(url).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Connects without touching the schema, then refuses one older or newer than this
    /// binary's. A database without any table is migrated: nothing in it can be harmed.
    pub async fn open_checked(url: &str) -> Result<Self> {
        let store = Self::connect(url).await?;
        match store.schema().await? {
            Schema::Current => {}
            Schema::Empty => {
                store.migrate().await?;
            }
            Schema::Older { database, binary, .. } => return Err(StoreError::SchemaOlder { database, binary }),
            Schema::Newer { database, binary } => return Err(StoreError::SchemaNewer { database, binary }),
        }
        Ok(store)
    }

    /// Connects without touching the schema (`casefile migrate` looks first).
    pub async fn open_unmigrated(url: &str) -> Result<Self> {
        Self::connect(url).await
    }

    /// The connection pool, for what lives beside the store on the same database
    /// (`LISTEN/NOTIFY`, advisory locks, shared rate limits).
    pub fn pool(&self) -> &sqlx::PgPool {
        &self.pool
    }

    /// Where the database stands against this binary's migrations.
    pub async fn schema(&self) -> Result<Schema> {
        let binary: Vec<i64> =
            MIGRATOR.iter().filter(|m| !m.migration_type.is_down_migration()).map(|m| m.version).collect();
        let newest = binary.iter().copied().max().unwrap_or(0);
        // One look at the catalog: a migrator running meanwhile creates its history table
        // (committed on its own) before any other, so no snapshot shows tables without it.
        let (tracked, tables): (i64, i64) = sqlx::query_as(
            "SELECT COUNT(*) FILTER (WHERE c.relname = '_sqlx_migrations'), COUNT(*) \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p', 'v', 'm', 'S')",
        )
        .fetch_one(&self.pool)
        .await?;
        if tracked == 0 {
            return match tables {
                0 => Ok(Schema::Empty),
                _ => Err(StoreError::Corrupt("the database has tables but no migration history: not casefile's".into())),
            };
        }
        let applied: Vec<i64> =
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
                .fetch_all(&self.pool)
                .await?;
        let database = applied.iter().copied().max().unwrap_or(0);
        if let Some(unknown) = applied.iter().copied().find(|v| !binary.contains(v)) {
            return Ok(Schema::Newer { database: database.max(unknown), binary: newest });
        }
        let pending: Vec<i64> = binary.iter().copied().filter(|v| !applied.contains(v)).collect();
        match pending.is_empty() {
            true => Ok(Schema::Current),
            false if applied.is_empty() => Ok(Schema::Empty),
            false => Ok(Schema::Older { database, binary: newest, pending }),
        }
    }

    /// Applies pending migrations; returns the versions applied. sqlx's migrator holds a
    /// PostgreSQL advisory lock while it runs, so servers or `casefile migrate` starting
    /// together apply each migration once (the others find it applied).
    pub async fn migrate(&self) -> Result<Vec<i64>> {
        let pending = match self.schema().await? {
            Schema::Current => return Ok(Vec::new()),
            Schema::Newer { database, binary } => return Err(StoreError::SchemaNewer { database, binary }),
            Schema::Older { pending, .. } => pending,
            Schema::Empty => MIGRATOR.iter().map(|m| m.version).collect(),
        };
        MIGRATOR.run(&self.pool).await?;
        Ok(pending)
    }

    async fn connect(url: &str) -> Result<Self> {
        let options: PgConnectOptions = url.parse()?;
        let options = options.application_name("casefile");
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(Duration::from_secs(30))
            .idle_timeout(Duration::from_secs(300))
            // A connection that sqlx still counts inside a transaction (a COMMIT that
            // failed) is closed rather than handed to the next caller.
            .after_release(|conn, _| Box::pin(async move { Ok(!sqlx::Connection::is_in_transaction(conn)) }))
            .connect_with(options)
            .await?;
        Ok(Self { pool })
    }

    /// A transaction. READ COMMITTED: every write in it is a guarded statement or takes
    /// its row locks first, so nothing it decided on can change under it.
    async fn write(&self) -> Result<sqlx::Transaction<'static, Postgres>> {
        Ok(self.pool.begin().await?)
    }

    /// One page of a tenant's rows of `table`, one row more than asked to learn whether
    /// more remain, and the count of all matches when asked.
    async fn list(
        &self,
        table: &str,
        select: &str,
        columns: &[filter::Column],
        default_order: &str,
        tenant: &str,
        query: &ListQuery,
    ) -> Result<Listed<PgRow>> {
        let mut q = QueryBuilder::<Postgres>::new(format!("SELECT {select} FROM {table} WHERE tenant_id = "));
        q.push_bind(tenant.to_owned());
        if let Some(f) = &query.filter {
            filter::push_filter(&mut q, columns, f)?;
        }
        if let Some(visible) = &query.visible {
            push_visibility(&mut q, table, tenant, visible);
        }
        filter::push_order(&mut q, columns, &query.order_by, default_order)?;
        q.push(" LIMIT ").push_bind(query.top.saturating_add(1).min(i64::MAX as u64) as i64);
        q.push(" OFFSET ").push_bind(query.skip.min(i64::MAX as u64) as i64);
        let mut items = q.build().fetch_all(&self.pool).await?;
        // `$top=0` asks for no rows, not for an endless chain of empty pages.
        let more = query.top > 0 && items.len() as u64 > query.top;
        items.truncate(query.top as usize);
        let total = if query.count {
            let mut q = QueryBuilder::<Postgres>::new(format!("SELECT COUNT(*) FROM {table} WHERE tenant_id = "));
            q.push_bind(tenant.to_owned());
            if let Some(f) = &query.filter {
                filter::push_filter(&mut q, columns, f)?;
            }
            if let Some(visible) = &query.visible {
                push_visibility(&mut q, table, tenant, visible);
            }
            let n: i64 = q.build().fetch_one(&self.pool).await?.try_get(0)?;
            Some(n as u64)
        } else {
            None
        };
        Ok(Listed { items, total, more })
    }
}

/// ` AND <the row's machine is in a visible group>`: machines by their own group, actions
/// by their machine's.
fn push_visibility(q: &mut QueryBuilder<Postgres>, table: &str, tenant: &str, visible: &Visibility) {
    let machine_filter = |q: &mut QueryBuilder<Postgres>| {
        q.push("(rbac_group_id = ANY(").push_bind(visible.groups.clone()).push(")");
        if visible.ungrouped {
            q.push(" OR rbac_group_id IS NULL");
        }
        q.push(")");
    };
    if table == "machines" {
        q.push(" AND ");
        machine_filter(q);
    } else {
        q.push(" AND machine_id IN (SELECT id FROM machines WHERE tenant_id = ").push_bind(tenant.to_owned());
        q.push(" AND ");
        machine_filter(q);
        q.push(")");
    }
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

impl<T> Listed<T> {
    fn try_map_pg<U>(self, f: impl Fn(&T) -> Result<U>) -> Result<Listed<U>> {
        Ok(Listed { items: self.items.iter().map(f).collect::<Result<_>>()?, total: self.total, more: self.more })
    }
}

// Until the store is split by area: the trait delegates to the area files.
#[async_trait::async_trait]
impl Store for PgStore {
    async fn optimize(&self) -> Result<()> { PgStore::optimize(self).await }
    async fn close(&self) { PgStore::close(self).await }
    async fn backup_into(&self, dest: &std::path::Path) -> Result<()> { PgStore::backup_into(self, dest).await }
    async fn probe_write(&self) -> Result<()> { PgStore::probe_write(self).await }
    async fn action_counts(&self) -> Result<Vec<(String, String, u64)>> { PgStore::action_counts(self).await }
    async fn machines_seen_since(&self, since: Timestamp) -> Result<u64> { PgStore::machines_seen_since(self, since).await }
    async fn signing_keys(&self, purpose: &str) -> Result<Vec<SigningKeyRecord>> { PgStore::signing_keys(self, purpose).await }
    async fn insert_signing_key(&self, key: &SigningKeyRecord) -> Result<()> { PgStore::insert_signing_key(self, key).await }
    async fn retire_signing_key(&self, kid: &str, at: Timestamp) -> Result<bool> { PgStore::retire_signing_key(self, kid, at).await }
    async fn create_application(&self, app: &ApplicationRecord) -> Result<()> { PgStore::create_application(self, app).await }
    async fn application(&self, tenant: &str, client_id: Uuid) -> Result<Option<ApplicationRecord>> { PgStore::application(self, tenant, client_id).await }
    async fn application_by_client_id(&self, client_id: Uuid) -> Result<Option<ApplicationRecord>> { PgStore::application_by_client_id(self, client_id).await }
    async fn applications(&self, tenant: &str) -> Result<Vec<ApplicationRecord>> { PgStore::applications(self, tenant).await }
    async fn update_application_roles(&self, tenant: &str, client_id: Uuid, roles: &[String],) -> Result<Option<ApplicationRecord>> { PgStore::update_application_roles(self, tenant, client_id, roles).await }
    async fn set_application_disabled(&self, tenant: &str, client_id: Uuid, disabled_at: Option<Timestamp>,) -> Result<Option<ApplicationRecord>> { PgStore::set_application_disabled(self, tenant, client_id, disabled_at).await }
    async fn rotate_application_secret(&self, tenant: &str, client_id: Uuid, secret_hash: &str, at: Timestamp,) -> Result<Option<ApplicationRecord>> { PgStore::rotate_application_secret(self, tenant, client_id, secret_hash, at).await }
    async fn insert_enrollment_token(&self, token: &EnrollmentTokenRecord) -> Result<()> { PgStore::insert_enrollment_token(self, token).await }
    async fn enrollment_token_by_hash(&self, hash: &str) -> Result<Option<EnrollmentTokenRecord>> { PgStore::enrollment_token_by_hash(self, hash).await }
    async fn enroll_machine(&self, machine: &MachineEnrollment) -> Result<MachineRecord> { PgStore::enroll_machine(self, machine).await }
    async fn machine_by_credential(&self, hash: &str) -> Result<Option<MachineRecord>> { PgStore::machine_by_credential(self, hash).await }
    async fn machine(&self, tenant: &str, id_or_name: &str) -> Result<Option<MachineRecord>> { PgStore::machine(self, tenant, id_or_name).await }
    async fn machines(&self, tenant: &str, query: &ListQuery) -> Result<Listed<MachineRecord>> { PgStore::machines(self, tenant, query).await }
    async fn update_host_facts(&self, machine_id: &str, facts: &HostFacts, at: Timestamp, audit: Option<&AuditEntry>,) -> Result<()> { PgStore::update_host_facts(self, machine_id, facts, at, audit).await }
    async fn touch_machine(&self, machine_id: &str, at: Timestamp, ip: Option<&str>) -> Result<()> { PgStore::touch_machine(self, machine_id, at, ip).await }
    async fn create_action(&self, tenant: &str, action: &MachineAction, audit: Option<&AuditEntry>) -> Result<()> { PgStore::create_action(self, tenant, action, audit).await }
    async fn action(&self, tenant: &str, id: Uuid) -> Result<Option<MachineAction>> { PgStore::action(self, tenant, id).await }
    async fn actions(&self, tenant: &str, query: &ListQuery) -> Result<Listed<MachineAction>> { PgStore::actions(self, tenant, query).await }
    async fn transition(&self, id: Uuid, machine_id: Option<&str>, change: &Transition, audit: Option<&AuditEntry>,) -> Result<Option<MachineAction>> { PgStore::transition(self, id, machine_id, change, audit).await }
    async fn complete_with_package(&self, machine_id: &str, package: &PackageRecord, at: Timestamp, audit: Option<&AuditEntry>,) -> Result<Option<MachineAction>> { PgStore::complete_with_package(self, machine_id, package, at, audit).await }
    async fn package(&self, tenant: &str, action_id: Uuid) -> Result<Option<PackageRecord>> { PgStore::package(self, tenant, action_id).await }
    async fn import_package(&self, tenant: &str, action: &MachineAction, package: &PackageRecord, audit: Option<&AuditEntry>,) -> Result<()> { PgStore::import_package(self, tenant, action, package, audit).await }
    async fn expired_packages(&self, stored_before: Timestamp, limit: u32) -> Result<Vec<PackageRecord>> { PgStore::expired_packages(self, stored_before, limit).await }
    async fn mark_package_deleted(&self, action_id: Uuid, at: Timestamp) -> Result<()> { PgStore::mark_package_deleted(self, action_id, at).await }
    async fn request_cancel(&self, tenant: &str, id: Uuid, request: &CancelRequest, audit: Option<&AuditEntry>,) -> Result<Option<CancelOutcome>> { PgStore::request_cancel(self, tenant, id, request, audit).await }
    async fn cancel_requests(&self, machine_id: &str) -> Result<Vec<Uuid>> { PgStore::cancel_requests(self, machine_id).await }
    async fn confirm_cancel(&self, machine_id: &str, id: Uuid, at: Timestamp, audit: Option<&AuditEntry>,) -> Result<Option<MachineAction>> { PgStore::confirm_cancel(self, machine_id, id, at, audit).await }
    async fn fail_in_progress(&self, machine_id: &str, change: &Transition) -> Result<Vec<Uuid>> { PgStore::fail_in_progress(self, machine_id, change).await }
    async fn time_out_pending(&self, created_before: Timestamp, change: &Transition) -> Result<u64> { PgStore::time_out_pending(self, created_before, change).await }
    async fn time_out_stalled(&self, silent_since: Timestamp, started_before: Timestamp, change: &Transition,) -> Result<u64> { PgStore::time_out_stalled(self, silent_since, started_before, change).await }
    async fn append_audit(&self, entry: &AuditEntry) -> Result<i64> { PgStore::append_audit(self, entry).await }
    async fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>> { PgStore::audit(self, filter).await }
    async fn roles(&self, tenant: &str) -> Result<Vec<casefile_proto::rbac::Role>> { PgStore::roles(self, tenant).await }
    async fn put_role(&self, tenant: &str, role: &casefile_proto::rbac::Role) -> Result<()> { PgStore::put_role(self, tenant, role).await }
    async fn delete_role(&self, tenant: &str, name: &str) -> Result<bool> { PgStore::delete_role(self, tenant, name).await }
    async fn device_groups(&self, tenant: &str) -> Result<Vec<casefile_proto::rbac::DeviceGroup>> { PgStore::device_groups(self, tenant).await }
    async fn create_device_group(&self, tenant: &str, group: &casefile_proto::rbac::DeviceGroup,) -> Result<casefile_proto::rbac::DeviceGroup> { PgStore::create_device_group(self, tenant, group).await }
    async fn delete_device_group(&self, tenant: &str, id: i64) -> Result<bool> { PgStore::delete_device_group(self, tenant, id).await }
    async fn set_machine_group(&self, machine_id: &str, group: Option<i64>) -> Result<()> { PgStore::set_machine_group(self, machine_id, group).await }
    async fn ungrouped_user_groups(&self, tenant: &str) -> Result<Vec<String>> { PgStore::ungrouped_user_groups(self, tenant).await }
    async fn set_ungrouped_user_groups(&self, tenant: &str, groups: &[String]) -> Result<()> { PgStore::set_ungrouped_user_groups(self, tenant, groups).await }
    async fn change_machine_tag(&self, machine_id: &str, tag: &str, add: bool) -> Result<Option<MachineRecord>> { PgStore::change_machine_tag(self, machine_id, tag, add).await }
    async fn enroll_with_token(&self, enrollment: &TokenEnrollment) -> Result<EnrollOutcome> { PgStore::enroll_with_token(self, enrollment).await }
    async fn create_enroll_challenge(&self, tenant: &str, challenge: &EnrollChallengeRecord) -> Result<bool> { PgStore::create_enroll_challenge(self, tenant, challenge).await }
    async fn reset_machine_identity(&self, tenant: &str, machine_id: &str, entry: &AuditEntry,) -> Result<Option<MachineRecord>> { PgStore::reset_machine_identity(self, tenant, machine_id, entry).await }
    async fn enrollment_tokens(&self, tenant: &str) -> Result<Vec<EnrollmentTokenRecord>> { PgStore::enrollment_tokens(self, tenant).await }
    async fn revoke_enrollment_token(&self, tenant: &str, id: Uuid, at: Timestamp,) -> Result<Option<EnrollmentTokenRecord>> { PgStore::revoke_enrollment_token(self, tenant, id, at).await }
    async fn machines_named(&self, tenant: &str, name: &str) -> Result<Vec<MachineRecord>> { PgStore::machines_named(self, tenant, name).await }
    async fn claim_leased(&self, machine_id: &str, at: Timestamp, lease_until: Option<Timestamp>, audit: Option<&(dyn for<'c> Fn(&'c Claim) -> AuditEntry + Sync)>,
    ) -> Result<Option<Claim>> { PgStore::claim_leased(self, machine_id, at, lease_until, audit).await }
    async fn accept_action(&self, machine_id: &str, id: Uuid, at: Timestamp, audit: Option<&AuditEntry>,) -> Result<bool> { PgStore::accept_action(self, machine_id, id, at, audit).await }
    async fn fail_in_progress_except(&self, machine_id: &str, keep: &[Uuid], change: &Transition) -> Result<Vec<Uuid>> { PgStore::fail_in_progress_except(self, machine_id, keep, change).await }
    async fn next_lease_end(&self, machine_id: &str) -> Result<Option<Timestamp>> { PgStore::next_lease_end(self, machine_id).await }
    async fn package_by_sha256(&self, tenant: &str, sha256: &str) -> Result<Option<PackageRecord>> { PgStore::package_by_sha256(self, tenant, sha256).await }
}
