//! The MachineAction entity (`../shared/spec/mde-api.md` §2) and its lifecycle.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::time::{self, Timestamp};

/// The `as_str` spellings of an enum's `ALL` array, computed at compile time so the
/// names have one source.
macro_rules! wire_names {
    ($all:expr, $n:literal) => {{
        let mut names = [""; $n];
        let mut i = 0;
        while i < $n {
            names[i] = $all[i].as_str();
            i += 1;
        }
        names
    }};
}

/// Status of a machine action. Spelling is MDE's (`Cancelled` with two `l`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub enum ActionStatus {
    Pending,
    InProgress,
    Succeeded,
    Failed,
    TimeOut,
    Cancelled,
}

impl ActionStatus {
    pub const ALL: [ActionStatus; 6] =
        [Self::Pending, Self::InProgress, Self::Succeeded, Self::Failed, Self::TimeOut, Self::Cancelled];
    /// The wire spellings, in [`Self::ALL`] order.
    pub const NAMES: [&'static str; 6] = wire_names!(Self::ALL, 6);

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::InProgress => "InProgress",
            Self::Succeeded => "Succeeded",
            Self::Failed => "Failed",
            Self::TimeOut => "TimeOut",
            Self::Cancelled => "Cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// A final status never changes again.
    pub fn is_final(self) -> bool {
        !matches!(self, Self::Pending | Self::InProgress)
    }

    /// The statuses an action may move to `self` from. The store guards every
    /// update with this list, so transitions are atomic and never go backwards.
    pub fn predecessors(self) -> &'static [ActionStatus] {
        match self {
            Self::Pending => &[],
            Self::InProgress => &[Self::Pending],
            Self::Succeeded => &[Self::InProgress],
            Self::Failed | Self::TimeOut | Self::Cancelled => &[Self::Pending, Self::InProgress],
        }
    }
}

impl std::fmt::Display for ActionStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Type of a machine action. casefile executes `CollectInvestigationPackage`; the other
/// MDE values exist so that filters naming them parse and match nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub enum ActionType {
    CollectInvestigationPackage,
    RunAntiVirusScan,
    Offboard,
    LiveResponse,
    Isolate,
    Unisolate,
    StopAndQuarantineFile,
    RestrictCodeExecution,
    UnrestrictCodeExecution,
    RequestSample,
}

impl ActionType {
    pub const ALL: [ActionType; 10] = [
        Self::CollectInvestigationPackage,
        Self::RunAntiVirusScan,
        Self::Offboard,
        Self::LiveResponse,
        Self::Isolate,
        Self::Unisolate,
        Self::StopAndQuarantineFile,
        Self::RestrictCodeExecution,
        Self::UnrestrictCodeExecution,
        Self::RequestSample,
    ];
    /// The wire spellings, in [`Self::ALL`] order.
    pub const NAMES: [&'static str; 10] = wire_names!(Self::ALL, 10);

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::CollectInvestigationPackage => "CollectInvestigationPackage",
            Self::RunAntiVirusScan => "RunAntiVirusScan",
            Self::Offboard => "Offboard",
            Self::LiveResponse => "LiveResponse",
            Self::Isolate => "Isolate",
            Self::Unisolate => "Unisolate",
            Self::StopAndQuarantineFile => "StopAndQuarantineFile",
            Self::RestrictCodeExecution => "RestrictCodeExecution",
            Self::UnrestrictCodeExecution => "UnrestrictCodeExecution",
            Self::RequestSample => "RequestSample",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

impl std::fmt::Display for ActionType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `relatedFileInfo` of an action (always `null` for collections).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RelatedFileInfo {
    pub file_identifier: String,
    pub file_identifier_type: String,
}

/// The MachineAction entity with every key MDE emits, nulls included, in MDE's order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MachineAction {
    pub id: Uuid,
    #[serde(rename = "type")]
    pub action_type: ActionType,
    pub title: Option<String>,
    pub requestor: String,
    pub requestor_comment: String,
    pub status: ActionStatus,
    pub machine_id: String,
    pub computer_dns_name: Option<String>,
    #[serde(with = "time")]
    #[schema(value_type = String, format = DateTime)]
    pub creation_date_time_utc: Timestamp,
    #[serde(with = "time")]
    #[schema(value_type = String, format = DateTime)]
    pub last_update_date_time_utc: Timestamp,
    pub cancellation_requestor: Option<String>,
    pub cancellation_comment: Option<String>,
    #[serde(with = "time::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub cancellation_date_time_utc: Option<Timestamp>,
    pub error_h_result: i32,
    pub scope: Option<String>,
    pub external_id: Option<String>,
    pub request_source: String,
    pub related_file_info: Option<RelatedFileInfo>,
    #[schema(value_type = Vec<Object>)]
    pub commands: Vec<serde_json::Value>,
    pub troubleshoot_info: Option<String>,
    /// casefile extension: the collection profile the action runs (`standard` unless the
    /// request or the device's group named another). MDE clients ignore unknown keys.
    #[serde(rename = "casefileProfile", default = "standard_profile")]
    pub profile: String,
    /// casefile extension: how far a running collection and its upload have got; `null`
    /// until the agent first reports.
    #[serde(rename = "casefileProgress", default)]
    pub progress: Option<Progress>,
}

/// `collecting: timeline, 10 of 17 collectors, 1.2 GiB written` or
/// `uploading: 40%, 512.0 MiB of 1.2 GiB`: for a person (the console, the CLI).
impl std::fmt::Display for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.phase {
            ProgressPhase::Collecting => write!(
                f,
                "collecting: {}, {} of {} collectors, {} written",
                self.collector.as_deref().unwrap_or("finishing"),
                self.collectors_done,
                self.collectors_total,
                Bytes(self.package_bytes)
            ),
            ProgressPhase::Uploading => write!(
                f,
                "uploading: {}%, {} of {}",
                (u128::from(self.uploaded_bytes) * 100).checked_div(u128::from(self.package_bytes)).unwrap_or(0),
                Bytes(self.uploaded_bytes),
                Bytes(self.package_bytes)
            ),
        }
    }
}

