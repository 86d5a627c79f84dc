//! The data directory and tenant a management command works on, the same for `app` and
//! `rbac`.

use std::path::PathBuf;

use clap::Args;

#[derive(Args)]
pub struct Target {
    /// The server's data directory.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// The tenant to work in.
    #[arg(long, default_value = casefile_proto::DEFAULT_TENANT)]
    pub tenant: String,
    /// Print JSON (as the admin API answers) instead of text.
    #[arg(long)]
    pub json: bool,
}
