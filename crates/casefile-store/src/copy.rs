//! `casefile store copy`: moves an embedded installation (SQLite) into an empty
//! PostgreSQL database, table by table, then checks what arrived.
//!
//! * The source is read in one snapshot (one read transaction), 500 rows at a time by
//!   rowid, so memory stays bounded whatever the size.
//! * The target is written in ONE transaction, which also holds exclusive locks on every
//!   table: a failed or refused copy leaves the target exactly as it was (empty), and no
//!   server can write into it meanwhile. Counts and a sample of rows (first, last and
//!   about twenty spread by key) are compared inside that transaction, so a mismatch rolls
//!   everything back. After the commit the same records are read back through the
//!   [`Store`] traits of both backends and compared; were they to differ, the error says
//!   the target was written and must be dropped.
//! * Identity columns (`audit_log.seq`, `device_groups.id`) keep their values; their
//!   sequences are moved past the largest one.
//! * The table list below is the schema both migration sets end in. The copy refuses a
//!   database whose tables or columns differ from it, so a later migration cannot be
//!   copied without its column.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, Sqlite};
use uuid::Uuid;

use crate::{AuditFilter, Backend, ListQuery, PgStore, Schema, SqliteStore, Store, StoreError};

/// Rows per read and per INSERT statement.
const BATCH: i64 = 500;
/// Rows compared field by field per table, besides the first and the last.
const SAMPLES: i64 = 20;

/// How a column is stored in SQLite and what it becomes in PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Blob,
    /// `INTEGER` → `bigint`.
    Int,
    /// `INTEGER` → `integer` (refused when it does not fit).
    Int4,
    /// Microseconds since the epoch → `timestamptz`.
    Time,
    /// Text → `uuid`.
    Uuid,
    /// Text → `json` (kept as written).
    Json,
    /// Text → `jsonb`.
    Jsonb,
}

use Kind::*;

struct Table {
    name: &'static str,
    /// Columns naming one row in PostgreSQL (the sample is looked up by them).
    key: &'static [&'static str],
    /// A column filled by an identity sequence.
    identity: Option<&'static str>,
    columns: &'static [(&'static str, Kind)],
}

