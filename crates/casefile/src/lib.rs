//! The `casefile` command's building blocks: the API client the demo (and later client
//! commands) use, and the demo itself.

pub mod client;
pub mod demo;
pub mod package;
