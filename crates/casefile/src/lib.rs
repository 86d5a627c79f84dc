//! The `casefile` command's building blocks: the API client the demo (and later client
//! commands) use, the demo itself, and the commands that manage a data directory.

pub mod audit;
pub mod client;
pub mod demo;
pub mod enroll;
pub mod identity;
pub mod package;
pub mod rbac;
pub mod target;

/// Opens the data directory a server uses (creating it, like the server's first start),
/// for the commands that work on it directly: tokens, applications, keys.
/// What a server recorded there (its issuer, whether it serves TLS) is kept, so that tokens
/// minted here carry the issuer the server accepts.
pub async fn open_data_dir(data_dir: std::path::PathBuf) -> anyhow::Result<casefile_server::Server> {
    let mut config = casefile_server::ServerConfig { data_dir, ..Default::default() };
    if let Some(endpoint) = casefile_server::Endpoint::load(&config.data_dir) {
        config.auth.issuer = endpoint.issuer;
        // The CLI never serves: once a server has recorded its endpoint (with the CA's pin),
        // a command must not touch the TLS material that server is using.
        config.tls.plain_http = true;
    }
    Ok(casefile_server::Server::open(config).await?)
}