/// A byte count in binary units, one decimal.
struct Bytes(u64);

impl std::fmt::Display for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
        if self.0 < 1024 {
            return write!(f, "{} B", self.0);
        }
        let mut value = self.0 as f64 / 1024.0;
        let mut unit = 0;
        while value >= 1024.0 && unit + 1 < UNITS.len() {
            value /= 1024.0;
            unit += 1;
        }
        write!(f, "{value:.1} {}", UNITS[unit])
    }
}

fn standard_profile() -> String {
    crate::profile::STANDARD.to_owned()
}

/// What a running collection is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum ProgressPhase {
    Collecting,
    Uploading,
}

/// The `casefileProgress` of an action: the agent reports it as it collects and uploads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    pub phase: ProgressPhase,
    /// Collectors finished, of `collectorsTotal`.
    pub collectors_done: u32,
    pub collectors_total: u32,
    /// The collector running now.
    #[serde(default)]
    pub collector: Option<String>,
    /// Bytes of the package written so far (its whole size once uploading).
    pub package_bytes: u64,
    /// Bytes of the package the server holds.
    pub uploaded_bytes: u64,
    /// When the server received this report (set by the server).
    #[serde(default, with = "time::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub updated_date_time_utc: Option<Timestamp>,
}

/// `requestSource` of every action created through the public API.
pub const REQUEST_SOURCE_PUBLIC_API: &str = "PublicApi";
/// `requestSource` of a collection made offline and imported (`casefile package import`).
pub const REQUEST_SOURCE_IMPORT: &str = "PackageImport";

impl MachineAction {
    /// A new `Pending` action requested through the public API, created `now`.
    pub fn new_pending(
        action_type: ActionType,
        machine_id: &str,
        computer_dns_name: Option<String>,
        requestor: &str,
        comment: String,
        now: Timestamp,
    ) -> Self {
        Self {
            id: Uuid::new_v4(),
            action_type,
            title: None,
            requestor: requestor.to_owned(),
            requestor_comment: comment,
            status: ActionStatus::Pending,
            machine_id: machine_id.to_owned(),
            computer_dns_name,
            creation_date_time_utc: now,
            last_update_date_time_utc: now,
            cancellation_requestor: None,
            cancellation_comment: None,
            cancellation_date_time_utc: None,
            error_h_result: 0,
            scope: None,
            external_id: None,
            request_source: REQUEST_SOURCE_PUBLIC_API.to_owned(),
            related_file_info: None,
            commands: Vec::new(),
            troubleshoot_info: None,
            profile: standard_profile(),
            progress: None,
        }
    }
}

/// Body of `POST /api/machines/{id}/collectInvestigationPackage`. Keys are case-sensitive
/// as in MDE; unknown keys are ignored.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CollectRequest {
    #[serde(rename = "Comment")]
    pub comment: String,
    /// The caller's correlation id (a case number), returned as `externalId` and
    /// filterable (`$filter=externalId eq '…'`). Also accepted as `ExternalID`,
    /// `externalId`, `externalID`. At most 256 characters, one line.
    #[serde(rename = "ExternalId", default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// Returned as `title`. Also accepted as `title`. At most 1000 characters, one line.
    #[serde(rename = "Title", default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// casefile extension: the collection profile to run (`standard`, `triage` or one the
    /// administrator defined). Unset: the device group's default, else `standard`.
    #[serde(rename = "Profile", default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
}

/// Body of `POST /api/machineactions/{id}/cancel`; the body and `Comment` are optional.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CancelActionRequest {
    #[serde(rename = "Comment", default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// Checked as on an action, but the action keeps the `externalId` it was created with.
    #[serde(rename = "ExternalId", default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// Checked as on an action, but the action keeps the `title` it was created with.
    #[serde(rename = "Title", default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
}

/// HRESULT-style codes casefile reports in `errorHResult` when an action fails.
/// Values follow the Windows conventions scripts already recognise.
pub mod hresult {
    /// E_FAIL: the agent could not produce a package.
    pub const COLLECTION_FAILED: i32 = 0x8000_4005_u32 as i32;
    /// E_ABORT: the agent stopped before finishing (restart, shutdown).
    pub const ABORTED: i32 = 0x8000_4004_u32 as i32;
    /// ERROR_INVALID_DATA as HRESULT: the uploaded package did not verify.
    pub const PACKAGE_REJECTED: i32 = 0x8007_000D_u32 as i32;
    /// ERROR_TIMEOUT as HRESULT: the agent went silent.
    pub const TIMEOUT: i32 = 0x8007_05B4_u32 as i32;
}