/// Every table, parents before children (foreign keys: machines ← machine_actions ←
/// packages, machines ← enroll_challenges; a machine's device group is no foreign key).
const TABLES: &[Table] = &[
    Table {
        name: "signing_keys",
        key: &["kid"],
        identity: None,
        columns: &[
            ("kid", Text),
            ("purpose", Text),
            ("algorithm", Text),
            ("private_key", Blob),
            ("public_key", Blob),
            ("created_at", Time),
            ("retired_at", Time),
        ],
    },
    Table {
        name: "enrollment_tokens",
        key: &["id"],
        identity: None,
        columns: &[
            ("id", Uuid),
            ("tenant_id", Text),
            ("token_hash", Text),
            ("created_at", Time),
            ("expires_at", Time),
            ("revoked_at", Time),
            ("uses_allowed", Int),
            ("uses", Int),
            ("last_used_at", Time),
        ],
    },
    Table {
        name: "device_groups",
        key: &["id"],
        identity: Some("id"),
        columns: &[
            ("id", Int),
            ("tenant_id", Text),
            ("name", Text),
            ("rank", Int),
            ("rules", Jsonb),
            ("user_groups", Jsonb),
        ],
    },
    Table {
        name: "machines",
        key: &["id"],
        identity: None,
        columns: &[
            ("id", Text),
            ("tenant_id", Text),
            ("computer_dns_name", Text),
            ("os_platform", Text),
            ("os_version", Text),
            ("os_architecture", Text),
            ("os_build", Int),
            ("agent_version", Text),
            ("last_ip_address", Text),
            ("ip_addresses", Jsonb),
            ("machine_tags", Jsonb),
            ("first_seen", Time),
            ("last_seen", Time),
            ("credential_hash", Text),
            ("agent_public_key", Text),
            ("rbac_group_id", Int),
            ("identity_reset_at", Time),
        ],
    },
    Table {
        name: "machine_actions",
        key: &["id"],
        identity: None,
        columns: &[
            ("id", Uuid),
            ("tenant_id", Text),
            ("machine_id", Text),
            ("type", Text),
            ("status", Text),
            ("title", Text),
            ("requestor", Text),
            ("requestor_comment", Text),
            ("external_id", Text),
            ("request_source", Text),
            ("computer_dns_name", Text),
            ("created_at", Time),
            ("updated_at", Time),
            ("cancellation_requestor", Text),
            ("cancellation_comment", Text),
            ("cancelled_at", Time),
            ("error_hresult", Int4),
            ("troubleshoot_info", Text),
            ("cancel_requested_at", Time),
            ("lease_expires_at", Time),
            ("accepted_at", Time),
            ("offers", Int),
            ("profile", Text),
            ("progress", Jsonb),
        ],
    },
    Table {
        name: "packages",
        key: &["action_id"],
        identity: None,
        columns: &[
            ("action_id", Uuid),
            ("tenant_id", Text),
            ("blob_key", Text),
            ("size", Int),
            ("sha256", Text),
            ("stored_at", Time),
            ("deleted_at", Time),
        ],
    },
    Table {
        name: "applications",
        key: &["client_id"],
        identity: None,
        columns: &[
            ("client_id", Uuid),
            ("tenant_id", Text),
            ("name", Text),
            ("secret_hash", Text),
            ("roles", Jsonb),
            ("created_at", Time),
            ("secret_rotated_at", Time),
            ("disabled_at", Time),
        ],
    },
    Table {
        name: "audit_log",
        key: &["seq"],
        identity: Some("seq"),
        columns: &[
            ("seq", Int),
            ("at", Time),
            ("tenant_id", Text),
            ("actor_kind", Text),
            ("actor", Text),
            ("event", Text),
            ("target", Text),
            ("outcome", Text),
            ("http_status", Int4),
            ("source_ip", Text),
            ("correlation_id", Text),
            ("detail", Json),
        ],
    },
    Table {
        name: "rbac_roles",
        key: &["tenant_id", "name"],
        identity: None,
        columns: &[("tenant_id", Text), ("name", Text), ("permissions", Jsonb), ("users", Jsonb), ("groups", Jsonb)],
    },
    Table {
        name: "console_users",
        key: &["id"],
        identity: None,
        columns: &[
            ("id", Uuid),
            ("tenant_id", Text),
            ("name", Text),
            ("password_hash", Text),
            ("created_at", Time),
            ("password_changed_at", Time),
            ("disabled_at", Time),
            ("failed_logins", Int),
            ("last_failed_at", Time),
        ],
    },
    Table {
        name: "ungrouped_access",
        key: &["tenant_id"],
        identity: None,
        columns: &[("tenant_id", Text), ("user_groups", Jsonb)],
    },
    Table {
        name: "enroll_challenges",
        key: &["machine_id"],
        identity: None,
        columns: &[("machine_id", Text), ("nonce", Text), ("expires_at", Time)],
    },
];

/// Tables that are no part of the copy: the migrators' own, SQLite's internals, and
/// PostgreSQL's scratch rate-limit counters (they start empty on any new database).
/// Not copied: bookkeeping, and what only lives minutes (rate windows; console sessions,
/// whose users sign in again).
const NOT_COPIED: &[&str] =
    &["_sqlx_migrations", "sqlite_sequence", "sqlite_stat1", "sqlite_stat4", "rate_limit_windows", "console_sessions"];

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("{0}")]
    Unsupported(String),
    #[error("there is no SQLite database at {0}")]
    NoSource(String),
    #[error(
        "the target database is not empty: table {0} has rows. Copy only into a new, empty database \
         (nothing was written)"
    )]
    TargetNotEmpty(String),
    #[error("the {which} database's schema is not this casefile's: {state} (nothing was written)")]
    Schema { which: &'static str, state: String },
    #[error("{table}, row {rowid}, column {column}: {why} (nothing was written)")]
    Row { table: &'static str, rowid: i64, column: &'static str, why: String },
    #[error("verification failed: {0}")]
    Verify(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for CopyError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(e.into())
    }
}

