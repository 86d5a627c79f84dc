//! The `casefile` command's building blocks: the API client the demo (and later client
//! commands) use, the demo itself, and the commands that manage a data directory.

pub mod audit;
pub mod client;
pub mod datadir;
pub mod demo;
pub mod enroll;
pub mod identity;
pub mod package;
pub mod rbac;
pub mod settings;
pub mod target;
pub mod users;
