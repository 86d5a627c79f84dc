//! `casefile user ...`: local console users, managed on the server's data directory. A
//! user's principal name is its name: `casefile rbac role-put --users NAME` gives it a role.

use std::io::{BufRead, Write};

use anyhow::Context as _;
use clap::Subcommand;

use crate::target::Target;

#[derive(Subcommand)]
pub enum UserCommand {
    /// Create a local user; the password is read from standard input (one line).
    Create {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        name: String,
        /// Read the password from standard input (required: never on the command line).
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    /// List the local users.
    List {
        #[command(flatten)]
        target: Target,
    },
    /// Disable a user: no sign-in, and its sessions end now.
    Disable {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        name: String,
    },
    Enable {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        name: String,
    },
    /// Set a new password (from standard input); the user's sessions end.
    ResetPassword {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        name: String,
        #[arg(long, required = true)]
        password_stdin: bool,
    },
}

fn read_password() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).context("reading the password from standard input")?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct UserInfo {
    name: String,
    created_at: String,
    password_changed_at: String,
    disabled: bool,
    failed_sign_ins: u32,
}

fn info(u: &casefile_store::UserRecord) -> UserInfo {
    UserInfo {
        name: u.name.clone(),
        created_at: u.created_at.to_rfc3339(),
        password_changed_at: u.password_changed_at.to_rfc3339(),
        disabled: u.disabled_at.is_some(),
        failed_sign_ins: u.failed_logins,
    }
}

pub async fn run(command: UserCommand, out: &mut dyn Write) -> anyhow::Result<()> {
    match command {
        UserCommand::Create { target, name, .. } => {
            let password = read_password()?;
            let user = target.config.admin().await?.create_user(&target.tenant, &name, &password).await?;
            writeln!(out, "created user {} in tenant {}", user.name, target.tenant)?;
        }
        UserCommand::List { target } => {
            let users = target.config.admin().await?.users(&target.tenant).await?;
            let users: Vec<UserInfo> = users.iter().map(info).collect();
            if target.json {
                writeln!(out, "{}", serde_json::to_string_pretty(&users)?)?;
            } else {
                for u in &users {
                    let state = if u.disabled { "disabled" } else { "enabled" };
                    writeln!(
                        out,
                        "{} ({state}; created {}; {} failed sign-ins)",
                        u.name, u.created_at, u.failed_sign_ins
                    )?;
                }
            }
        }
        UserCommand::Disable { target, name } => {
            target.config.admin().await?.set_user_disabled(&target.tenant, &name, true).await?;
            writeln!(out, "disabled user {name}; its sessions ended")?;
        }
        UserCommand::Enable { target, name } => {
            target.config.admin().await?.set_user_disabled(&target.tenant, &name, false).await?;
            writeln!(out, "enabled user {name}")?;
        }
        UserCommand::ResetPassword { target, name, .. } => {
            let password = read_password()?;
            target.config.admin().await?.reset_user_password(&target.tenant, &name, &password).await?;
            writeln!(out, "set a new password for {name}; its sessions ended")?;
        }
    }
    Ok(())
}
