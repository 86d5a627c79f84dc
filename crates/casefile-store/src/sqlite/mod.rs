//! The embedded default: one SQLite file in WAL mode. This module holds the plumbing
//! (open, connect, migrations, the pool, shared transaction helpers); each area's
//! queries live in a file of their own, the row mapping in `rows`.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous};
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};

use casefile_proto::action::ActionStatus;

use crate::*;
use rows::micros;

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

/// This binary's schema: the embedded migrations.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

/// A database's schema against this binary's migrations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schema {
    /// Every migration this binary knows is applied, and no other.
    Current,
    /// A new database: no table yet.
    Empty,
    /// Migrations are pending (`casefile migrate` applies them).
    Older { database: i64, binary: i64, pending: Vec<i64> },
    /// The database holds migrations this binary does not know: it was written by a newer one.
    Newer { database: i64, binary: i64 },
}

#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and applies pending migrations (the
    /// embedded demo and tests; a service uses [`SqliteStore::open_checked`]).
    pub async fn open(path: &Path) -> Result<Self> {
        let store = Self::connect(path).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Opens the database without touching its schema, then refuses one older or newer
    /// than this binary's. A brand-new, empty database is created and migrated: there is
    /// nothing in it an upgrade could harm.
    pub async fn open_checked(path: &Path) -> Result<Self> {
        let store = Self::connect(path).await?;
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

    /// Opens the database without touching its schema (`casefile migrate` looks first).
    pub async fn open_unmigrated(path: &Path) -> Result<Self> {
        Self::connect(path).await
    }

    /// Where the database stands against this binary's migrations.
    pub async fn schema(&self) -> Result<Schema> {
        let binary: Vec<i64> =
            MIGRATOR.iter().filter(|m| !m.migration_type.is_down_migration()).map(|m| m.version).collect();
        let newest = binary.iter().copied().max().unwrap_or(0);
        let tracked: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'")
                .fetch_one(&self.pool)
                .await?;
        if tracked == 0 {
            let tables: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sqlite_master").fetch_one(&self.pool).await?;
            return match tables {
                0 => Ok(Schema::Empty),
                _ => {
                    Err(StoreError::Corrupt("the database has tables but no migration history: not casefile's".into()))
                }
            };
        }
        let applied: Vec<i64> =
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success = 1 ORDER BY version")
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

    /// Applies pending migrations; returns the versions applied.
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

    /// A consistent copy of the whole database in a new file at `dest`, taken while the
    /// server keeps writing (`VACUUM INTO` reads one snapshot; writers are not blocked in
    /// WAL mode). `dest` must not exist.
    pub async fn snapshot_into(&self, dest: &Path) -> Result<()> {
        let dest = dest.to_str().ok_or_else(|| StoreError::Query("the backup path is not UTF-8".into()))?;
        sqlx::query("VACUUM INTO ?").bind(dest).execute(&self.pool).await?;
        Ok(())
    }

    async fn connect(path: &Path) -> Result<Self> {
        restrict_to_owner(path)?;
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true)
            // Bounds the work of the periodic `PRAGMA optimize` (see `optimize`); until it
            // has measured the data, the planner uses the hints of migration 0003.
            .pragma("analysis_limit", "1000")
            // After a checkpoint resets the WAL, its file is cut back to this size: a burst
            // of writes does not leave a large file behind for good.
            .pragma("journal_size_limit", "67108864");
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            // Each trip to a connection's thread costs two thread switches (bench/api):
            // a connection to a file cannot have been cut while idle, so it is not pinged
            // before use (sqlx already pings it once when it is given back).
            .test_before_acquire(false)
            // A COMMIT refused for a full disk is rolled back by SQLite itself; sqlx's
            // own ROLLBACK then fails and it keeps counting the transaction as open, so
            // the next user of that connection would start inside it. Such a connection
            // is closed instead of reused. Checked when it is taken: by then the ping sqlx
            // sends on release has waited for the queued rollback.
            .before_acquire(|conn, _| Box::pin(async move { Ok(!sqlx::Connection::is_in_transaction(conn)) }))
            // And one given back inside a transaction (a dropped transaction's rollback is
            // only queued then) is closed at once, which rolls it back, rather than left
            // idle holding SQLite's write lock until someone takes it. No trip to its
            // thread either way: both only read the connection's transaction depth.
            .after_release(|conn, _| Box::pin(async move { Ok(!sqlx::Connection::is_in_transaction(conn)) }))
            .connect_with(options)
            .await?;
        Ok(Self { pool })
    }

    /// A write transaction holding the write lock from its start (`BEGIN IMMEDIATE`): a
    /// deferred one that reads first may find its snapshot stale when it comes to write,
    /// and SQLite answers that with `SQLITE_BUSY_SNAPSHOT` at once instead of waiting.
    pub(super) async fn write(&self) -> Result<sqlx::Transaction<'static, Sqlite>> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// The pool, for `casefile store copy` (it reads every table in one snapshot).
    pub(crate) fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Opens from a `sqlite://` URL or a plain path.
    pub async fn open_url(url: &str) -> Result<Self> {
        Self::open(&Self::path_of(url)?).await
    }

    /// The database file a `sqlite://` URL (or a plain path) names.
    pub fn path_of(url: &str) -> Result<std::path::PathBuf> {
        Ok(SqliteConnectOptions::from_str(url)?.get_filename().to_owned())
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
    ) -> Result<Listed<SqliteRow>> {
        let mut q = QueryBuilder::<Sqlite>::new(format!("SELECT {select} FROM {table} WHERE tenant_id = "));
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
            let mut q = QueryBuilder::<Sqlite>::new(format!("SELECT COUNT(*) FROM {table} WHERE tenant_id = "));
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

/// The database holds the server's signing keys: it and its WAL files are the owner's
/// alone. Creating the file first (empty is a valid SQLite database) makes SQLite give
/// the WAL and shared-memory files the same mode.
fn restrict_to_owner(path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let io = |e: std::io::Error| StoreError::Database(sqlx::Error::Io(e));
        std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(path).map_err(io)?;
        for suffix in ["", "-wal", "-shm"] {
            let file = std::path::PathBuf::from(format!("{}{suffix}", path.display()));
            if file.exists() {
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
            }
        }
    }
    Ok(())
}

/// ` AND <the row's machine is in a visible group>`: machines by their own group, actions
/// by their machine's.
pub(super) fn push_visibility(q: &mut QueryBuilder<Sqlite>, table: &str, tenant: &str, visible: &Visibility) {
    let machine_filter = |q: &mut QueryBuilder<Sqlite>| {
        q.push("(rbac_group_id IN (");
        let mut list = q.separated(", ");
        list.push("NULL");
        for g in &visible.groups {
            list.push_bind(*g);
        }
        list.push_unseparated(")");
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

/// Appends an audit entry on `conn` (inside the caller's transaction, when it has one).
pub(super) async fn insert_audit(conn: &mut sqlx::SqliteConnection, e: &AuditEntry) -> Result<i64> {
    let detail = e.detail.as_ref().map(|d| d.to_string());
    let done = sqlx::query(
        "INSERT INTO audit_log (at, tenant_id, actor_kind, actor, event, target, outcome, http_status, \
             source_ip, correlation_id, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(micros(e.at))
    .bind(&e.tenant_id)
    .bind(&e.actor_kind)
    .bind(&e.actor)
    .bind(&e.event)
    .bind(&e.target)
    .bind(&e.outcome)
    .bind(e.http_status.map(i64::from))
    .bind(&e.source_ip)
    .bind(&e.correlation_id)
    .bind(detail)
    .execute(conn)
    .await?;
    Ok(done.last_insert_rowid())
}

/// Writes `audit` (when given) on the same connection as the change it records.
pub(super) async fn insert_audit_opt(conn: &mut sqlx::SqliteConnection, audit: Option<&AuditEntry>) -> Result<()> {
    if let Some(entry) = audit {
        insert_audit(conn, entry).await?;
    }
    Ok(())
}

pub(super) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

pub(super) fn push_transition_set(q: &mut QueryBuilder<Sqlite>, change: &Transition) {
    q.push("UPDATE machine_actions SET status = ");
    q.push_bind(change.to.as_str());
    q.push(", updated_at = ");
    q.push_bind(micros(change.at));
    if let Some(h) = change.error_h_result {
        q.push(", error_hresult = ").push_bind(h);
    }
    if let Some(info) = &change.troubleshoot_info {
        q.push(", troubleshoot_info = ").push_bind(info.clone());
    }
    if change.to == ActionStatus::Cancelled {
        // A confirmed cancellation keeps who asked for it and why.
        q.push(", cancelled_at = ").push_bind(micros(change.at));
        q.push(", cancellation_requestor = COALESCE(").push_bind(change.cancellation_requestor.clone());
        q.push(", cancellation_requestor), cancellation_comment = COALESCE(");
        q.push_bind(change.cancellation_comment.clone()).push(", cancellation_comment)");
    }
}
