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
use sqlx::{Postgres, QueryBuilder, Row};

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
