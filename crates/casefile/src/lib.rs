//! The `casefile` command's building blocks: the analysts' commands (`analyst/`, over
//! the public API only), the API client the demo uses, the demo itself, and the commands
//! that manage a data directory.

pub mod analyst;
pub mod audit;
pub mod client;
pub mod datadir;
pub mod demo;
pub mod enroll;
pub mod identity;
pub mod manual;
pub mod package;
pub mod rbac;
pub mod settings;
pub mod target;
pub mod users;
