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
use sqlx::{Connection as _, Postgres, QueryBuilder, Row};

use crate::*;

mod access;
mod actions;
mod audit;
mod cluster;
mod filter;
mod identity;
mod machines;
mod maintenance;
mod rows;
mod uploads;
mod users;

/// This binary's PostgreSQL schema: the embedded migrations.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// A PostgreSQL database.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: sqlx::PgPool,
}

/// How this process's sessions show in `pg_stat_activity`: `casefile/<pid>/<random>`, so
/// that `casefile migrate` can tell other processes' sessions (live replicas) from its own,
/// even where every process is pid 1 (containers).
fn application_name() -> &'static str {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| format!("casefile/{}/{}", std::process::id(), uuid::Uuid::new_v4().simple()))
}

#[derive(Debug, Clone, Copy)]
enum SchemaLock {
    Read,
    Change,
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
        // Read under the schema lock: a replica starting while another one migrates waits
        // for the migration to end instead of finding it half done.
        let lock = store.schema_lock(SchemaLock::Read).await?;
        let schema = store.schema().await;
        lock.close().await.ok();
        match schema? {
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
                _ => {
                    Err(StoreError::Corrupt("the database has tables but no migration history: not casefile's".into()))
                }
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
        let lock = self.schema_lock(SchemaLock::Change).await?;
        let applied = async {
            let pending = match self.schema().await? {
                Schema::Current => return Ok(Vec::new()),
                Schema::Newer { database, binary } => return Err(StoreError::SchemaNewer { database, binary }),
                Schema::Older { pending, .. } => pending,
                Schema::Empty => MIGRATOR.iter().map(|m| m.version).collect(),
            };
            MIGRATOR.run(&self.pool).await?;
            Ok(pending)
        }
        .await;
        lock.close().await.ok();
        applied
    }

    /// What other casefile processes are connected to this database now (`host (name)`,
    /// one per process; `casefile` alone is a replica of a release before the names had
    /// a pid): the replicas, which must be stopped before a migration changes the schema
    /// under them.
    pub async fn other_clients(&self) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT DISTINCT coalesce(host(client_addr), 'a local socket') || ' (' || application_name || ')' \
             FROM pg_stat_activity WHERE datname = current_database() \
             AND (application_name LIKE 'casefile/%' OR application_name = 'casefile') \
             AND application_name <> $1 ORDER BY 1",
        )
        .bind(application_name())
        .fetch_all(&self.pool)
        .await?)
    }

    /// Takes casefile's schema lock, shared to read where the schema stands or exclusive
    /// to change it, on a connection of its own: closing it (or the process dying) lets
    /// the lock go, so no pooled connection is ever handed on still holding it.
    async fn schema_lock(&self, kind: SchemaLock) -> Result<sqlx::PgConnection> {
        let mut connection = self.pool.acquire().await?.detach();
        let take = match kind {
            SchemaLock::Read => "SELECT pg_advisory_lock_shared($1)",
            SchemaLock::Change => "SELECT pg_advisory_lock($1)",
        };
        sqlx::query(take).bind(crate::cluster::lock_key("schema")).execute(&mut connection).await?;
        Ok(connection)
    }

    async fn connect(url: &str) -> Result<Self> {
        let options: PgConnectOptions = url.parse()?;
        // Server-side keepalives: a client that vanished without closing (a cut network)
        // is noticed within about a minute, and its session ends, with the locks it held
        // (the lifecycle leader's among them), instead of after the kernel's two hours.
        let options = options.application_name(application_name()).options([
            ("tcp_keepalives_idle", "30"),
            ("tcp_keepalives_interval", "10"),
            ("tcp_keepalives_count", "3"),
            ("tcp_user_timeout", "60000"),
        ]);
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A server that starts while another one is part-way through migrating a new
    /// database waits for the migration, then opens; it neither refuses the half-done
    /// schema nor runs a migration of its own beside it.
    #[tokio::test]
    async fn a_server_starting_during_a_migration_waits_for_it() {
        let Some(db) = casefile_testkit::pg::database() else { return };
        let migrating = PgStore::open_unmigrated(&db.url).await.unwrap();
        let lock = migrating.schema_lock(SchemaLock::Change).await.unwrap();
        // The first migration only, as a migrator would have committed it before the next.
        let all = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres");
        let first = tempfile::tempdir().unwrap();
        let name = std::fs::read_dir(all).unwrap().map(|e| e.unwrap().file_name()).min().unwrap();
        std::fs::copy(std::path::Path::new(all).join(&name), first.path().join(&name)).unwrap();
        let mut own = migrating.pool().acquire().await.unwrap().detach();
        sqlx::migrate::Migrator::new(first.path()).await.unwrap().run(&mut own).await.unwrap();
        assert!(matches!(migrating.schema().await.unwrap(), Schema::Older { .. }));

        let url = db.url.clone();
        let mut starting = tokio::spawn(async move { PgStore::open_checked(&url).await.map(|_| ()) });
        let waiting = async {
            loop {
                let waiters: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted \
                         AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
                         AND objid::bigint = $1",
                )
                .bind(crate::cluster::lock_key("schema") & 0xffff_ffff)
                .fetch_one(migrating.pool())
                .await
                .unwrap();
                if waiters > 0 {
                    return;
                }
                tokio::task::yield_now().await;
            }
        };
        tokio::select! {
            opened = &mut starting => panic!("the server did not wait for the migration: {opened:?}"),
            waited = tokio::time::timeout(Duration::from_secs(30), waiting) => waited.expect("the server waits on the schema lock"),
        }

        // The migration ends; the waiting server finds the schema current and opens.
        sqlx::migrate::Migrator::new(std::path::Path::new(all)).await.unwrap().run(&mut own).await.unwrap();
        lock.close().await.unwrap();
        tokio::time::timeout(Duration::from_secs(30), starting).await.expect("opened").unwrap().unwrap();
        assert_eq!(migrating.schema().await.unwrap(), Schema::Current);
    }
}