/// Every statement here is assembled from the constant table and column names above,
/// never from input.
fn safe(sql: String) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(sql)
}

type Result<T, E = CopyError> = std::result::Result<T, E>;

/// What was copied, per table.
#[derive(Debug, Clone)]
pub struct CopyReport {
    pub tables: Vec<TableReport>,
    /// Records read back through the stores' own queries and found equal.
    pub records_compared: usize,
}

#[derive(Debug, Clone)]
pub struct TableReport {
    pub table: &'static str,
    /// Rows in the source, and so in the target (the counts are checked).
    pub rows: i64,
    /// Rows compared field by field.
    pub sampled: usize,
}

/// One value, as both databases are read back into it.
#[derive(Debug, Clone, PartialEq)]
enum Cell {
    Null,
    Text(String),
    Blob(Vec<u8>),
    Int(i64),
    Time(DateTime<Utc>),
    Uuid(Uuid),
    /// JSON as written; compared by value (`jsonb` reorders keys and spacing).
    Json(String),
}

impl Cell {
    fn same(&self, other: &Cell) -> bool {
        match (self, other) {
            (Cell::Json(a), Cell::Json(b)) => {
                match (serde_json::from_str::<serde_json::Value>(a), serde_json::from_str::<serde_json::Value>(b)) {
                    (Ok(a), Ok(b)) => a == b,
                    _ => a == b,
                }
            }
            (a, b) => a == b,
        }
    }
}

/// Copies the SQLite database `from` into the empty PostgreSQL database `to` (migrating
/// it first when it has no table at all) and verifies the copy. The caller makes sure no
/// server writes into the source meanwhile (its data directory's lock).
pub async fn copy(from: &str, to: &str) -> Result<CopyReport> {
    let source_path = match Backend::of(from)? {
        Backend::Sqlite(path) => path,
        Backend::Postgres(_) => {
            return Err(CopyError::Unsupported("copy FROM a sqlite:// database (the embedded one)".into()));
        }
    };
    let target_url = match Backend::of(to)? {
        Backend::Postgres(url) => url,
        Backend::Sqlite(_) => return Err(CopyError::Unsupported("copy TO a postgres:// database".into())),
    };
    if !source_path.is_file() {
        return Err(CopyError::NoSource(source_path.display().to_string()));
    }
    let source = SqliteStore::open_unmigrated(&source_path).await?;
    match source.schema().await? {
        Schema::Current => {}
        other => {
            return Err(CopyError::Schema {
                which: "source",
                state: format!("{other:?}; run `casefile migrate` on it first"),
            });
        }
    }
    let target = PgStore::open_unmigrated(&target_url).await?;
    match target.schema().await? {
        Schema::Current => {}
        Schema::Empty => {
            target.migrate().await?;
        }
        other => return Err(CopyError::Schema { which: "target", state: format!("{other:?}") }),
    }
    check_tables(&source, &target).await?;
    let tables = copy_tables(&source, &target).await?;
    let records_compared = compare_records(&source, &target).await?;
    source.pool().close().await;
    target.pool().close().await;
    Ok(CopyReport { tables, records_compared })
}

