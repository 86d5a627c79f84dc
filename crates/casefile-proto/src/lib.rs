//! Wire types of casefile: what the public (MDE-compatible) API, the agent API and the
//! investigation package speak. No I/O lives here; the server, the agent and the CLI all
//! depend on this crate so that one definition serves every side of a conversation.

pub mod action;
pub mod agent;
pub mod application;
pub mod audit;
pub mod error;
pub mod machine;
pub mod oauth;
pub mod odata;
pub mod profile;
pub mod rbac;
pub mod tenant;
pub mod time;
pub mod user;

pub use action::{ActionStatus, ActionType, CancelActionRequest, CollectRequest, MachineAction};
pub use error::{ErrorBody, ErrorCode, ErrorDetail};
pub use machine::{HealthStatus, Machine, MachineId};
pub use tenant::TenantId;

/// Tenant every single-tenant installation uses when none is named.
pub const DEFAULT_TENANT: &str = "default";

/// File name MDE gives the package in its download links; scripts sometimes key on it.
pub const PACKAGE_FILE_NAME: &str = "WDATP_Investigation_Package.zip";
