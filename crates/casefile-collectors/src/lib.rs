//! The collectors of a casefile package. Each collector owns one folder of the package,
//! reads its sources below `Context::root` (`/` on a live host, a fixture tree in tests)
//! and streams files into an [`ItemSink`]. Collectors never fail the whole package: a
//! source that cannot be read becomes a `failed`, `partial` or `not-applicable` item.

use std::path::PathBuf;

use casefile_package::{ItemSink, PackageError};
use tokio_util::sync::CancellationToken;

pub mod collectors;

/// What every collector gets.
#[derive(Debug, Clone)]
pub struct Context {
    /// Root of the file system to read (`/` on a live host).
    pub root: PathBuf,
    /// Set when the collection is cancelled; collectors check it between rows.
    pub cancel: CancellationToken,
    /// Size and time caps every collector respects.
    pub limits: Limits,
    /// The collectors of this collection, when a profile chose them; `None`: the standard
    /// ones. A triage collector leaves to a standard one what that one takes, only if it runs.
    pub running: Option<std::sync::Arc<[String]>>,
}

/// Caps that keep a collection bounded on any host. Configurable per collection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest single file copied into the package; a larger one is cut (`partial`).
    pub max_file_bytes: u64,
    /// Largest amount of one log source (e.g. `/var/log/auth.log*`, the journal) kept,
    /// newest first.
    pub max_log_bytes: u64,
    /// Longest an external command (e.g. `nft list ruleset`) may run before it is killed.
    pub command_timeout: std::time::Duration,
    /// Most bytes one collector puts into the package in total (the triage collectors
    /// that copy many files stop taking files there and say so in their index).
    pub max_total_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_file_bytes: 32 << 20,
            max_log_bytes: 64 << 20,
            command_timeout: std::time::Duration::from_secs(30),
            max_total_bytes: 1 << 30,
        }
    }
}

impl Context {
    pub fn live(cancel: CancellationToken) -> Self {
        Self { root: PathBuf::from("/"), cancel, limits: Limits::default(), running: None }
    }

    /// Whether collector `name` is part of this collection (the standard ones are when no
    /// profile said otherwise).
    pub fn runs(&self, name: &str) -> bool {
        match &self.running {
            Some(names) => names.iter().any(|n| n == name),
            None => collectors::all().iter().any(|c| c.name() == name),
        }
    }

    /// `abs` (an absolute host path such as `/etc/passwd`) below the root.
    pub fn path(&self, abs: &str) -> PathBuf {
        self.root.join(abs.trim_start_matches('/'))
    }

    pub fn check_cancelled(&self) -> Result<(), CollectError> {
        if self.cancel.is_cancelled() { Err(CollectError::Cancelled) } else { Ok(()) }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    /// Writing the package failed: the collection cannot go on.
    #[error(transparent)]
    Package(#[from] PackageError),
    #[error("cancelled")]
    Cancelled,
    /// The collector stopped early; what it wrote so far stays in the package.
    #[error("{0}")]
    Stopped(String),
}

pub trait Collector: Send + Sync {
    /// Short machine name, e.g. `processes`.
    fn name(&self) -> &'static str;
    /// Folder of the package this collector writes into, e.g. `Processes`.
    fn folder(&self) -> &'static str;
    fn collect(&self, ctx: &Context, sink: &mut dyn ItemSink) -> Result<(), CollectError>;
}

/// The standard collectors, in the order they run.
pub fn all() -> Vec<Box<dyn Collector>> {
    collectors::all()
}

/// Every collector this build has, standard and triage.
pub fn catalog() -> Vec<Box<dyn Collector>> {
    collectors::catalog()
}

/// The collector a profile names, if this build has it.
pub fn by_name(name: &str) -> Option<Box<dyn Collector>> {
    collectors::by_name(name)
}
