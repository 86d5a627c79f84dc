//! `manifest.json`: what the package holds and how each part was obtained.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Version of the manifest layout; bumped on incompatible changes.
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ItemStatus {
    /// Collected completely.
    Ok,
    /// Collected, with some entries unreadable (e.g. a process that exited mid-read).
    Partial,
    /// Nothing usable could be collected.
    Failed,
    /// The source does not exist on this kind of host.
    NotApplicable,
}

impl ItemStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Partial => "partial",
            Self::Failed => "failed",
            Self::NotApplicable => "not-applicable",
        }
    }

    /// The worse of two statuses, for a collector made of several items.
    pub fn worst(self, other: Self) -> Self {
        let rank = |s: Self| match s {
            Self::Ok | Self::NotApplicable => 0,
            Self::Partial => 1,
            Self::Failed => 2,
        };
        if rank(other) > rank(self) { other } else { self }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestHost {
    pub hostname: String,
    pub machine_id: Option<String>,
    pub os: String,
    pub kernel: String,
    pub architecture: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestItem {
    /// Path inside the package.
    pub path: String,
    /// Where the content came from (a file, a `/proc` walk, a command line).
    pub source: String,
    pub sha256: String,
    pub size: u64,
    pub collector: String,
    pub status: ItemStatus,
    pub error: Option<String>,
    pub duration_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectorRun {
    pub name: String,
    pub folder: String,
    pub status: ItemStatus,
    pub error: Option<String>,
    pub items: u32,
    pub duration_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub tool: String,
    pub agent_version: String,
    pub host: ManifestHost,
    pub action_id: Option<Uuid>,
    /// The collection profile that ran (`standard`, `triage`, or an administrator's);
    /// absent in packages made before profiles existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    pub started_utc: chrono::DateTime<chrono::Utc>,
    pub finished_utc: chrono::DateTime<chrono::Utc>,
    pub collectors: Vec<CollectorRun>,
    pub items: Vec<ManifestItem>,
}
