//! The data directory and tenant a management command works on, the same for `app` and
//! `rbac`.

use clap::Args;

use crate::settings::ConfigArgs;

#[derive(Args)]
pub struct Target {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// The tenant to work in.
    #[arg(long, default_value = casefile_proto::DEFAULT_TENANT)]
    pub tenant: String,
    /// Print JSON (as the admin API answers) instead of text.
    #[arg(long)]
    pub json: bool,
}
