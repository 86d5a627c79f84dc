//! The permission table: which application permissions (`roles` claim of app tokens) and
//! which delegated permissions (`scp` claim of user tokens) each public API accepts, as
//! `../shared/spec/mde-api.md` §1–§4 list them. One table, used by every handler, the
//! application registrations and the CLI's defaults.

pub const MACHINE_COLLECT_FORENSICS: &str = "Machine.CollectForensics";
pub const MACHINE_READ_ALL: &str = "Machine.Read.All";
pub const MACHINE_READ_WRITE_ALL: &str = "Machine.ReadWrite.All";
pub const MACHINE_ISOLATE: &str = "Machine.Isolate";
pub const MACHINE_RESTRICT_EXECUTION: &str = "Machine.RestrictExecution";
pub const MACHINE_SCAN: &str = "Machine.Scan";
pub const MACHINE_OFFBOARD: &str = "Machine.Offboard";
pub const MACHINE_STOP_AND_QUARANTINE: &str = "Machine.StopAndQuarantine";
pub const MACHINE_LIVE_RESPONSE: &str = "Machine.LiveResponse";
/// casefile's own: manage the tenant's application registrations (`/api/admin/...`).
pub const CASEFILE_ADMIN: &str = "Casefile.Admin";

/// Delegated permissions (the `scp` claim) that differ from the application ones.
pub const MACHINE_READ: &str = "Machine.Read";
pub const MACHINE_READ_WRITE: &str = "Machine.ReadWrite";

/// Every application permission casefile knows: the roles an application may be given.
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
    CASEFILE_ADMIN,
];

/// Permissions that allow cancelling an action, application and delegated alike (§4.3).
const CANCEL: &[&str] = &[
    MACHINE_COLLECT_FORENSICS,
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
    /// `GET /api/admin/applications`.
    ListApplications,
    ReadAudit,
    TagMachine,
    ManageAccess,
    /// `POST /api/admin/applications`.
    CreateApplication,
    /// Disable, enable, rotate the secret, change the roles.
    UpdateApplication,
    /// Reading a package's content in the console's viewer: `GetPackageUri`'s rights, a
    /// quota of its own (each page of the viewer is a call).
    ViewPackage,
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
        Self::ListApplications,
        Self::ReadAudit,
        Self::TagMachine,
        Self::ManageAccess,
        Self::CreateApplication,
        Self::UpdateApplication,
        Self::ViewPackage,
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
            Self::ListApplications => "ListApplications",
            Self::ReadAudit => "ReadAudit",
            Self::TagMachine => "TagMachine",
            Self::ManageAccess => "ManageAccess",
            Self::CreateApplication => "CreateApplication",
            Self::UpdateApplication => "UpdateApplication",
            Self::ViewPackage => "ViewPackage",
        }
    }

    /// The application permissions (`roles`) that allow the API; any one suffices.
    pub fn application_permissions(self) -> &'static [&'static str] {
        match self {
            Self::ListApplications
            | Self::CreateApplication
            | Self::UpdateApplication
            | Self::ReadAudit
            | Self::ManageAccess => &[CASEFILE_ADMIN],
            Self::CollectInvestigationPackage | Self::ImportInvestigationPackage => &[MACHINE_COLLECT_FORENSICS],
            Self::GetMachineAction
            | Self::ListMachineActions
            | Self::GetPackageUri
            | Self::ViewPackage
            | Self::GetMachine
            | Self::ListMachines => &[MACHINE_READ_ALL, MACHINE_READ_WRITE_ALL],
            Self::CancelMachineAction => CANCEL,
            Self::TagMachine => &[MACHINE_READ_WRITE_ALL],
        }
    }

    /// The delegated permissions (`scp`) that allow the API for a signed-in user; any one
    /// suffices. `getPackageUri` needs `Machine.CollectForensics` here, not a read
    /// permission (§3).
    pub fn delegated_permissions(self) -> &'static [&'static str] {
        match self {
            Self::CollectInvestigationPackage
            | Self::ImportInvestigationPackage
            | Self::GetPackageUri
            | Self::ViewPackage => &[MACHINE_COLLECT_FORENSICS],
            Self::GetMachineAction | Self::ListMachineActions | Self::GetMachine | Self::ListMachines => {
                &[MACHINE_READ, MACHINE_READ_WRITE]
            }
            Self::CancelMachineAction => CANCEL,
            Self::TagMachine => &[MACHINE_READ_WRITE],
            Self::ListApplications
            | Self::CreateApplication
            | Self::UpdateApplication
            | Self::ReadAudit
            | Self::ManageAccess => &[CASEFILE_ADMIN],
        }
    }
}

impl Api {
    /// The role permission a delegated user needs for this API (§6.3).
    pub fn role_permission(self) -> &'static str {
        use casefile_proto::rbac::permission::*;
        match self {
            Self::CollectInvestigationPackage
            | Self::ImportInvestigationPackage
            | Self::GetPackageUri
            | Self::ViewPackage
            | Self::CancelMachineAction
            | Self::TagMachine => ALERTS_INVESTIGATION,
            Self::GetMachineAction | Self::ListMachineActions | Self::GetMachine | Self::ListMachines => VIEW_DATA,
            Self::ListApplications
            | Self::CreateApplication
            | Self::UpdateApplication
            | Self::ReadAudit
            | Self::ManageAccess => ADMINISTRATOR,
        }
    }
}

/// The names in `roles` that are not application permissions casefile knows.
pub fn unknown_roles(roles: &[String]) -> Vec<&str> {
    roles.iter().map(String::as_str).filter(|r| !ALL.contains(r)).collect()
}
