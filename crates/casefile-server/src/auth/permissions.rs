//! The permission table: which application permissions (`roles` claim) each public API
//! accepts, as `../shared/spec/mde-api.md` §1–§4 list them. One table, used by every
//! handler and by the CLI's defaults.

pub const MACHINE_COLLECT_FORENSICS: &str = "Machine.CollectForensics";
pub const MACHINE_READ_ALL: &str = "Machine.Read.All";
pub const MACHINE_READ_WRITE_ALL: &str = "Machine.ReadWrite.All";
pub const MACHINE_ISOLATE: &str = "Machine.Isolate";
pub const MACHINE_RESTRICT_EXECUTION: &str = "Machine.RestrictExecution";
pub const MACHINE_SCAN: &str = "Machine.Scan";
pub const MACHINE_OFFBOARD: &str = "Machine.Offboard";
pub const MACHINE_STOP_AND_QUARANTINE: &str = "Machine.StopAndQuarantine";
pub const MACHINE_LIVE_RESPONSE: &str = "Machine.LiveResponse";

/// Every application permission casefile knows.
pub const ALL: &[&str] = &[
    MACHINE_COLLECT_FORENSICS,
    MACHINE_READ_ALL,
    MACHINE_READ_WRITE_ALL,
    MACHINE_ISOLATE,
    MACHINE_RESTRICT_EXECUTION,
    MACHINE_SCAN,
    MACHINE_OFFBOARD,
    MACHINE_STOP_AND_QUARANTINE,
    MACHINE_LIVE_RESPONSE,
];

/// The public APIs, each with the permissions that allow it (any one suffices).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    CollectInvestigationPackage,
    ImportInvestigationPackage,
    GetMachineAction,
    ListMachineActions,
    GetPackageUri,
    CancelMachineAction,
    GetMachine,
    ListMachines,
}

impl Api {
    pub const ALL: &[Api] = &[
        Self::CollectInvestigationPackage,
        Self::ImportInvestigationPackage,
        Self::GetMachineAction,
        Self::ListMachineActions,
        Self::GetPackageUri,
        Self::CancelMachineAction,
        Self::GetMachine,
        Self::ListMachines,
    ];

    /// The API's name in configuration and logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::CollectInvestigationPackage => "CollectInvestigationPackage",
            Self::ImportInvestigationPackage => "ImportInvestigationPackage",
            Self::GetMachineAction => "GetMachineAction",
            Self::ListMachineActions => "ListMachineActions",
            Self::GetPackageUri => "GetPackageUri",
            Self::CancelMachineAction => "CancelMachineAction",
            Self::GetMachine => "GetMachine",
            Self::ListMachines => "ListMachines",
        }
    }

    pub fn application_permissions(self) -> &'static [&'static str] {
        match self {
            Self::CollectInvestigationPackage | Self::ImportInvestigationPackage => &[MACHINE_COLLECT_FORENSICS],
            Self::GetMachineAction
            | Self::ListMachineActions
            | Self::GetPackageUri
            | Self::GetMachine
            | Self::ListMachines => &[MACHINE_READ_ALL, MACHINE_READ_WRITE_ALL],
            Self::CancelMachineAction => &[
                MACHINE_COLLECT_FORENSICS,
                MACHINE_ISOLATE,
                MACHINE_RESTRICT_EXECUTION,
                MACHINE_SCAN,
                MACHINE_OFFBOARD,
                MACHINE_STOP_AND_QUARANTINE,
                MACHINE_LIVE_RESPONSE,
            ],
        }
    }
}
