//! casefile's persistence. The server talks to a [`Store`]; each database has its own
//! implementation with its own migrations (SQLite here; PostgreSQL slots in beside it),
//! so no SQL dialect leaks into the server.

pub mod access;
pub mod actions;
pub mod audit;
pub mod cluster;
mod columns;
pub mod copy;
pub mod identity;
pub mod machines;
pub mod maintenance;
mod open;
pub mod postgres;
pub mod query;
mod records;
pub mod scoped;
pub mod sqlite;
pub mod uploads;
pub mod users;

pub use access::AccessStore;
pub use actions::{ActionStore, Claim};
pub use audit::AuditStore;
pub use casefile_proto::TenantId;
pub use cluster::{ClusterEvent, ClusterStore, LeaderGuard, LocalCluster, PgCluster, WindowCount};
pub use identity::IdentityStore;
pub use machines::MachineStore;
pub use maintenance::MaintenanceStore;
pub use open::{Backend, Database};
pub use postgres::PgStore;
pub use query::{ListQuery, Listed, Visibility};
pub use records::*;
pub use scoped::{MachineScope, TenantScope};
pub use sqlite::{Schema, SqliteStore};
pub use uploads::{UploadChunk, UploadRecord, UploadStore};
pub use users::UserStore;

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
    /// Text the database cannot hold (PostgreSQL refuses the NUL character, U+0000, in
    /// text): nothing was written or matched.
    #[error("text the database cannot store: {0}")]
    Unstorable(String),
    /// The operation is not one this database offers (a backup of PostgreSQL).
    #[error("{0}")]
    Unsupported(&'static str),
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
        // character_not_in_repertoire, untranslatable_character: a NUL byte in text or a
        // `\u0000` escape, from whoever sent it. SQLite stores both.
        if let sqlx::Error::Database(db) = &e
            && matches!(db.code().as_deref(), Some("22021" | "22P05"))
        {
            return Self::Unstorable(db.message().to_owned());
        }
        Self::Database(e)
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Everything a backend implements: one trait per area, each in its own module (and, in a
/// backend, its own file). `Arc<dyn Store>` is what the server holds.
pub trait Store:
    ActionStore
    + MachineStore
    + IdentityStore
    + AuditStore
    + AccessStore
    + MaintenanceStore
    + ClusterStore
    + UserStore
    + UploadStore
{
}

impl<T> Store for T where
    T: ActionStore
        + MachineStore
        + IdentityStore
        + AuditStore
        + AccessStore
        + MaintenanceStore
        + ClusterStore
        + UserStore
        + UploadStore
{
}
