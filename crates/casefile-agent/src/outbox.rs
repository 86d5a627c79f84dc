//! What the agent owes the server, kept on disk until delivered (issue 9 item 10): a
//! package to upload, a failure report, a cancellation's confirmation. Each entry is one
//! file in `state_dir/outbox/`, written durably (temp file, fsync, rename, fsync of the
//! directory), so a report survives the server being down and the agent restarting. A
//! package awaiting upload stays in `state_dir/work/<action>.zip` until its entry ends.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::AgentError;
use crate::identity;

const OUTBOX_DIR: &str = "outbox";
const WORK_DIR: &str = "work";
const ENTRY_SUFFIX: &str = ".json";

/// One report owed for an action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Report {
    /// Upload `work/<action>.zip`; retried until `until` (Unix seconds), then reported
    /// as a failure instead.
    Upload {
        size: u64,
        sha256: String,
        until: u64,
    },
    Failure {
        error_h_result: i32,
        troubleshoot_info: String,
    },
    Cancelled,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub action_id: Uuid,
    pub report: Report,
}

/// The state directory's outbox and work directory.
#[derive(Debug, Clone)]
pub struct Outbox {
    dir: PathBuf,
    work: PathBuf,
}

fn state_error(path: &Path) -> impl FnOnce(std::io::Error) -> AgentError + '_ {
    move |source| AgentError::State { path: path.to_owned(), source }
}

impl Outbox {
    pub fn open(state_dir: &Path) -> Result<Self, AgentError> {
        let outbox = Self { dir: state_dir.join(OUTBOX_DIR), work: state_dir.join(WORK_DIR) };
        identity::ensure_dir(&outbox.dir)?;
        identity::ensure_dir(&outbox.work)?;
        Ok(outbox)
    }

    /// Where the package of `action` is written and kept until it is delivered.
    pub fn package_path(&self, action: Uuid) -> PathBuf {
        self.work.join(format!("{action}.zip"))
    }

    fn entry_path(&self, action: Uuid) -> PathBuf {
        self.dir.join(format!("{action}{ENTRY_SUFFIX}"))
    }

