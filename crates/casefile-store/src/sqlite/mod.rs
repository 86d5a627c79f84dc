//! The embedded default: one SQLite file in WAL mode.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use casefile_proto::action::{ActionStatus, ActionType, MachineAction};
use casefile_proto::time::Timestamp;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous};
use sqlx::{AssertSqlSafe, QueryBuilder, Row, Sqlite, SqlitePool};
use uuid::Uuid;

use crate::*;

mod filter;

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
            // A COMMIT refused for a full disk is rolled back by SQLite itself; sqlx's
            // own ROLLBACK then fails and it keeps counting the transaction as open, so
            // the next user of that connection would start inside it. Such a connection
            // is closed instead of reused (after the queued rollback had its chance).
            .after_release(|conn, _| {
                Box::pin(async move {
                    sqlx::Connection::ping(conn).await?;
                    Ok(!sqlx::Connection::is_in_transaction(conn))
                })
            })
            .connect_with(options)
            .await?;
        Ok(Self { pool })
    }

    /// A write transaction holding the write lock from its start (`BEGIN IMMEDIATE`): a
    /// deferred one that reads first may find its snapshot stale when it comes to write,
    /// and SQLite answers that with `SQLITE_BUSY_SNAPSHOT` at once instead of waiting.
    async fn write(&self) -> Result<sqlx::Transaction<'static, Sqlite>> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
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

fn micros(t: Timestamp) -> i64 {
    t.timestamp_micros()
}

fn from_micros(v: i64) -> Result<Timestamp> {
    DateTime::<Utc>::from_timestamp_micros(v).ok_or_else(|| StoreError::Corrupt(format!("timestamp {v}")))
}

fn opt_from_micros(v: Option<i64>) -> Result<Option<Timestamp>> {
    v.map(from_micros).transpose()
}

fn json_list<T: serde::de::DeserializeOwned>(raw: &str) -> Result<Vec<T>> {
    serde_json::from_str(raw).map_err(|e| StoreError::Corrupt(format!("json list: {e}")))
}

const ACTION_COLUMNS: &str = "id, machine_id, type, status, title, requestor, requestor_comment, external_id, \
     request_source, computer_dns_name, created_at, updated_at, cancellation_requestor, \
     cancellation_comment, cancelled_at, error_hresult, troubleshoot_info";

fn action_from_row(row: &SqliteRow) -> Result<MachineAction> {
    let id: String = row.try_get("id")?;
    let kind: String = row.try_get("type")?;
    let status: String = row.try_get("status")?;
    Ok(MachineAction {
        id: Uuid::parse_str(&id).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        action_type: ActionType::parse(&kind).ok_or_else(|| StoreError::Corrupt(format!("action type {kind}")))?,
        title: row.try_get("title")?,
        requestor: row.try_get("requestor")?,
        requestor_comment: row.try_get("requestor_comment")?,
        status: ActionStatus::parse(&status).ok_or_else(|| StoreError::Corrupt(format!("status {status}")))?,
        machine_id: row.try_get("machine_id")?,
        computer_dns_name: row.try_get("computer_dns_name")?,
        creation_date_time_utc: from_micros(row.try_get("created_at")?)?,
        last_update_date_time_utc: from_micros(row.try_get("updated_at")?)?,
        cancellation_requestor: row.try_get("cancellation_requestor")?,
        cancellation_comment: row.try_get("cancellation_comment")?,
        cancellation_date_time_utc: opt_from_micros(row.try_get("cancelled_at")?)?,
        error_h_result: row.try_get("error_hresult")?,
        scope: None,
        external_id: row.try_get("external_id")?,
        request_source: row.try_get("request_source")?,
        related_file_info: None,
        commands: Vec::new(),
        troubleshoot_info: row.try_get("troubleshoot_info")?,
    })
}

const MACHINE_COLUMNS: &str = "id, tenant_id, computer_dns_name, os_platform, os_version, os_architecture, \
     os_build, agent_version, last_ip_address, ip_addresses, machine_tags, first_seen, last_seen, agent_public_key, \
     rbac_group_id";

fn machine_from_row(row: &SqliteRow) -> Result<MachineRecord> {
    Ok(MachineRecord {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        facts: HostFacts {
            computer_dns_name: row.try_get("computer_dns_name")?,
            os_platform: row.try_get("os_platform")?,
            os_version: row.try_get("os_version")?,
            os_architecture: row.try_get("os_architecture")?,
            os_build: row.try_get("os_build")?,
            agent_version: row.try_get("agent_version")?,
            ip_addresses: json_list(row.try_get::<&str, _>("ip_addresses")?)?,
        },
        last_ip_address: row.try_get("last_ip_address")?,
        machine_tags: json_list(row.try_get::<&str, _>("machine_tags")?)?,
        first_seen: from_micros(row.try_get("first_seen")?)?,
        last_seen: from_micros(row.try_get("last_seen")?)?,
        agent_public_key: row.try_get("agent_public_key")?,
        rbac_group_id: row.try_get("rbac_group_id")?,
    })
}

const TOKEN_COLUMNS: &str =
    "id, tenant_id, token_hash, created_at, expires_at, revoked_at, uses_allowed, uses, last_used_at";

fn token_from_row(r: &SqliteRow) -> Result<EnrollmentTokenRecord> {
    let id: String = r.try_get("id")?;
    let count = |column: &str| -> Result<u32> {
        let v: i64 = r.try_get(column)?;
        u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("enrollment token {column} {v}")))
    };
    Ok(EnrollmentTokenRecord {
        id: Uuid::parse_str(&id).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        tenant_id: r.try_get("tenant_id")?,
        token_hash: r.try_get("token_hash")?,
        created_at: from_micros(r.try_get("created_at")?)?,
        expires_at: from_micros(r.try_get("expires_at")?)?,
        revoked_at: opt_from_micros(r.try_get("revoked_at")?)?,
        uses_allowed: count("uses_allowed")?,
        uses: count("uses")?,
        last_used_at: opt_from_micros(r.try_get("last_used_at")?)?,
    })
}

