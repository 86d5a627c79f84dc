//! Server configuration: a TOML file (`--config`), with every field defaulted so that
//! no file at all runs on embedded defaults under the data directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the database, packages and keys live.
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// Base URL clients reach the server at (`https://casefile.example.com`); used for
    /// download links and `@odata.context`. Unset: taken from each request's `Host`.
    pub public_url: Option<String>,
    /// Database URL; unset: the SQLite file `casefile.db` in the data directory.
    pub database_url: Option<String>,
    pub auth: AuthConfig,
    pub agents: AgentConfig,
    pub packages: PackageConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// `iss` of the tokens this server signs and accepts.
    pub issuer: String,
    /// Audiences accepted besides the MDE ones (`auth::MDE_AUDIENCES`).
    pub extra_audiences: Vec<String>,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    pub leeway_seconds: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    /// How long a poll is held open waiting for work.
    pub poll_wait_seconds: u64,
    /// An `InProgress` action whose agent is silent this long ends `TimeOut`.
    pub silent_timeout_seconds: u64,
    /// An `InProgress` action running longer than this ends `TimeOut`, even if its agent
    /// still polls (a hung collector).
    pub max_collection_seconds: u64,
    /// A machine not seen for this long is `Inactive`.
    pub inactive_after_seconds: u64,
    /// Default lifetime of enrollment tokens.
    pub enrollment_token_ttl_seconds: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PackageConfig {
    /// Lifetime of a `getPackageUri` link.
    pub link_ttl_seconds: u64,
    /// Largest package the server accepts.
    pub max_bytes: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("casefile-data"),
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: None,
            database_url: None,
            auth: AuthConfig::default(),
            agents: AgentConfig::default(),
            packages: PackageConfig::default(),
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self { issuer: "casefile".to_owned(), extra_audiences: Vec::new(), leeway_seconds: 60 }
    }
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            poll_wait_seconds: 25,
            silent_timeout_seconds: 10 * 60,
            max_collection_seconds: 3600,
            inactive_after_seconds: 7 * 24 * 3600,
            enrollment_token_ttl_seconds: 7 * 24 * 3600,
        }
    }
}

impl Default for PackageConfig {
    fn default() -> Self {
        Self { link_ttl_seconds: 10 * 60, max_bytes: 64 << 30 }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid config file {path}: {source}")]
    Parse { path: PathBuf, source: Box<toml::de::Error> },
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let raw = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        toml::from_str(&raw).map_err(|source| ConfigError::Parse { path: path.into(), source: Box::new(source) })
    }

    pub fn database_url(&self) -> String {
        self.database_url.clone().unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("casefile.db").display()))
    }

    pub fn packages_dir(&self) -> PathBuf {
        self.data_dir.join("packages")
    }

    pub fn link_ttl(&self) -> Duration {
        Duration::from_secs(self.packages.link_ttl_seconds)
    }
}