    /// Records (or replaces) what is owed for the entry's action; returns once it is on disk
    /// (with the package it names, for an upload).
    pub fn put(&self, entry: &Entry) -> Result<(), AgentError> {
        if matches!(entry.report, Report::Upload { .. }) {
            sync_dir(&self.work)?;
        }
        let path = self.entry_path(entry.action_id);
        let tmp = self.dir.join(format!("{}.tmp", entry.action_id));
        let json = serde_json::to_vec(entry)
            .map_err(|e| AgentError::State { path: path.clone(), source: std::io::Error::other(e) })?;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&tmp).map_err(state_error(&tmp))?;
        file.write_all(&json).and_then(|()| file.sync_all()).map_err(state_error(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(state_error(&path))?;
        self.sync_dir()
    }

    /// The action's report was delivered (or refused for good): forget it and its package.
    pub fn remove(&self, action: Uuid) -> Result<(), AgentError> {
        self.discard_package(action);
        let path = self.entry_path(action);
        match std::fs::remove_file(&path) {
            Ok(()) => self.sync_dir(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(AgentError::State { path, source: e }),
        }
    }

    pub fn discard_package(&self, action: Uuid) {
        let _ = std::fs::remove_file(self.package_path(action));
    }

    fn sync_dir(&self) -> Result<(), AgentError> {
        sync_dir(&self.dir)
    }

    /// Every entry on disk. A file that cannot be read as an entry is logged and removed:
    /// it would otherwise be retried forever.
    pub fn entries(&self) -> Vec<Entry> {
        let Ok(listing) = std::fs::read_dir(&self.dir) else { return Vec::new() };
        let mut entries = Vec::new();
        for file in listing.flatten() {
            let path = file.path();
            let name = file.file_name().to_string_lossy().into_owned();
            let Some(stem) = name.strip_suffix(ENTRY_SUFFIX) else { continue };
            let parsed = std::fs::read(&path)
                .ok()
                .and_then(|bytes| serde_json::from_slice::<Entry>(&bytes).ok())
                .filter(|entry| Uuid::parse_str(stem).ok() == Some(entry.action_id));
            match parsed {
                Some(entry) => entries.push(entry),
                None => {
                    tracing::warn!(path = %path.display(), "discarding an unreadable outbox entry");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        entries.sort_by_key(|e| e.action_id);
        entries
    }

    /// The actions this agent still owes a report for.
    pub fn held(&self) -> Vec<Uuid> {
        self.entries().into_iter().map(|e| e.action_id).collect()
    }

    /// At start (issue 9 item 13): removes what interrupted runs left behind: half-written
    /// entries, and every file in `work/` but the packages still awaiting upload. Returns
    /// how many files went.
    pub fn sweep(&self) -> usize {
        let mut removed = 0;
        let uploads: Vec<PathBuf> = self
            .entries()
            .iter()
            .filter(|e| matches!(e.report, Report::Upload { .. }))
            .map(|e| self.package_path(e.action_id))
            .collect();
        for (dir, keep) in [(&self.dir, None), (&self.work, Some(&uploads))] {
            let Ok(listing) = std::fs::read_dir(dir) else { continue };
            for file in listing.flatten() {
                let path = file.path();
                let leftover = match keep {
                    None => path.extension().is_some_and(|e| e == "tmp"),
                    Some(keep) => !keep.contains(&path),
                };
                if !leftover {
                    continue;
                }
                let gone = if file.file_type().is_ok_and(|t| t.is_dir()) {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
                match gone {
                    Ok(()) => {
                        tracing::info!(path = %path.display(), "removed a leftover of an interrupted run");
                        removed += 1;
                    }
                    Err(e) => tracing::warn!(path = %path.display(), "cannot remove a leftover: {e}"),
                }
            }
        }
        removed
    }
}

/// A new or renamed file is durable only once its directory is.
fn sync_dir(dir: &Path) -> Result<(), AgentError> {
    #[cfg(unix)]
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(state_error(dir))?;
    Ok(())
}

/// Seconds since the Unix epoch, `window` from now.
pub fn deadline_after(window: Duration) -> u64 {
    unix_now().saturating_add(window.as_secs())
}

pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Exponential backoff with jitter, so agents that lost the server together do not come
/// back in step.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    cap: Duration,
}

impl Backoff {
    pub fn new(first: Duration, cap: Duration) -> Self {
        Self { next: first, cap }
    }

    /// The next pause: half of the current step plus a random part of the other half.
    pub fn pause(&mut self) -> Duration {
        let step = self.next;
        self.next = (self.next * 2).min(self.cap);
        let half = step / 2;
        let mut seed = [0u8; 8];
        let random = getrandom::fill(&mut seed).map(|()| u64::from_le_bytes(seed)).unwrap_or(0);
        let spread = half.as_millis().max(1) as u64;
        half + Duration::from_millis(random % spread)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_survive_reopening_and_the_sweep_keeps_only_pending_packages() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(dir.path()).unwrap();
        let (upload, failed) = (Uuid::new_v4(), Uuid::new_v4());
        std::fs::write(outbox.package_path(upload), b"zip").unwrap();
        std::fs::write(outbox.package_path(failed), b"partial").unwrap();
        std::fs::write(outbox.package_path(Uuid::new_v4()), b"partial of a killed run").unwrap();
        std::fs::write(dir.path().join("outbox").join("x.tmp"), b"half").unwrap();
        std::fs::write(dir.path().join("outbox").join(format!("{}.json", Uuid::new_v4())), b"{garbage").unwrap();
        outbox
            .put(&Entry {
                action_id: upload,
                report: Report::Upload { size: 3, sha256: "ab".into(), until: deadline_after(Duration::ZERO) },
            })
            .unwrap();
        let failure = Report::Failure { error_h_result: 1, troubleshoot_info: "x".into() };
        outbox.put(&Entry { action_id: failed, report: failure.clone() }).unwrap();

        let reopened = Outbox::open(dir.path()).unwrap();
        assert_eq!(reopened.sweep(), 3, "two partial zips and a temp file");
        let mut held = vec![upload, failed];
        held.sort();
        assert_eq!(reopened.held(), held, "the unreadable entry was dropped");
        assert!(reopened.package_path(upload).exists(), "a package awaiting upload is kept");
        assert!(!reopened.package_path(failed).exists());

        reopened.remove(upload).unwrap();
        assert!(!reopened.package_path(upload).exists());
        assert_eq!(reopened.entries(), vec![Entry { action_id: failed, report: failure }]);
    }

    #[test]
    fn backoff_grows_to_its_cap_with_jitter() {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(8));
        let pauses: Vec<Duration> = (0..6).map(|_| backoff.pause()).collect();
        for (pause, step) in pauses.iter().zip([1u64, 2, 4, 8, 8, 8]) {
            let step = Duration::from_secs(step);
            assert!(*pause >= step / 2 && *pause < step, "{pause:?} within [{:?}, {step:?})", step / 2);
        }
    }
}
