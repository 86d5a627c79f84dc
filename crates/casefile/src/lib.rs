//! The `casefile` command's building blocks: the API client the demo (and later client
//! commands) use, the demo itself, and the commands that manage a data directory.

pub mod audit;
pub mod client;
pub mod demo;
pub mod identity;
pub mod package;
pub mod rbac;
pub mod target;

/// Opens the data directory a server uses (creating it, like the server's first start),
/// for the commands that work on it directly: tokens, applications, keys.
pub async fn open_data_dir(data_dir: std::path::PathBuf) -> anyhow::Result<casefile_server::Server> {
    Ok(casefile_server::Server::open(casefile_server::ServerConfig { data_dir, ..Default::default() }).await?)
}