/// Writes a machine's new identity over its row: host facts, credential and key, keeping
/// `first_seen` and history; clears a pending identity reset.
async fn rekey_machine(conn: &mut sqlx::SqliteConnection, m: &MachineEnrollment) -> Result<()> {
    let ips = serde_json::to_string(&m.facts.ip_addresses).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    sqlx::query(
        "UPDATE machines SET computer_dns_name = ?, os_platform = ?, os_version = ?, os_architecture = ?, \
             os_build = ?, agent_version = ?, last_ip_address = ?, ip_addresses = ?, last_seen = MAX(last_seen, ?), \
             credential_hash = ?, agent_public_key = ?, identity_reset_at = NULL WHERE id = ?",
    )
    .bind(&m.facts.computer_dns_name)
    .bind(&m.facts.os_platform)
    .bind(&m.facts.os_version)
    .bind(&m.facts.os_architecture)
    .bind(m.facts.os_build)
    .bind(&m.facts.agent_version)
    .bind(&m.last_ip_address)
    .bind(ips)
    .bind(micros(m.at))
    .bind(&m.credential_hash)
    .bind(&m.agent_public_key)
    .bind(&m.id)
    .execute(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM enroll_challenges WHERE machine_id = ?").bind(&m.id).execute(&mut *conn).await?;
    Ok(())
}

async fn insert_machine(conn: &mut sqlx::SqliteConnection, m: &MachineEnrollment) -> Result<()> {
    write_machine(conn, m, "").await
}

/// `ON CONFLICT` clause of [`Store::enroll_machine`]: a host written again keeps its
/// `first_seen` and takes everything else anew.
const MACHINE_UPSERT: &str = " ON CONFLICT (id) DO UPDATE SET computer_dns_name = excluded.computer_dns_name, \
     os_platform = excluded.os_platform, os_version = excluded.os_version, \
     os_architecture = excluded.os_architecture, os_build = excluded.os_build, \
     agent_version = excluded.agent_version, last_ip_address = excluded.last_ip_address, \
     ip_addresses = excluded.ip_addresses, last_seen = excluded.last_seen, \
     credential_hash = excluded.credential_hash, agent_public_key = excluded.agent_public_key";

/// Inserts the machine, with `on_conflict` appended to the statement.
async fn write_machine(conn: &mut sqlx::SqliteConnection, m: &MachineEnrollment, on_conflict: &str) -> Result<()> {
    let ips = serde_json::to_string(&m.facts.ip_addresses).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let sql = format!(
        "INSERT INTO machines (id, tenant_id, computer_dns_name, os_platform, os_version, os_architecture, \
             os_build, agent_version, last_ip_address, ip_addresses, first_seen, last_seen, credential_hash, \
             agent_public_key) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?){on_conflict}"
    );
    sqlx::query(AssertSqlSafe(sql))
        .bind(&m.id)
        .bind(&m.tenant_id)
        .bind(&m.facts.computer_dns_name)
        .bind(&m.facts.os_platform)
        .bind(&m.facts.os_version)
        .bind(&m.facts.os_architecture)
        .bind(m.facts.os_build)
        .bind(&m.facts.agent_version)
        .bind(&m.last_ip_address)
        .bind(ips)
        .bind(micros(m.at))
        .bind(micros(m.at))
        .bind(&m.credential_hash)
        .bind(&m.agent_public_key)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

async fn machine_in(conn: &mut sqlx::SqliteConnection, id: &str) -> Result<MachineRecord> {
    let sql = format!("SELECT {MACHINE_COLUMNS} FROM machines WHERE id = ?");
    let row = sqlx::query(AssertSqlSafe(sql)).bind(id).fetch_one(&mut *conn).await?;
    machine_from_row(&row)
}

/// ` AND <the row's machine is in a visible group>`: machines by their own group, actions
/// by their machine's.
fn push_visibility(q: &mut QueryBuilder<Sqlite>, table: &str, tenant: &str, visible: &Visibility) {
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

fn json_text<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn uuid_column(row: &SqliteRow, name: &str) -> Result<Uuid> {
    let raw: String = row.try_get(name)?;
    Uuid::parse_str(&raw).map_err(|e| StoreError::Corrupt(e.to_string()))
}

const PACKAGE_COLUMNS: &str = "action_id, tenant_id, blob_key, size, sha256, stored_at, deleted_at";

fn package_from_row(row: &SqliteRow) -> Result<PackageRecord> {
    let size: i64 = row.try_get("size")?;
    Ok(PackageRecord {
        action_id: uuid_column(row, "action_id")?,
        tenant_id: row.try_get("tenant_id")?,
        blob_key: row.try_get("blob_key")?,
        size: size as u64,
        sha256: row.try_get("sha256")?,
        stored_at: from_micros(row.try_get("stored_at")?)?,
        deleted_at: opt_from_micros(row.try_get("deleted_at")?)?,
    })
}

const APPLICATION_COLUMNS: &str =
    "client_id, tenant_id, name, secret_hash, roles, created_at, secret_rotated_at, disabled_at";

fn application_from_row(row: &SqliteRow) -> Result<ApplicationRecord> {
    Ok(ApplicationRecord {
        client_id: uuid_column(row, "client_id")?,
        tenant_id: row.try_get("tenant_id")?,
        name: row.try_get("name")?,
        secret_hash: row.try_get("secret_hash")?,
        roles: json_list(row.try_get::<&str, _>("roles")?)?,
        created_at: from_micros(row.try_get("created_at")?)?,
        secret_rotated_at: opt_from_micros(row.try_get("secret_rotated_at")?)?,
        disabled_at: opt_from_micros(row.try_get("disabled_at")?)?,
    })
}

type SqliteQuery<'q> = sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments>;

fn roles_json(roles: &[String]) -> Result<String> {
    serde_json::to_string(roles).map_err(|e| StoreError::Corrupt(e.to_string()))
}

impl SqliteStore {
    /// Runs `UPDATE applications SET {set} ... RETURNING` on one application of `tenant`;
    /// `bind` adds the values of `set`'s placeholders.
    async fn update_application<'q>(
        &self,
        set: &str,
        tenant: &str,
        client_id: Uuid,
        bind: impl FnOnce(SqliteQuery<'q>) -> SqliteQuery<'q>,
    ) -> Result<Option<ApplicationRecord>> {
        let sql = format!(
            "UPDATE applications SET {set} WHERE client_id = ? AND tenant_id = ? RETURNING {APPLICATION_COLUMNS}"
        );
        let mut tx = self.write().await?;
        let row = bind(sqlx::query(AssertSqlSafe(sql)))
            .bind(client_id.to_string())
            .bind(tenant.to_owned())
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        row.as_ref().map(application_from_row).transpose()
    }
}

impl<T> Listed<T> {
    fn try_map<U>(self, f: impl Fn(&T) -> Result<U>) -> Result<Listed<U>> {
        Ok(Listed { items: self.items.iter().map(f).collect::<Result<_>>()?, total: self.total, more: self.more })
    }
}

async fn insert_action(conn: &mut sqlx::SqliteConnection, tenant: &str, a: &MachineAction) -> Result<()> {
    let result = sqlx::query(
        "INSERT INTO machine_actions (id, tenant_id, machine_id, type, status, title, requestor, \
             requestor_comment, external_id, request_source, computer_dns_name, created_at, updated_at, \
             error_hresult, troubleshoot_info) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(a.id.to_string())
    .bind(tenant)
    .bind(&a.machine_id)
    .bind(a.action_type.as_str())
    .bind(a.status.as_str())
    .bind(&a.title)
    .bind(&a.requestor)
    .bind(&a.requestor_comment)
    .bind(&a.external_id)
    .bind(&a.request_source)
    .bind(&a.computer_dns_name)
    .bind(micros(a.creation_date_time_utc))
    .bind(micros(a.last_update_date_time_utc))
    .bind(a.error_h_result)
    .bind(&a.troubleshoot_info)
    .execute(conn)
    .await;
    match result {
        Ok(_) => Ok(()),
        Err(e) if is_unique_violation(&e) => Err(StoreError::ActiveRequestExists),
        Err(e) => Err(e.into()),
    }
}

/// Appends an audit entry on `conn` (inside the caller's transaction, when it has one).
async fn insert_audit(conn: &mut sqlx::SqliteConnection, e: &AuditEntry) -> Result<i64> {
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
async fn insert_audit_opt(conn: &mut sqlx::SqliteConnection, audit: Option<&AuditEntry>) -> Result<()> {
    if let Some(entry) = audit {
        insert_audit(conn, entry).await?;
    }
    Ok(())
}

async fn insert_package(conn: &mut sqlx::SqliteConnection, p: &PackageRecord) -> Result<()> {
    sqlx::query(
        "INSERT INTO packages (action_id, tenant_id, blob_key, size, sha256, stored_at) VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(p.action_id.to_string())
    .bind(&p.tenant_id)
    .bind(&p.blob_key)
    .bind(p.size as i64)
    .bind(&p.sha256)
    .bind(micros(p.stored_at))
    .execute(conn)
    .await?;
    Ok(())
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// `status IN (...)` for the statuses allowed to precede `to`.
fn push_predecessors(q: &mut QueryBuilder<Sqlite>, to: ActionStatus) {
    q.push(" status IN (");
    let mut list = q.separated(", ");
    for s in to.predecessors() {
        list.push_bind(s.as_str());
    }
    list.push_unseparated(")");
}

fn push_transition_set(q: &mut QueryBuilder<Sqlite>, change: &Transition) {
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

#[async_trait]
impl Store for SqliteStore {
    async fn backup_into(&self, dest: &Path) -> Result<()> {
        self.snapshot_into(dest).await
    }

    async fn probe_write(&self) -> Result<()> {
        // Inserted and deleted in one transaction: the commit writes the page, the data
        // ends unchanged. The key is no valid tenant id, so no tenant can own the row.
        const PROBE: &str = "readiness probe";
        let mut tx = self.write().await?;
        sqlx::query("INSERT OR IGNORE INTO ungrouped_access (tenant_id, user_groups) VALUES (?, '[]')")
            .bind(PROBE)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM ungrouped_access WHERE tenant_id = ?").bind(PROBE).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn action_counts(&self) -> Result<Vec<(String, String, u64)>> {
        let rows: Vec<(String, String, i64)> =
            sqlx::query_as("SELECT type, status, COUNT(*) FROM machine_actions GROUP BY type, status")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(|(t, s, n)| (t, s, n.max(0) as u64)).collect())
    }

    async fn machines_seen_since(&self, since: Timestamp) -> Result<u64> {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM machines WHERE last_seen >= ?")
            .bind(micros(since))
            .fetch_one(&self.pool)
            .await?;
        Ok(n.max(0) as u64)
    }

    async fn close(&self) {
        // The last connection to close checkpoints the WAL and removes the -wal and -shm
        // files by name: it must be done before anything else takes over the path.
        self.pool.close().await;
    }

    async fn optimize(&self) -> Result<()> {
        sqlx::query("PRAGMA optimize").execute(&self.pool).await?;
        // Automatic checkpoints are passive; a truncating one now and then returns the
        // WAL's space even after a long burst (it gives up at once if readers need it).
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(&self.pool).await?;
        Ok(())
    }

    async fn roles(&self, tenant: &str) -> Result<Vec<casefile_proto::rbac::Role>> {
        let rows =
            sqlx::query("SELECT name, permissions, users, groups FROM rbac_roles WHERE tenant_id = ? ORDER BY name")
                .bind(tenant)
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| {
                Ok(casefile_proto::rbac::Role {
                    name: r.try_get("name")?,
                    permissions: json_list(r.try_get::<&str, _>("permissions")?)?,
                    users: json_list(r.try_get::<&str, _>("users")?)?,
                    groups: json_list(r.try_get::<&str, _>("groups")?)?,
                })
            })
            .collect()
    }

    async fn put_role(&self, tenant: &str, role: &casefile_proto::rbac::Role) -> Result<()> {
        sqlx::query(
            "INSERT INTO rbac_roles (tenant_id, name, permissions, users, groups) VALUES (?, ?, ?, ?, ?) \
             ON CONFLICT (tenant_id, name) DO UPDATE SET permissions = excluded.permissions, \
                 users = excluded.users, groups = excluded.groups",
        )
        .bind(tenant)
        .bind(&role.name)
        .bind(json_text(&role.permissions)?)
        .bind(json_text(&role.users)?)
        .bind(json_text(&role.groups)?)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn delete_role(&self, tenant: &str, name: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM rbac_roles WHERE tenant_id = ? AND name = ?")
            .bind(tenant)
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn device_groups(&self, tenant: &str) -> Result<Vec<casefile_proto::rbac::DeviceGroup>> {
        let rows = sqlx::query(
            "SELECT id, name, rank, rules, user_groups FROM device_groups WHERE tenant_id = ? ORDER BY rank, id",
        )
        .bind(tenant)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(casefile_proto::rbac::DeviceGroup {
                    id: r.try_get("id")?,
                    name: r.try_get("name")?,
                    rank: r.try_get("rank")?,
                    rules: json_list(r.try_get::<&str, _>("rules")?)?,
                    user_groups: json_list(r.try_get::<&str, _>("user_groups")?)?,
                })
            })
            .collect()
    }

    async fn create_device_group(
        &self,
        tenant: &str,
        g: &casefile_proto::rbac::DeviceGroup,
    ) -> Result<casefile_proto::rbac::DeviceGroup> {
        let inserted =
            sqlx::query("INSERT INTO device_groups (tenant_id, name, rank, rules, user_groups) VALUES (?, ?, ?, ?, ?)")
                .bind(tenant)
                .bind(&g.name)
                .bind(g.rank)
                .bind(json_text(&g.rules)?)
                .bind(json_text(&g.user_groups)?)
                .execute(&self.pool)
                .await;
        match inserted {
            Ok(done) => Ok(casefile_proto::rbac::DeviceGroup { id: done.last_insert_rowid(), ..g.clone() }),
            Err(e) if is_unique_violation(&e) => {
                Err(StoreError::Duplicate(format!("a device group named '{}' exists already", g.name)))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn delete_device_group(&self, tenant: &str, id: i64) -> Result<bool> {
        let mut tx = self.write().await?;
        let done = sqlx::query("DELETE FROM device_groups WHERE tenant_id = ? AND id = ?")
            .bind(tenant)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE machines SET rbac_group_id = NULL WHERE tenant_id = ? AND rbac_group_id = ?")
            .bind(tenant)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    async fn set_machine_group(&self, machine_id: &str, group: Option<i64>) -> Result<()> {
        sqlx::query("UPDATE machines SET rbac_group_id = ? WHERE id = ?")
            .bind(group)
            .bind(machine_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn ungrouped_user_groups(&self, tenant: &str) -> Result<Vec<String>> {
        let row = sqlx::query("SELECT user_groups FROM ungrouped_access WHERE tenant_id = ?")
            .bind(tenant)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(row) => json_list(row.try_get::<&str, _>("user_groups")?),
            None => Ok(Vec::new()),
        }
    }

    async fn set_ungrouped_user_groups(&self, tenant: &str, groups: &[String]) -> Result<()> {
        sqlx::query(
            "INSERT INTO ungrouped_access (tenant_id, user_groups) VALUES (?, ?) \
             ON CONFLICT (tenant_id) DO UPDATE SET user_groups = excluded.user_groups",
        )
        .bind(tenant)
        .bind(json_text(&groups)?)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn change_machine_tag(&self, machine_id: &str, tag: &str, add: bool) -> Result<Option<MachineRecord>> {
        let change = if add {
            "CASE WHEN EXISTS (SELECT 1 FROM json_each(machine_tags) WHERE value = ? COLLATE NOCASE) \
             THEN machine_tags ELSE json_insert(machine_tags, '$[#]', ?) END"
        } else {
            "(SELECT json_group_array(value) FROM json_each(machine_tags) WHERE value <> ? COLLATE NOCASE)"
        };
        let sql = format!("UPDATE machines SET machine_tags = {change} WHERE id = ? RETURNING {MACHINE_COLUMNS}");
        let mut query = sqlx::query(AssertSqlSafe(sql)).bind(tag);
        if add {
            query = query.bind(tag);
        }
        let mut tx = self.write().await?;
        let row = query.bind(machine_id).fetch_optional(&mut *tx).await?;
        tx.commit().await?;
        row.as_ref().map(machine_from_row).transpose()
    }

    async fn append_audit(&self, e: &AuditEntry) -> Result<i64> {
        let mut conn = self.pool.acquire().await?;
        insert_audit(&mut conn, e).await
    }

    async fn audit(&self, f: &AuditFilter) -> Result<Vec<AuditRecord>> {
        let mut q = QueryBuilder::<Sqlite>::new(
            "SELECT seq, at, tenant_id, actor_kind, actor, event, target, outcome, http_status, source_ip, \
             correlation_id, detail FROM audit_log WHERE 1 = 1",
        );
        if let Some(t) = &f.tenant_id {
            q.push(" AND tenant_id = ").push_bind(t.clone());
        }
        if let Some(t) = f.since {
            q.push(" AND at >= ").push_bind(micros(t));
        }
        if let Some(t) = f.until {
            q.push(" AND at < ").push_bind(micros(t));
        }
        if let Some(v) = &f.event {
            q.push(" AND event = ").push_bind(v.clone());
        }
        if let Some(v) = &f.actor {
            q.push(" AND actor = ").push_bind(v.clone()).push(" COLLATE NOCASE");
        }
        if let Some(v) = &f.target {
            q.push(" AND target = ").push_bind(v.clone());
        }
        if let Some(seq) = f.after_seq {
            q.push(" AND seq > ").push_bind(seq);
        }
        q.push(" ORDER BY seq LIMIT ").push_bind(i64::from(f.limit));
        let rows = q.build().fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                let status: Option<i64> = r.try_get("http_status")?;
                let detail: Option<String> = r.try_get("detail")?;
                Ok(AuditRecord {
                    seq: r.try_get("seq")?,
                    entry: AuditEntry {
                        at: from_micros(r.try_get("at")?)?,
                        tenant_id: r.try_get("tenant_id")?,
                        actor_kind: r.try_get("actor_kind")?,
                        actor: r.try_get("actor")?,
                        event: r.try_get("event")?,
                        target: r.try_get("target")?,
                        outcome: r.try_get("outcome")?,
                        http_status: status.and_then(|s| u16::try_from(s).ok()),
                        source_ip: r.try_get("source_ip")?,
                        correlation_id: r.try_get("correlation_id")?,
                        detail: detail
                            .map(|d| {
                                serde_json::from_str(&d).map_err(|e| StoreError::Corrupt(format!("audit detail: {e}")))
                            })
                            .transpose()?,
                    },
                })
            })
            .collect()
    }

    async fn signing_keys(&self, purpose: &str) -> Result<Vec<SigningKeyRecord>> {
        let rows = sqlx::query(
            "SELECT kid, purpose, algorithm, private_key, public_key, created_at, retired_at \
             FROM signing_keys WHERE purpose = ? ORDER BY created_at DESC",
        )
        .bind(purpose)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(SigningKeyRecord {
                    kid: r.try_get("kid")?,
                    purpose: r.try_get("purpose")?,
                    algorithm: r.try_get("algorithm")?,
                    private_key: r.try_get("private_key")?,
                    public_key: r.try_get("public_key")?,
                    created_at: from_micros(r.try_get("created_at")?)?,
                    retired_at: opt_from_micros(r.try_get("retired_at")?)?,
                })
            })
            .collect()
    }

    async fn insert_signing_key(&self, key: &SigningKeyRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO signing_keys (kid, purpose, algorithm, private_key, public_key, created_at, retired_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&key.kid)
        .bind(&key.purpose)
        .bind(&key.algorithm)
        .bind(&key.private_key)
        .bind(&key.public_key)
        .bind(micros(key.created_at))
        .bind(key.retired_at.map(micros))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn retire_signing_key(&self, kid: &str, at: Timestamp) -> Result<bool> {
        let done = sqlx::query("UPDATE signing_keys SET retired_at = ? WHERE kid = ? AND retired_at IS NULL")
            .bind(micros(at))
            .bind(kid)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn create_application(&self, a: &ApplicationRecord) -> Result<()> {
        let result = sqlx::query(
            "INSERT INTO applications (client_id, tenant_id, name, secret_hash, roles, created_at, \
                 secret_rotated_at, disabled_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(a.client_id.to_string())
        .bind(&a.tenant_id)
        .bind(&a.name)
        .bind(&a.secret_hash)
        .bind(roles_json(&a.roles)?)
        .bind(micros(a.created_at))
        .bind(a.secret_rotated_at.map(micros))
        .bind(a.disabled_at.map(micros))
        .execute(&self.pool)
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => {
                Err(StoreError::Duplicate(format!("an application named '{}' in tenant '{}'", a.name, a.tenant_id)))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn application(&self, tenant: &str, client_id: Uuid) -> Result<Option<ApplicationRecord>> {
        let sql = format!("SELECT {APPLICATION_COLUMNS} FROM applications WHERE client_id = ? AND tenant_id = ?");
        let row =
            sqlx::query(AssertSqlSafe(sql)).bind(client_id.to_string()).bind(tenant).fetch_optional(&self.pool).await?;
        row.as_ref().map(application_from_row).transpose()
    }

    async fn application_by_client_id(&self, client_id: Uuid) -> Result<Option<ApplicationRecord>> {
        let sql = format!("SELECT {APPLICATION_COLUMNS} FROM applications WHERE client_id = ?");
        let row = sqlx::query(AssertSqlSafe(sql)).bind(client_id.to_string()).fetch_optional(&self.pool).await?;
        row.as_ref().map(application_from_row).transpose()
    }

    async fn applications(&self, tenant: &str) -> Result<Vec<ApplicationRecord>> {
        let sql =
            format!("SELECT {APPLICATION_COLUMNS} FROM applications WHERE tenant_id = ? ORDER BY name, client_id");
        let rows = sqlx::query(AssertSqlSafe(sql)).bind(tenant).fetch_all(&self.pool).await?;
        rows.iter().map(application_from_row).collect()
    }

    async fn update_application_roles(
        &self,
        tenant: &str,
        client_id: Uuid,
        roles: &[String],
    ) -> Result<Option<ApplicationRecord>> {
        let roles = roles_json(roles)?;
        self.update_application("roles = ?", tenant, client_id, |q| q.bind(roles)).await
    }

    async fn set_application_disabled(
        &self,
        tenant: &str,
        client_id: Uuid,
        disabled_at: Option<Timestamp>,
    ) -> Result<Option<ApplicationRecord>> {
        match disabled_at {
            Some(at) => {
                self.update_application("disabled_at = COALESCE(disabled_at, ?)", tenant, client_id, |q| {
                    q.bind(micros(at))
                })
                .await
            }
            None => self.update_application("disabled_at = NULL", tenant, client_id, |q| q).await,
        }
    }

    async fn rotate_application_secret(
        &self,
        tenant: &str,
        client_id: Uuid,
        secret_hash: &str,
        at: Timestamp,
    ) -> Result<Option<ApplicationRecord>> {
        let hash = secret_hash.to_owned();
        self.update_application("secret_hash = ?, secret_rotated_at = ?", tenant, client_id, |q| {
            q.bind(hash).bind(micros(at))
        })
        .await
    }

    async fn insert_enrollment_token(&self, t: &EnrollmentTokenRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO enrollment_tokens (id, tenant_id, token_hash, created_at, expires_at, revoked_at, \
                 uses_allowed, uses, last_used_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(t.id.to_string())
        .bind(&t.tenant_id)
        .bind(&t.token_hash)
        .bind(micros(t.created_at))
        .bind(micros(t.expires_at))
        .bind(t.revoked_at.map(micros))
        .bind(i64::from(t.uses_allowed))
        .bind(i64::from(t.uses))
        .bind(t.last_used_at.map(micros))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn enrollment_token_by_hash(&self, hash: &str) -> Result<Option<EnrollmentTokenRecord>> {
        let sql = format!("SELECT {TOKEN_COLUMNS} FROM enrollment_tokens WHERE token_hash = ?");
        let row = sqlx::query(AssertSqlSafe(sql)).bind(hash).fetch_optional(&self.pool).await?;
        row.as_ref().map(token_from_row).transpose()
    }

    async fn enroll_machine(&self, m: &MachineEnrollment) -> Result<MachineRecord> {
        let mut tx = self.write().await?;
        write_machine(&mut tx, m, MACHINE_UPSERT).await?;
        let machine = machine_in(&mut tx, &m.id).await?;
        tx.commit().await?;
        Ok(machine)
    }

    async fn machine_by_credential(&self, hash: &str) -> Result<Option<MachineRecord>> {
        let sql = format!("SELECT {MACHINE_COLUMNS} FROM machines WHERE credential_hash = ?");
        let row = sqlx::query(AssertSqlSafe(sql)).bind(hash).fetch_optional(&self.pool).await?;
        row.as_ref().map(machine_from_row).transpose()
    }

    async fn machine(&self, tenant: &str, id_or_name: &str) -> Result<Option<MachineRecord>> {
        // Two indexed lookups (primary key, then name) rather than one `OR` that SQLite
        // may answer by scanning the tenant's machines.
        let by_id = format!("SELECT {MACHINE_COLUMNS} FROM machines WHERE id = ? AND tenant_id = ?");
        let row = sqlx::query(AssertSqlSafe(by_id))
            .bind(id_or_name.to_ascii_lowercase())
            .bind(tenant)
            .fetch_optional(&self.pool)
            .await?;
        if let Some(row) = row {
            return machine_from_row(&row).map(Some);
        }
        let mut named = self.machines_named(tenant, id_or_name).await?;
        if named.len() > 1 {
            // Any agent can report any name: a shared name identifies none of them.
            let candidates = named.into_iter().map(|m| m.id).collect();
            return Err(StoreError::AmbiguousName { name: id_or_name.to_owned(), candidates });
        }
        Ok(named.pop())
    }

    async fn machines(&self, tenant: &str, query: &ListQuery) -> Result<Listed<MachineRecord>> {
        let listed = self
            .list("machines", MACHINE_COLUMNS, filter::MACHINE_COLUMNS, "last_seen DESC, id", tenant, query)
            .await?;
        listed.try_map(machine_from_row)
    }

    async fn update_host_facts(
        &self,
        machine_id: &str,
        f: &HostFacts,
        at: Timestamp,
        audit: Option<&AuditEntry>,
    ) -> Result<()> {
        let ips = serde_json::to_string(&f.ip_addresses).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut tx = self.write().await?;
        sqlx::query(
            "UPDATE machines SET computer_dns_name = ?, os_platform = ?, os_version = ?, os_architecture = ?, \
                 os_build = ?, agent_version = ?, ip_addresses = ?, last_seen = MAX(last_seen, ?) WHERE id = ?",
        )
        .bind(&f.computer_dns_name)
        .bind(&f.os_platform)
        .bind(&f.os_version)
        .bind(&f.os_architecture)
        .bind(f.os_build)
        .bind(&f.agent_version)
        .bind(ips)
        .bind(micros(at))
        .bind(machine_id)
        .execute(&mut *tx)
        .await?;
        insert_audit_opt(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn touch_machine(&self, machine_id: &str, at: Timestamp, ip: Option<&str>) -> Result<()> {
        sqlx::query(
            "UPDATE machines SET last_seen = MAX(last_seen, ?), last_ip_address = COALESCE(?, last_ip_address) \
             WHERE id = ?",
        )
        .bind(micros(at))
        .bind(ip)
        .bind(machine_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn create_action(&self, tenant: &str, a: &MachineAction, audit: Option<&AuditEntry>) -> Result<()> {
        let mut tx = self.write().await?;
        insert_action(&mut tx, tenant, a).await?;
        insert_audit_opt(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn action(&self, tenant: &str, id: Uuid) -> Result<Option<MachineAction>> {
        let sql = format!("SELECT {ACTION_COLUMNS} FROM machine_actions WHERE id = ? AND tenant_id = ?");
        let row = sqlx::query(AssertSqlSafe(sql)).bind(id.to_string()).bind(tenant).fetch_optional(&self.pool).await?;
        row.as_ref().map(action_from_row).transpose()
    }

    async fn actions(&self, tenant: &str, query: &ListQuery) -> Result<Listed<MachineAction>> {
        let listed = self
            .list("machine_actions", ACTION_COLUMNS, filter::ACTION_COLUMNS, "created_at DESC, id DESC", tenant, query)
            .await?;
        listed.try_map(action_from_row)
    }

    async fn transition(
        &self,
        id: Uuid,
        machine_id: Option<&str>,
        change: &Transition,
        audit: Option<&AuditEntry>,
    ) -> Result<Option<MachineAction>> {
        let mut q = QueryBuilder::<Sqlite>::new("");
        push_transition_set(&mut q, change);
        q.push(" WHERE id = ").push_bind(id.to_string());
        if let Some(m) = machine_id {
            q.push(" AND machine_id = ").push_bind(m.to_owned());
        }
        q.push(" AND");
        push_predecessors(&mut q, change.to);
        q.push(format!(" RETURNING {ACTION_COLUMNS}"));
        let mut tx = self.write().await?;
        let Some(row) = q.build().fetch_optional(&mut *tx).await? else {
            return Ok(None);
        };
        insert_audit_opt(&mut tx, audit).await?;
        tx.commit().await?;
        action_from_row(&row).map(Some)
    }

    async fn complete_with_package(
        &self,
        machine_id: &str,
        p: &PackageRecord,
        at: Timestamp,
        audit: Option<&AuditEntry>,
    ) -> Result<Option<MachineAction>> {
        let mut tx = self.write().await?;
        let mut q = QueryBuilder::<Sqlite>::new("");
        push_transition_set(&mut q, &Transition::to(ActionStatus::Succeeded, at));
        q.push(" WHERE id = ").push_bind(p.action_id.to_string());
        q.push(" AND machine_id = ").push_bind(machine_id.to_owned());
        // A cancellation asked for during the upload wins: no package is kept.
        q.push(" AND cancel_requested_at IS NULL AND");
        push_predecessors(&mut q, ActionStatus::Succeeded);
        q.push(format!(" RETURNING {ACTION_COLUMNS}"));
        let Some(row) = q.build().fetch_optional(&mut *tx).await? else {
            return Ok(None);
        };
        let action = action_from_row(&row)?;
        insert_package(&mut tx, p).await?;
        insert_audit_opt(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(Some(action))
    }

    async fn package(&self, tenant: &str, action_id: Uuid) -> Result<Option<PackageRecord>> {
        let sql = format!("SELECT {PACKAGE_COLUMNS} FROM packages WHERE action_id = ? AND tenant_id = ?");
        let row =
            sqlx::query(AssertSqlSafe(sql)).bind(action_id.to_string()).bind(tenant).fetch_optional(&self.pool).await?;
        row.as_ref().map(package_from_row).transpose()
    }

    async fn import_package(
        &self,
        tenant: &str,
        action: &MachineAction,
        package: &PackageRecord,
        audit: Option<&AuditEntry>,
    ) -> Result<()> {
        let mut tx = self.write().await?;
        insert_action(&mut tx, tenant, action).await?;
        insert_package(&mut tx, package).await?;
        insert_audit_opt(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn expired_packages(&self, stored_before: Timestamp, limit: u32) -> Result<Vec<PackageRecord>> {
        let sql = format!(
            "SELECT {PACKAGE_COLUMNS} FROM packages WHERE deleted_at IS NULL AND stored_at < ? \
             ORDER BY stored_at LIMIT ?"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(micros(stored_before))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(package_from_row).collect()
    }

    async fn mark_package_deleted(&self, action_id: Uuid, at: Timestamp) -> Result<()> {
        sqlx::query("UPDATE packages SET deleted_at = ? WHERE action_id = ? AND deleted_at IS NULL")
            .bind(micros(at))
            .bind(action_id.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn request_cancel(
        &self,
        tenant: &str,
        id: Uuid,
        r: &CancelRequest,
        audit: Option<&AuditEntry>,
    ) -> Result<Option<CancelOutcome>> {
        let mut q = QueryBuilder::<Sqlite>::new("");
        let change = Transition {
            cancellation_requestor: Some(r.requestor.clone()),
            cancellation_comment: r.comment.clone(),
            ..Transition::to(ActionStatus::Cancelled, r.at)
        };
        push_transition_set(&mut q, &change);
        q.push(" WHERE id = ").push_bind(id.to_string());
        q.push(" AND tenant_id = ").push_bind(tenant.to_owned());
        q.push(format!(" AND status = 'Pending' RETURNING {ACTION_COLUMNS}"));
        let mut tx = self.write().await?;
        if let Some(row) = q.build().fetch_optional(&mut *tx).await? {
            insert_audit_opt(&mut tx, audit).await?;
            tx.commit().await?;
            return Ok(Some(CancelOutcome::Cancelled(action_from_row(&row)?)));
        }
        // Running: record the first request; the agent confirms the stop.
        let sql = format!(
            "UPDATE machine_actions SET cancel_requested_at = COALESCE(cancel_requested_at, ?), \
                 cancellation_requestor = COALESCE(cancellation_requestor, ?), \
                 cancellation_comment = COALESCE(cancellation_comment, ?) \
             WHERE id = ? AND tenant_id = ? AND status = 'InProgress' RETURNING {ACTION_COLUMNS}"
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(micros(r.at))
            .bind(&r.requestor)
            .bind(&r.comment)
            .bind(id.to_string())
            .bind(tenant)
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(row) = row {
            insert_audit_opt(&mut tx, audit).await?;
            tx.commit().await?;
            return Ok(Some(CancelOutcome::Requested(action_from_row(&row)?)));
        }
        drop(tx);
        Ok(self.action(tenant, id).await?.map(CancelOutcome::AlreadyFinal))
    }

    async fn cancel_requests(&self, machine_id: &str) -> Result<Vec<Uuid>> {
        let rows = sqlx::query(
            "SELECT id FROM machine_actions WHERE machine_id = ? AND status = 'InProgress' \
             AND cancel_requested_at IS NOT NULL ORDER BY cancel_requested_at",
        )
        .bind(machine_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| uuid_column(r, "id")).collect()
    }

    async fn confirm_cancel(
        &self,
        machine_id: &str,
        id: Uuid,
        at: Timestamp,
        audit: Option<&AuditEntry>,
    ) -> Result<Option<MachineAction>> {
        let mut q = QueryBuilder::<Sqlite>::new("");
        push_transition_set(&mut q, &Transition::to(ActionStatus::Cancelled, at));
        q.push(" WHERE id = ").push_bind(id.to_string());
        q.push(" AND machine_id = ").push_bind(machine_id.to_owned());
        q.push(format!(" AND status = 'InProgress' AND cancel_requested_at IS NOT NULL RETURNING {ACTION_COLUMNS}"));
        let mut tx = self.write().await?;
        let Some(row) = q.build().fetch_optional(&mut *tx).await? else {
            return Ok(None);
        };
        insert_audit_opt(&mut tx, audit).await?;
        tx.commit().await?;
        action_from_row(&row).map(Some)
    }

    async fn time_out_pending(&self, created_before: Timestamp, change: &Transition) -> Result<u64> {
        let mut q = QueryBuilder::<Sqlite>::new("");
        push_transition_set(&mut q, change);
        q.push(" WHERE status = 'Pending' AND created_at < ").push_bind(micros(created_before));
        Ok(q.build().execute(&self.pool).await?.rows_affected())
    }

    async fn fail_in_progress(&self, machine_id: &str, change: &Transition) -> Result<Vec<Uuid>> {
        let mut q = QueryBuilder::<Sqlite>::new("");
        push_transition_set(&mut q, change);
        q.push(" WHERE machine_id = ").push_bind(machine_id.to_owned());
        q.push(" AND status = 'InProgress' RETURNING id");
        let rows = q.build().fetch_all(&self.pool).await?;
        rows.iter().map(|r| uuid_column(r, "id")).collect()
    }

    async fn time_out_stalled(
        &self,
        silent_since: Timestamp,
        started_before: Timestamp,
        change: &Transition,
    ) -> Result<u64> {
        let mut q = QueryBuilder::<Sqlite>::new("");
        push_transition_set(&mut q, change);
        q.push(" WHERE status = 'InProgress' AND (updated_at < ");
        q.push_bind(micros(started_before));
        q.push(" OR machine_id IN (SELECT id FROM machines WHERE last_seen < ");
        q.push_bind(micros(silent_since));
        q.push("))");
        Ok(q.build().execute(&self.pool).await?.rows_affected())
    }

    async fn enroll_with_token(&self, e: &TokenEnrollment) -> Result<EnrollOutcome> {
        let m = &e.machine;
        let mut tx = self.write().await?;
        // The token's use is taken first, by a write: concurrent enrollments queue on the
        // database's write lock, so exactly as many succeed as the token has uses.
        let used = sqlx::query(
            "UPDATE enrollment_tokens SET uses = uses + 1, last_used_at = ? WHERE token_hash = ? AND tenant_id = ? \
             AND revoked_at IS NULL AND expires_at > ? AND uses < uses_allowed",
        )
        .bind(micros(m.at))
        .bind(&e.token_hash)
        .bind(&m.tenant_id)
        .bind(micros(m.at))
        .execute(&mut *tx)
        .await?;
        if used.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(EnrollOutcome::TokenUnusable);
        }
        let existing = sqlx::query("SELECT tenant_id, agent_public_key, identity_reset_at FROM machines WHERE id = ?")
            .bind(&m.id)
            .fetch_optional(&mut *tx)
            .await?;
        let made: fn(MachineRecord) -> EnrollOutcome = match existing {
            None => {
                insert_machine(&mut tx, m).await?;
                EnrollOutcome::Created
            }
            Some(row) => {
                let tenant: String = row.try_get("tenant_id")?;
                let key: Option<String> = row.try_get("agent_public_key")?;
                let reset: Option<i64> = row.try_get("identity_reset_at")?;
                let refusal = if tenant != m.tenant_id {
                    Some(EnrollOutcome::MachineEnrolled)
                } else if reset.is_some() {
                    None
                } else {
                    match &e.proof {
                        Some(proof) if key.as_deref() == Some(proof.key.as_str()) => {
                            let consumed = sqlx::query(
                                "DELETE FROM enroll_challenges WHERE machine_id = ? AND nonce = ? AND expires_at > ?",
                            )
                            .bind(&m.id)
                            .bind(&proof.nonce)
                            .bind(micros(m.at))
                            .execute(&mut *tx)
                            .await?;
                            (consumed.rows_affected() != 1).then_some(EnrollOutcome::ChallengeInvalid)
                        }
                        _ => Some(EnrollOutcome::MachineEnrolled),
                    }
                };
                if let Some(refusal) = refusal {
                    tx.rollback().await?;
                    return Ok(refusal);
                }
                rekey_machine(&mut tx, m).await?;
                if reset.is_some() { EnrollOutcome::Recreated } else { EnrollOutcome::Rekeyed }
            }
        };
        let machine = machine_in(&mut tx, &m.id).await?;
        insert_audit_opt(&mut tx, e.audit.as_ref()).await?;
        tx.commit().await?;
        Ok(made(machine))
    }

    async fn create_enroll_challenge(&self, tenant: &str, c: &EnrollChallengeRecord) -> Result<bool> {
        let mut tx = self.write().await?;
        let done = sqlx::query(
            "INSERT INTO enroll_challenges (machine_id, nonce, expires_at) \
             SELECT id, ?, ? FROM machines WHERE id = ? AND tenant_id = ? AND agent_public_key IS NOT NULL \
                 AND identity_reset_at IS NULL \
             ON CONFLICT (machine_id) DO UPDATE SET nonce = excluded.nonce, expires_at = excluded.expires_at",
        )
        .bind(&c.nonce)
        .bind(micros(c.expires_at))
        .bind(&c.machine_id)
        .bind(tenant)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    async fn reset_machine_identity(
        &self,
        tenant: &str,
        machine_id: &str,
        entry: &AuditEntry,
    ) -> Result<Option<MachineRecord>> {
        let id = machine_id.to_ascii_lowercase();
        let mut tx = self.write().await?;
        // A hash no secret has: the old credential, and any other, is refused from now on.
        let void = format!("void:{}", Uuid::new_v4());
        let done = sqlx::query(
            "UPDATE machines SET credential_hash = ?, agent_public_key = NULL, identity_reset_at = ? \
             WHERE id = ? AND tenant_id = ?",
        )
        .bind(void)
        .bind(micros(entry.at))
        .bind(&id)
        .bind(tenant)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(None);
        }
        sqlx::query("DELETE FROM enroll_challenges WHERE machine_id = ?").bind(&id).execute(&mut *tx).await?;
        insert_audit(&mut tx, entry).await?;
        let machine = machine_in(&mut tx, &id).await?;
        tx.commit().await?;
        Ok(Some(machine))
    }

    async fn enrollment_tokens(&self, tenant: &str) -> Result<Vec<EnrollmentTokenRecord>> {
        let sql =
            format!("SELECT {TOKEN_COLUMNS} FROM enrollment_tokens WHERE tenant_id = ? ORDER BY created_at DESC, id");
        let rows = sqlx::query(AssertSqlSafe(sql)).bind(tenant).fetch_all(&self.pool).await?;
        rows.iter().map(token_from_row).collect()
    }

    async fn revoke_enrollment_token(
        &self,
        tenant: &str,
        id: Uuid,
        at: Timestamp,
    ) -> Result<Option<EnrollmentTokenRecord>> {
        let mut tx = self.write().await?;
        sqlx::query("UPDATE enrollment_tokens SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ? AND tenant_id = ?")
            .bind(micros(at))
            .bind(id.to_string())
            .bind(tenant)
            .execute(&mut *tx)
            .await?;
        let sql = format!("SELECT {TOKEN_COLUMNS} FROM enrollment_tokens WHERE id = ? AND tenant_id = ?");
        let row = sqlx::query(AssertSqlSafe(sql)).bind(id.to_string()).bind(tenant).fetch_optional(&mut *tx).await?;
        tx.commit().await?;
        row.as_ref().map(token_from_row).transpose()
    }

    async fn machines_named(&self, tenant: &str, name: &str) -> Result<Vec<MachineRecord>> {
        // Bounded: the list only ever names candidates in an error.
        let sql = format!(
            "SELECT {MACHINE_COLUMNS} FROM machines WHERE tenant_id = ? AND computer_dns_name = ? COLLATE NOCASE \
             ORDER BY last_seen DESC, id LIMIT 100"
        );
        let rows = sqlx::query(AssertSqlSafe(sql)).bind(tenant).bind(name).fetch_all(&self.pool).await?;
        rows.iter().map(machine_from_row).collect()
    }

    async fn claim_leased(
        &self,
        machine_id: &str,
        at: Timestamp,
        lease_until: Option<Timestamp>,
        audit: Option<&(dyn for<'c> Fn(&'c Claim) -> AuditEntry + Sync)>,
    ) -> Result<Option<Claim>> {
        // The UPDATE comes first so the transaction takes the write lock at once (a read
        // first could not be upgraded when another writer got in between).
        let sql = format!(
            "UPDATE machine_actions SET status = 'InProgress', lease_expires_at = ?, accepted_at = ?, \
                 offers = offers + 1, \
                 updated_at = CASE WHEN status = 'Pending' THEN ? ELSE updated_at END \
             WHERE id = (SELECT id FROM machine_actions WHERE machine_id = ? AND \
                             (status = 'Pending' OR (status = 'InProgress' AND accepted_at IS NULL \
                              AND cancel_requested_at IS NULL AND lease_expires_at <= ?)) \
                         ORDER BY status = 'Pending', created_at LIMIT 1) \
               AND status IN ('Pending', 'InProgress') \
             RETURNING {ACTION_COLUMNS}, offers"
        );
        let mut tx = self.write().await?;
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(lease_until.map(micros))
            .bind(lease_until.is_none().then(|| micros(at)))
            .bind(micros(at))
            .bind(machine_id)
            .bind(micros(at))
            .fetch_optional(&mut *tx)
            .await?;
        let claim = match row {
            Some(row) => {
                let offers: i64 = row.try_get("offers")?;
                Some(Claim { action: action_from_row(&row)?, offers: u32::try_from(offers).unwrap_or(u32::MAX) })
            }
            None => None,
        };
        if let (Some(claim), Some(entry)) = (&claim, audit) {
            insert_audit(&mut tx, &entry(claim)).await?;
        }
        tx.commit().await?;
        Ok(claim)
    }

    async fn accept_action(
        &self,
        machine_id: &str,
        id: Uuid,
        at: Timestamp,
        audit: Option<&AuditEntry>,
    ) -> Result<bool> {
        let mut tx = self.write().await?;
        let changed = sqlx::query(
            "UPDATE machine_actions SET accepted_at = COALESCE(accepted_at, ?) \
             WHERE id = ? AND machine_id = ? AND status = 'InProgress'",
        )
        .bind(micros(at))
        .bind(id.to_string())
        .bind(machine_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed > 0 {
            insert_audit_opt(&mut tx, audit).await?;
        }
        tx.commit().await?;
        Ok(changed > 0)
    }

    async fn fail_in_progress_except(&self, machine_id: &str, keep: &[Uuid], change: &Transition) -> Result<Vec<Uuid>> {
        let mut q = QueryBuilder::<Sqlite>::new("");
        push_transition_set(&mut q, change);
        q.push(" WHERE machine_id = ").push_bind(machine_id.to_owned());
        q.push(" AND status = 'InProgress'");
        if !keep.is_empty() {
            q.push(" AND id NOT IN (");
            let mut list = q.separated(", ");
            for id in keep {
                list.push_bind(id.to_string());
            }
            list.push_unseparated(")");
        }
        q.push(" RETURNING id");
        let mut tx = self.write().await?;
        let rows = q.build().fetch_all(&mut *tx).await?;
        let failed = rows.iter().map(|r| uuid_column(r, "id")).collect::<Result<Vec<_>>>()?;
        tx.commit().await?;
        Ok(failed)
    }

    async fn next_lease_end(&self, machine_id: &str) -> Result<Option<Timestamp>> {
        let end: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(lease_expires_at) FROM machine_actions WHERE machine_id = ? AND status = 'InProgress' \
             AND accepted_at IS NULL AND cancel_requested_at IS NULL",
        )
        .bind(machine_id)
        .fetch_one(&self.pool)
        .await?;
        opt_from_micros(end)
    }

    async fn package_by_sha256(&self, tenant: &str, sha256: &str) -> Result<Option<PackageRecord>> {
        let sql = format!(
            "SELECT {PACKAGE_COLUMNS} FROM packages WHERE tenant_id = ? AND sha256 = ? AND deleted_at IS NULL LIMIT 1"
        );
        let row = sqlx::query(AssertSqlSafe(sql)).bind(tenant).bind(sha256).fetch_optional(&self.pool).await?;
        row.as_ref().map(package_from_row).transpose()
    }
}
