//! The store a URL names: `sqlite://PATH` (or a plain path), `postgres://…` or
//! `postgresql://…`. The server, the admin layer and `casefile store copy` open stores
//! only through here, so a new backend is one more arm.

use std::path::PathBuf;
use std::sync::Arc;

use crate::{PgStore, Result, Schema, SqliteStore, Store, StoreError};

/// Which database a URL names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// The embedded SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL server; the URL as given (it may carry a password).
    Postgres(String),
}

impl Backend {
    pub fn of(url: &str) -> Result<Self> {
        let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
        match scheme.as_deref() {
            Some("postgres" | "postgresql") => Ok(Self::Postgres(url.to_owned())),
            Some("sqlite") | None => Ok(Self::Sqlite(SqliteStore::path_of(url)?)),
            Some(other) => Err(StoreError::Unsupported(match other {
                "mysql" | "mariadb" => "MySQL is not supported: use sqlite:// or postgres://",
                _ => "unknown database URL scheme: use sqlite://PATH or postgres://USER@HOST/DATABASE",
            })),
        }
    }

    /// `sqlite` or `postgres`, for messages and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "sqlite",
            Self::Postgres(_) => "postgres",
        }
    }
}

/// An opened database of either kind: its schema operations, and the [`Store`] over it.
#[derive(Debug, Clone)]
pub enum Database {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

impl Database {
    /// Opens and applies pending migrations (the demo and tests).
    pub async fn open(url: &str) -> Result<Self> {
        Ok(match Backend::of(url)? {
            Backend::Sqlite(path) => Self::Sqlite(SqliteStore::open(&path).await?),
            Backend::Postgres(url) => Self::Postgres(PgStore::open(&url).await?),
        })
    }

    /// Opens, refusing a schema older or newer than this binary's (an empty database is
    /// migrated).
    pub async fn open_checked(url: &str) -> Result<Self> {
        Ok(match Backend::of(url)? {
            Backend::Sqlite(path) => Self::Sqlite(SqliteStore::open_checked(&path).await?),
            Backend::Postgres(url) => Self::Postgres(PgStore::open_checked(&url).await?),
        })
    }

    /// Opens without looking at the schema (`casefile migrate`, `casefile store copy`).
    pub async fn open_unmigrated(url: &str) -> Result<Self> {
        Ok(match Backend::of(url)? {
            Backend::Sqlite(path) => Self::Sqlite(SqliteStore::open_unmigrated(&path).await?),
            Backend::Postgres(url) => Self::Postgres(PgStore::open_unmigrated(&url).await?),
        })
    }

    pub async fn schema(&self) -> Result<Schema> {
        match self {
            Self::Sqlite(s) => s.schema().await,
            Self::Postgres(s) => s.schema().await,
        }
    }

    pub async fn migrate(&self) -> Result<Vec<i64>> {
        match self {
            Self::Sqlite(s) => s.migrate().await,
            Self::Postgres(s) => s.migrate().await,
        }
    }

    /// Other casefile processes using the database now, as `host (name)`: none for SQLite,
    /// which one server holds alone (its data directory's lock says so).
    pub async fn other_clients(&self) -> Result<Vec<String>> {
        match self {
            Self::Sqlite(_) => Ok(Vec::new()),
            Self::Postgres(s) => s.other_clients().await,
        }
    }

    /// Whether `backup_into` can copy this database (SQLite's file; PostgreSQL is backed
    /// up with its own tools).
    pub fn can_backup(&self) -> bool {
        matches!(self, Self::Sqlite(_))
    }

    pub fn store(&self) -> Arc<dyn Store> {
        match self {
            Self::Sqlite(s) => Arc::new(s.clone()),
            Self::Postgres(s) => Arc::new(s.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_their_backend() {
        assert_eq!(Backend::of("sqlite:///var/lib/casefile/casefile.db").unwrap().name(), "sqlite");
        assert_eq!(Backend::of("/var/lib/casefile/casefile.db").unwrap().name(), "sqlite");
        assert_eq!(Backend::of("postgres://casefile@db/casefile").unwrap().name(), "postgres");
        assert_eq!(
            Backend::of("PostgreSQL://casefile:pw@db:5433/casefile?sslmode=require").unwrap().name(),
            "postgres"
        );
        assert!(Backend::of("mysql://db/casefile").unwrap_err().to_string().contains("not supported"));
        assert!(Backend::of("redis://db").is_err());
    }
}
