//! SHA-256 of process executables, read through `/proc/<pid>/exe` so that an executable
//! deleted after it started is hashed too, and once per file however many processes
//! run it.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;

use procfs::process::Process;
use rustix::fs::OFlags;

use crate::Context;
use crate::collectors::common::{FileHash, FileHasher};
use crate::collectors::disks::Mounts;
use crate::collectors::procs::{ReadError, open_entry};

/// Most files remembered; past this a binary shared by many processes is hashed again
/// (each time within the hashing budget) rather than memory growing.
const MAX_CACHED: usize = 65_536;

/// (device, inode) of an executable → its hash. 40-odd bytes an entry.
pub(super) struct ExecutableHashes {
    hasher: FileHasher,
    by_file: HashMap<(u64, u64), FileHash>,
    mounts: Mounts,
}

impl ExecutableHashes {
    pub(super) fn new(ctx: &Context) -> Self {
        Self { hasher: FileHasher::new(&ctx.limits), by_file: HashMap::new(), mounts: Mounts::load(ctx) }
    }

    /// The hash of the process's executable (at host path `executable`, as `exe`
    /// names it); `None` for kernel threads and processes that exited meanwhile.
    pub(super) fn of(&mut self, process: &Process, executable: &str) -> Result<Option<FileHash>, ReadError> {
        // Opening a binary on a FUSE or network file system can block for as long as its
        // server does (a stopped AppImage, a dead NFS server).
        if let Some(fs_type) = self.mounts.slow_file_system(executable) {
            return Ok(Some(FileHash::Skipped(format!("on a {fs_type} file system"))));
        }
        let Some(file) = open_entry(process, "exe", OFlags::RDONLY | OFlags::NONBLOCK)? else {
            return Ok(None);
        };
        let meta = file.metadata()?;
        let key = (meta.dev(), meta.ino());
        if let Some(hash) = self.by_file.get(&key) {
            return Ok(Some(hash.clone()));
        }
        let hash = self.hasher.hash(file)?;
        if self.by_file.len() < MAX_CACHED {
            self.by_file.insert(key, hash.clone());
        }
        Ok(Some(hash))
    }

    #[cfg(test)]
    pub(super) fn cached(&self) -> usize {
        self.by_file.len()
    }
}
