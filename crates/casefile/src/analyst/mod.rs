//! The analysts' commands: `login`, `logout`, `machines`, `collect`, `actions`,
//! `download`, `cancel`. They talk to a running server over its public HTTP API only,
//! as an MDE script does (a token from the token endpoint, then `/api/...`), with the
//! credentials `casefile login` saved; they never open a data directory or a store.

pub mod api;
pub mod credentials;
pub mod progress;

mod actions;
mod collect;
mod download;
mod login;
mod machines;
mod output;

use std::path::PathBuf;

use casefile_agent::trust::CaPin;
use clap::{ArgGroup, Args};

pub use api::ApiError;

#[derive(Args)]
#[command(group(ArgGroup::new("who").required(true).args(["client_id", "user"])))]
pub struct LoginArgs {
    /// The server's base URL, e.g. https://casefile.example.com:8443 (http:// only to loopback).
    #[arg(long, env = "CASEFILE_SERVER")]
    pub server: String,
    /// The tenant to sign in to.
    #[arg(long, default_value = casefile_proto::DEFAULT_TENANT)]
    pub tenant: String,
    /// An application's client id (`casefile app create`); its secret is read from stdin.
    #[arg(long, requires = "client_secret_stdin")]
    pub client_id: Option<String>,
    /// Read the client secret from the first line of standard input.
    #[arg(long, requires = "client_id")]
    pub client_secret_stdin: bool,
    /// A local user's name; the password is read from stdin and never saved.
    #[arg(long, requires = "password_stdin")]
    pub user: Option<String>,
    /// Read the password from the first line of standard input.
    #[arg(long, requires = "user")]
    pub password_stdin: bool,
    /// Trust only the server's CA with this SHA-256 (`sha256:HEX`, printed by the server at
    /// start and by `casefile enroll-token`).
    #[arg(long, conflicts_with = "system_roots")]
    pub ca_sha256: Option<CaPin>,
    /// Trust the system's roots (a publicly trusted server certificate).
    #[arg(long)]
    pub system_roots: bool,
}

#[derive(Args)]
pub struct ListArgs {
    /// An OData $filter, e.g. "healthStatus eq 'Active'" or "status eq 'Pending'".
    #[arg(long)]
    pub filter: Option<String>,
    /// At most this many (pages are followed through @odata.nextLink) [default: all].
    #[arg(long)]
    pub top: Option<u64>,
    /// Entities asked for per request ($top of each page, 1 to 10000).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub page_size: u64,
    /// Print one JSON array of the entities, as the API answers them.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct CollectArgs {
    /// The machine: its id, or its computer name when exactly one machine reports it.
    pub machine: String,
    /// Why (recorded as the action's requestorComment).
    #[arg(long)]
    pub comment: String,
    /// The collection profile: `standard` (MDE's content), `triage`, or one the server's
    /// administrator defined. Default: the device group's, else the server's.
    #[arg(long)]
    pub profile: Option<String>,
    /// Follow the action until it is final; exit 1 unless it Succeeded.
    #[arg(long)]
    pub wait: bool,
    /// Wait, then download the package into DIR as <action id>.zip.
    #[arg(long, value_name = "DIR")]
    pub download: Option<PathBuf>,
    /// Print the action as JSON (with --download: {"action": ..., "download": ...}).
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct DownloadArgs {
    /// The id of a Succeeded collection.
    pub action: String,
    /// Where to save the zip [default: ./<action id>.zip]; an existing file is not overwritten.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Print {"action", "path", "size", "sha256"} as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct CancelArgs {
    /// The id of an action that is not final yet.
    pub action: String,
    /// Why (recorded as the action's cancellationComment).
    #[arg(long)]
    pub comment: String,
    /// Print the cancelled action as JSON.
    #[arg(long)]
    pub json: bool,
}

pub use actions::{actions, cancel};
pub use collect::collect;
pub use download::download;
pub use login::{login, logout};
pub use machines::machines;
