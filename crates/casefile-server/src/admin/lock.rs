//! Who owns a data directory. `casefile server` holds an exclusive lock on
//! `<data_dir>/.lock` for as long as it runs; `migrate` and `restore` take it too, so neither
//! changes the schema or moves the directory from under a running server (whose open
//! database would then part from the package files it writes).

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

use super::AdminError;

const LOCK_FILE: &str = ".lock";

/// Held while it lives; the kernel releases it when the process ends, however it ends.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    /// Locks `data_dir` (created, private, when missing), or says who holds it.
    pub fn acquire(data_dir: &Path) -> Result<Self, AdminError> {
        crate::create_private_dir(data_dir).map_err(|e| AdminError::Invalid(e.to_string()))?;
        let path = data_dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| AdminError::Io { what: format!("cannot open {}", path.display()), source })?;
        Self::take(file, data_dir)
    }

    /// Locks `data_dir` if a server ever ran there (its lock file exists), without
    /// creating anything: an empty directory stays empty. `None`: nothing to lock.
    pub fn acquire_existing(data_dir: &Path) -> Result<Option<Self>, AdminError> {
        let path = data_dir.join(LOCK_FILE);
        match OpenOptions::new().write(true).open(&path) {
            Ok(file) => Self::take(file, data_dir).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(AdminError::Io { what: format!("cannot open {}", path.display()), source }),
        }
    }

    fn take(file: File, data_dir: &Path) -> Result<Self, AdminError> {
        match file.try_lock() {
            Ok(()) => Ok(Self { _file: file }),
            Err(TryLockError::WouldBlock) => Err(AdminError::Busy(data_dir.to_owned())),
            Err(TryLockError::Error(source)) => {
                Err(AdminError::Io { what: format!("cannot lock {}", lock_path(data_dir).display()), source })
            }
        }
    }
}

fn lock_path(data_dir: &Path) -> PathBuf {
    data_dir.join(LOCK_FILE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        assert!(DataDirLock::acquire_existing(&data).unwrap().is_none(), "nothing ran there");
        assert!(!data.exists(), "and nothing was created");
        let first = DataDirLock::acquire(&data).unwrap();
        let refused = DataDirLock::acquire(&data).unwrap_err();
        assert!(matches!(refused, AdminError::Busy(_)), "{refused}");
        assert!(refused.to_string().contains("stop it first"), "{refused}");
        assert!(matches!(DataDirLock::acquire_existing(&data), Err(AdminError::Busy(_))));
        drop(first);
        assert!(DataDirLock::acquire_existing(&data).unwrap().is_some());
    }
}
