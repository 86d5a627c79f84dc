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
}

impl Context {
    pub fn live(cancel: CancellationToken) -> Self {
        Self { root: PathBuf::from("/"), cancel }
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

/// Every collector, in the order they run.
pub fn all() -> Vec<Box<dyn Collector>> {
    collectors::all()
}