/// Both schemas hold exactly the tables and columns this copy knows.
async fn check_tables(source: &SqliteStore, target: &PgStore) -> Result<()> {
    let known: BTreeSet<&str> = TABLES.iter().map(|t| t.name).collect();
    let sqlite_tables: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table'").fetch_all(source.pool()).await?;
    let pg_tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = current_schema()",
    )
    .fetch_all(target.pool())
    .await?;
    for (which, tables) in [("source", &sqlite_tables), ("target", &pg_tables)] {
        for t in tables.iter().filter(|t| !NOT_COPIED.contains(&t.as_str())) {
            if !known.contains(t.as_str()) {
                return Err(CopyError::Schema { which, state: format!("table {t} is unknown to this copy") });
            }
        }
    }
    for table in TABLES {
        let expected: BTreeSet<&str> = table.columns.iter().map(|(c, _)| *c).collect();
        let sqlite: BTreeSet<String> =
            sqlx::query_scalar(safe(format!("SELECT name FROM pragma_table_info('{}')", table.name)))
                .fetch_all(source.pool())
                .await?
                .into_iter()
                .collect();
        let pg: BTreeSet<String> = sqlx::query_scalar(
            "SELECT column_name::text FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = $1",
        )
        .bind(table.name)
        .fetch_all(target.pool())
        .await?
        .into_iter()
        .collect();
        for (which, found) in [("source", sqlite), ("target", pg)] {
            let found: BTreeSet<&str> = found.iter().map(String::as_str).collect();
            if found != expected {
                return Err(CopyError::Schema {
                    which,
                    state: format!(
                        "table {} has columns {:?}, this copy knows {:?}",
                        table.name,
                        found.iter().collect::<Vec<_>>(),
                        expected.iter().collect::<Vec<_>>()
                    ),
                });
            }
        }
    }
    Ok(())
}

fn quoted(columns: &[(&str, Kind)]) -> String {
    columns.iter().map(|(c, _)| format!("\"{c}\"")).collect::<Vec<_>>().join(", ")
}

async fn copy_tables(source: &SqliteStore, target: &PgStore) -> Result<Vec<TableReport>> {
    // One snapshot of the source for reading and counting.
    let mut src = source.pool().begin().await?;
    let mut dst = target.pool().begin().await?;
    // A server (or another copy) using the target waits for this one, or this one stops.
    sqlx::query("SET LOCAL lock_timeout = '10s'").execute(&mut *dst).await?;
    let names = TABLES.iter().map(|t| t.name).collect::<Vec<_>>().join(", ");
    sqlx::query(safe(format!("LOCK TABLE {names} IN EXCLUSIVE MODE"))).execute(&mut *dst).await?;
    for table in TABLES {
        let any: bool = sqlx::query_scalar(safe(format!("SELECT EXISTS (SELECT 1 FROM {})", table.name)))
            .fetch_one(&mut *dst)
            .await?;
        if any {
            return Err(CopyError::TargetNotEmpty(table.name.to_owned()));
        }
    }
    let mut reports = Vec::new();
    for table in TABLES {
        let select = format!(
            "SELECT rowid AS copy_rowid, {} FROM {} WHERE rowid > ? ORDER BY rowid LIMIT {BATCH}",
            quoted(table.columns),
            table.name
        );
        let mut after = i64::MIN;
        let mut copied = 0i64;
        loop {
            let rows = sqlx::query(safe(select.clone())).bind(after).fetch_all(&mut *src).await?;
            let Some(last) = rows.last() else { break };
            after = last.try_get("copy_rowid")?;
            let cells = rows.iter().map(|r| sqlite_cells(table, r)).collect::<Result<Vec<_>>>()?;
            insert(table, &cells, &mut dst).await?;
            copied += rows.len() as i64;
        }
        if let Some(column) = table.identity {
            sqlx::query(safe(format!(
                "SELECT setval(pg_get_serial_sequence('{0}', '{column}'), max({column})) FROM {0} HAVING max({column}) IS NOT NULL",
                table.name
            )))
            .execute(&mut *dst)
            .await?;
        }
        let counted: i64 =
            sqlx::query_scalar(safe(format!("SELECT COUNT(*) FROM {}", table.name))).fetch_one(&mut *src).await?;
        let arrived: i64 =
            sqlx::query_scalar(safe(format!("SELECT COUNT(*) FROM {}", table.name))).fetch_one(&mut *dst).await?;
        if counted != copied || arrived != copied {
            return Err(CopyError::Verify(format!(
                "{}: {counted} rows in the source, {copied} read, {arrived} in the target (nothing was written)",
                table.name
            )));
        }
        let sampled = compare_sample(table, copied, &mut src, &mut dst).await?;
        reports.push(TableReport { table: table.name, rows: copied, sampled });
    }
    dst.commit().await?;
    src.rollback().await?;
    Ok(reports)
}

