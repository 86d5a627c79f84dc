//! casefile's endpoint agent. It enrolls once with an enrollment token, then holds a
//! long-poll open to the server; when a collection arrives it writes the package to a
//! file (streamed, bounded memory), uploads it with its SHA-256 and reports failures
//! honestly.

pub mod cli;
pub mod collect;
pub mod host;
pub mod identity;
pub mod outbox;
pub mod runner;
pub mod transport;
pub mod trust;

pub use collect::{Collectors, Governance};
pub use runner::{AgentConfig, run, run_with_ready};

pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot reach the server at {url}: {source}")]
    Unreachable { url: String, source: reqwest::Error },
    #[error("the server refused the agent: {0}")]
    Refused(String),
    #[error("the server answered {status}: {message}")]
    Server { status: u16, message: String },
    #[error("this agent is not enrolled and no enrollment token was given")]
    NotEnrolled,
    #[error("agent state in {path}: {source}")]
    State { path: std::path::PathBuf, source: std::io::Error },
    #[error("collection failed: {0}")]
    Collection(String),
    #[error("invalid server URL '{0}'")]
    BadUrl(String),
    #[error("timed out: {0}")]
    TimedOut(String),
    #[error("refusing plain HTTP to {0}: only a loopback server may be reached without TLS; use https://")]
    PlainHttp(String),
    #[error(
        "no CA is pinned for {0}: give --ca-sha256 (printed by `casefile enroll-token`), or --system-roots for a publicly trusted certificate"
    )]
    NoTrust(String),
    #[error("the server's CA certificate is {got}, not the pinned {expected}: refusing to talk to it")]
    CaMismatch { expected: String, got: String },
    #[error("TLS: {0}")]
    Tls(String),
}

impl AgentError {
    /// The server answered this request for good: sending it again cannot change the
    /// answer (the action is no longer running, the request is wrong). Connection errors,
    /// timeouts, 5xx, `408`, `429` and a refused credential are worth retrying.
    pub fn is_definitive(&self) -> bool {
        matches!(self, Self::Server { status: 400..=499, .. })
            && !matches!(self, Self::Server { status: 408 | 429, .. })
    }
}