fn sqlite_cells(table: &Table, row: &SqliteRow) -> Result<Vec<Cell>> {
    let rowid: i64 = row.try_get("copy_rowid")?;
    table
        .columns
        .iter()
        .map(|&(column, kind)| {
            let bad = |why: String| CopyError::Row { table: table.name, rowid, column, why };
            let cell = match kind {
                Text => row.try_get::<Option<String>, _>(column).map(|v| v.map(Cell::Text)),
                Json | Jsonb => row.try_get::<Option<String>, _>(column).map(|v| v.map(Cell::Json)),
                Blob => row.try_get::<Option<Vec<u8>>, _>(column).map(|v| v.map(Cell::Blob)),
                Int | Int4 => row.try_get::<Option<i64>, _>(column).map(|v| v.map(Cell::Int)),
                Time => match row.try_get::<Option<i64>, _>(column) {
                    Ok(Some(us)) => DateTime::<Utc>::from_timestamp_micros(us)
                        .map(|t| Some(Cell::Time(t)))
                        .ok_or_else(|| sqlx::Error::Decode(format!("timestamp {us} out of range").into())),
                    Ok(None) => Ok(None),
                    Err(e) => Err(e),
                },
                Kind::Uuid => match row.try_get::<Option<String>, _>(column) {
                    Ok(Some(raw)) => uuid::Uuid::parse_str(&raw)
                        .map(|u| Some(Cell::Uuid(u)))
                        .map_err(|e| sqlx::Error::Decode(format!("'{raw}' is not a uuid: {e}").into())),
                    Ok(None) => Ok(None),
                    Err(e) => Err(e),
                },
            };
            let cell = cell.map_err(|e| bad(e.to_string()))?.unwrap_or(Cell::Null);
            if let (Int4, Cell::Int(v)) = (kind, &cell) {
                i32::try_from(*v).map_err(|_| bad(format!("{v} does not fit PostgreSQL's integer")))?;
            }
            Ok(cell)
        })
        .collect()
}

/// The placeholder of a value of `kind`, cast where PostgreSQL needs to be told.
fn placeholder(n: usize, kind: Kind) -> String {
    match kind {
        Json => format!("CAST(${n} AS json)"),
        Jsonb => format!("CAST(${n} AS jsonb)"),
        _ => format!("${n}"),
    }
}

fn bind<'q>(
    q: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    kind: Kind,
    cell: &Cell,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    match (kind, cell) {
        (Text | Json | Jsonb, Cell::Text(v) | Cell::Json(v)) => q.bind(v.clone()),
        (Text | Json | Jsonb, _) => q.bind(None::<String>),
        (Blob, Cell::Blob(v)) => q.bind(v.clone()),
        (Blob, _) => q.bind(None::<Vec<u8>>),
        (Int, Cell::Int(v)) => q.bind(*v),
        (Int, _) => q.bind(None::<i64>),
        // Checked to fit when read.
        (Int4, Cell::Int(v)) => q.bind(*v as i32),
        (Int4, _) => q.bind(None::<i32>),
        (Time, Cell::Time(v)) => q.bind(*v),
        (Time, _) => q.bind(None::<DateTime<Utc>>),
        (Kind::Uuid, Cell::Uuid(v)) => q.bind(*v),
        (Kind::Uuid, _) => q.bind(None::<Uuid>),
    }
}

async fn insert(table: &Table, rows: &[Vec<Cell>], dst: &mut sqlx::PgConnection) -> Result<()> {
    let width = table.columns.len();
    let values = (0..rows.len())
        .map(|r| {
            let row = table
                .columns
                .iter()
                .enumerate()
                .map(|(c, &(_, kind))| placeholder(r * width + c + 1, kind))
                .collect::<Vec<_>>();
            format!("({})", row.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!("INSERT INTO {} ({}) VALUES {values}", table.name, quoted(table.columns));
    let mut q = sqlx::query(safe(sql.clone()));
    for row in rows {
        for (cell, &(_, kind)) in row.iter().zip(table.columns) {
            q = bind(q, kind, cell);
        }
    }
    q.execute(dst).await?;
    Ok(())
}

/// Compares the first, the last and about [`SAMPLES`] rows spread between them, field by
/// field, looked up in the target by their key. Returns how many were compared.
async fn compare_sample(
    table: &Table,
    rows: i64,
    src: &mut sqlx::Transaction<'static, Sqlite>,
    dst: &mut sqlx::Transaction<'static, sqlx::Postgres>,
) -> Result<usize> {
    if rows == 0 {
        return Ok(0);
    }
    let mut offsets: BTreeSet<i64> = (0..SAMPLES).map(|i| i * rows / SAMPLES).collect();
    offsets.insert(rows - 1);
    let select_src = format!(
        "SELECT rowid AS copy_rowid, {} FROM {} ORDER BY rowid LIMIT 1 OFFSET ?",
        quoted(table.columns),
        table.name
    );
    let read_back = table
        .columns
        .iter()
        .map(|(c, k)| match k {
            Json | Jsonb => format!("\"{c}\"::text AS \"{c}\""),
            _ => format!("\"{c}\""),
        })
        .collect::<Vec<_>>()
        .join(", ");
    let mut compared = 0;
    for offset in offsets {
        let row = sqlx::query(safe(select_src.clone())).bind(offset).fetch_one(&mut **src).await?;
        let want = sqlite_cells(table, &row)?;
        let mut sql = format!("SELECT {read_back} FROM {} WHERE ", table.name);
        let mut key_cells = Vec::new();
        for (i, key) in table.key.iter().enumerate() {
            let at = table.columns.iter().position(|(c, _)| c == key).expect("a key is a column");
            if i > 0 {
                sql.push_str(" AND ");
            }
            sql.push_str(&format!("\"{key}\" = {}", placeholder(i + 1, table.columns[at].1)));
            key_cells.push((table.columns[at].1, want[at].clone()));
        }
        let mut q = sqlx::query(safe(sql.clone()));
        for (kind, cell) in &key_cells {
            q = bind(q, *kind, cell);
        }
        let found = q.fetch_optional(&mut **dst).await?.ok_or_else(|| {
            CopyError::Verify(format!("{}: the row at position {offset} is missing in the target", table.name))
        })?;
        let got = pg_cells(table, &found)?;
        for (((column, _), a), b) in table.columns.iter().zip(&want).zip(&got) {
            if !a.same(b) {
                return Err(CopyError::Verify(format!(
                    "{}, row at position {offset}, column {column}: {a:?} in the source, {b:?} in the target \
                     (nothing was written)",
                    table.name
                )));
            }
        }
        compared += 1;
    }
    Ok(compared)
}

fn pg_cells(table: &Table, row: &PgRow) -> Result<Vec<Cell>> {
    table
        .columns
        .iter()
        .map(|&(column, kind)| {
            let cell = match kind {
                Text => row.try_get::<Option<String>, _>(column)?.map(Cell::Text),
                Json | Jsonb => row.try_get::<Option<String>, _>(column)?.map(Cell::Json),
                Blob => row.try_get::<Option<Vec<u8>>, _>(column)?.map(Cell::Blob),
                Int => row.try_get::<Option<i64>, _>(column)?.map(Cell::Int),
                Int4 => row.try_get::<Option<i32>, _>(column)?.map(|v| Cell::Int(v.into())),
                Time => row.try_get::<Option<DateTime<Utc>>, _>(column)?.map(Cell::Time),
                Kind::Uuid => row.try_get::<Option<Uuid>, _>(column)?.map(Cell::Uuid),
            };
            Ok(cell.unwrap_or(Cell::Null))
        })
        .collect()
}

/// Reads the same records through both stores' own queries (what a server would serve)
/// and compares them: every tenant's newest actions and machines with their packages,
/// and the first and last entries of the audit trail.
async fn compare_records(source: &SqliteStore, target: &PgStore) -> Result<usize> {
    let written = |what: String| {
        CopyError::Verify(format!(
            "{what}. The target WAS written: drop and recreate it before copying again, and do not use it"
        ))
    };
    let (a, b): (&dyn Store, &dyn Store) = (source, target);
    let mut compared = 0;
    let tenants: Vec<String> =
        sqlx::query_scalar("SELECT tenant_id FROM machines UNION SELECT tenant_id FROM machine_actions")
            .fetch_all(source.pool())
            .await?;
    for raw in tenants {
        let tenant = crate::TenantId::try_from(raw).map_err(StoreError::Corrupt)?;
        let query = ListQuery::first(crate::query::MAX_TOP);
        let (left, right) = (a.actions(&tenant, &query).await?, b.actions(&tenant, &query).await?);
        if left.items != right.items || left.more != right.more {
            return Err(written(format!("the actions of tenant {tenant} read back differently")));
        }
        for action in left.items.iter().take(50) {
            let (l, r) = (a.package(&tenant, action.id).await?, b.package(&tenant, action.id).await?);
            if format!("{l:?}") != format!("{r:?}") {
                return Err(written(format!("the package of action {} reads back differently", action.id)));
            }
            compared += 1;
        }
        compared += left.items.len();
        let (left, right) = (a.machines(&tenant, &query).await?, b.machines(&tenant, &query).await?);
        if format!("{:?}", left.items) != format!("{:?}", right.items) {
            return Err(written(format!("the machines of tenant {tenant} read back differently")));
        }
        compared += left.items.len();
    }
    let last: Option<i64> = sqlx::query_scalar("SELECT max(seq) FROM audit_log").fetch_one(source.pool()).await?;
    for after_seq in [None, last.map(|l| l - 100)] {
        let filter = AuditFilter { after_seq, limit: 100, ..Default::default() };
        let (left, right) = (a.audit(&filter).await?, b.audit(&filter).await?);
        if left != right {
            return Err(written("the audit trail reads back differently".into()));
        }
        compared += left.len();
    }
    Ok(compared)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bad value in the last batch of a table stops the copy with its place named, and
    /// the transaction leaves the target empty: the rows of earlier batches and tables too.
    #[tokio::test]
    async fn a_bad_row_late_in_the_copy_leaves_the_target_empty() {
        let Some(target) = casefile_testkit::pg::database() else { return };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("casefile.db");
        let source = SqliteStore::open(&path).await.unwrap();
        sqlx::query(
            "INSERT INTO signing_keys (kid, purpose, algorithm, private_key, public_key, created_at) \
             VALUES ('k1', 'jwt', 'EdDSA', x'00ff', x'01', 1)",
        )
        .execute(source.pool())
        .await
        .unwrap();
        for i in 0..1200 {
            sqlx::query(
                "INSERT INTO audit_log (at, actor_kind, actor, event, outcome) VALUES (?, 'user', 'a', 'e', 'ok')",
            )
            .bind(i as i64)
            .execute(source.pool())
            .await
            .unwrap();
        }
        // SQLite's type affinity lets text into an INTEGER column.
        sqlx::query("INSERT INTO audit_log (at, actor_kind, actor, event, outcome) VALUES ('yesterday', 'user', 'a', 'e', 'ok')")
            .execute(source.pool())
            .await
            .unwrap();
        source.pool().close().await;
        let from = format!("sqlite://{}", path.display());
        let err = copy(&from, &target.url).await.unwrap_err();
        assert!(matches!(err, CopyError::Row { table: "audit_log", column: "at", rowid: 1201, .. }), "{err}");
        assert!(err.to_string().contains("nothing was written"), "{err}");
        let pg = PgStore::open_unmigrated(&target.url).await.unwrap();
        for table in ["signing_keys", "audit_log"] {
            let n: i64 =
                sqlx::query_scalar(safe(format!("SELECT COUNT(*) FROM {table}"))).fetch_one(pg.pool()).await.unwrap();
            assert_eq!(n, 0, "{table}");
        }
        pg.pool().close().await;
    }
}
