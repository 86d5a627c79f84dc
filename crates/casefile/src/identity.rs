//! `casefile app ...`, `casefile keys ...`, `casefile enroll-token list|revoke` and
//! `casefile machine reset-identity`: application registrations (the clients of the token
//! endpoint), token signing keys, enrollment tokens and machine identities, managed on the
//! server's data directory.
//! `--json` prints what the admin API answers for the same operation.

use std::io::Write;

use casefile_proto::agent::EnrollmentTokenList;
use casefile_proto::application::{Application, ApplicationList};
use clap::Subcommand;

use crate::settings::ConfigArgs;
pub use crate::target::Target;
use serde::Serialize;

#[derive(Subcommand)]
pub enum AppCommand {
    /// Register an application; prints its client id and its client secret, this once.
    Create {
        #[command(flatten)]
        target: Target,
        /// Unique within the tenant; shown as `requestor` on the actions it creates.
        #[arg(long)]
        name: String,
        /// Application permissions, e.g. Machine.CollectForensics,Machine.Read.All
        #[arg(long, value_delimiter = ',', required = true)]
        roles: Vec<String>,
    },
    /// List the tenant's applications.
    List {
        #[command(flatten)]
        target: Target,
    },
    /// Disable an application: the token endpoint refuses it.
    Disable {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        client_id: String,
    },
    /// Enable a disabled application again.
    Enable {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        client_id: String,
    },
    /// Replace an application's client secret; prints the new one, this once.
    RotateSecret {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        client_id: String,
    },
    /// Replace an application's roles (tokens issued from now on carry them).
    SetRoles {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        client_id: String,
        /// Application permissions, e.g. Machine.Read.All
        #[arg(long, value_delimiter = ',', required = true)]
        roles: Vec<String>,
    },
}

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Add a signing key that signs from now on; older keys keep verifying until retired.
    Rotate {
        #[command(flatten)]
        config: ConfigArgs,
        #[arg(long)]
        json: bool,
    },
    /// Retire a key: tokens and links it signed stop working. The newest key cannot be
    /// retired (rotate first).
    Retire {
        #[command(flatten)]
        config: ConfigArgs,
        /// The key's id (`kid`), as `casefile keys list` shows it.
        #[arg(long)]
        kid: String,
    },
    /// List the signing keys, newest first.
    List {
        #[command(flatten)]
        config: ConfigArgs,
        #[arg(long)]
        json: bool,
    },
}

/// What `app create --json` and `app rotate-secret --json` print: the credentials a
/// client needs, and nothing else.
#[derive(Serialize)]
struct Credentials<'a> {
    client_id: String,
    client_secret: &'a str,
}

pub async fn run_app(command: AppCommand, out: &mut dyn Write) -> anyhow::Result<()> {
    match command {
        AppCommand::Create { target, name, roles } => {
            let admin = target.config.admin().await?;
            let created = admin.create_application(&target.tenant, &name, &roles).await?;
            let app = &created.application;
            if target.json {
                return print_json(
                    out,
                    &Credentials { client_id: app.client_id.to_string(), client_secret: &created.client_secret },
                );
            }
            writeln!(out, "Application '{}' registered in tenant '{}'.", app.name, app.tenant_id)?;
            writeln!(out, "client id:     {}", app.client_id)?;
            writeln!(out, "client secret: {}", created.client_secret)?;
            writeln!(out, "roles:         {}", app.roles.join(", "))?;
            writeln!(out, "The secret is shown only this once: store it now.")?;
            writeln!(
                out,
                "Tokens: POST {{server}}/{}/oauth2/v2.0/token with grant_type=client_credentials, client_id, \
                 client_secret and scope=https://api.securitycenter.microsoft.com/.default",
                app.tenant_id
            )?;
        }
        AppCommand::List { target } => {
            let value = target.config.admin().await?.applications(&target.tenant).await?;
            if target.json {
                return print_json(out, &ApplicationList { value });
            }
            if value.is_empty() {
                writeln!(out, "No applications in tenant '{}'.", target.tenant)?;
            }
            for app in &value {
                let state = if app.enabled { "enabled" } else { "disabled" };
                writeln!(out, "{}  {:<8}  {}  [{}]", app.client_id, state, app.name, app.roles.join(", "))?;
            }
        }
        AppCommand::Disable { target, client_id } => set_enabled(target, &client_id, false, out).await?,
        AppCommand::Enable { target, client_id } => set_enabled(target, &client_id, true, out).await?,
        AppCommand::RotateSecret { target, client_id } => {
            let admin = target.config.admin().await?;
            let rotated = admin.rotate_application_secret(&target.tenant, &client_id).await?;
            let app = &rotated.application;
            if target.json {
                return print_json(
                    out,
                    &Credentials { client_id: app.client_id.to_string(), client_secret: &rotated.client_secret },
                );
            }
            writeln!(out, "New client secret for '{}' ({}): {}", app.name, app.client_id, rotated.client_secret)?;
            writeln!(out, "The old secret no longer works. The new one is shown only this once: store it now.")?;
        }
        AppCommand::SetRoles { target, client_id, roles } => {
            let admin = target.config.admin().await?;
            let app = admin.set_application_roles(&target.tenant, &client_id, &roles).await?;
            report(out, target.json, &app, &format!("now has the roles [{}]", app.roles.join(", ")))?;
        }
    }
    Ok(())
}

async fn set_enabled(target: Target, client_id: &str, enabled: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    let admin = target.config.admin().await?;
    let app = admin.set_application_enabled(&target.tenant, client_id, enabled).await?;
    report(out, target.json, &app, if enabled { "enabled" } else { "disabled: it gets no new tokens" })
}

/// One changed application: as JSON, or one line of text.
fn report(out: &mut dyn Write, json: bool, app: &Application, what: &str) -> anyhow::Result<()> {
    if json {
        return print_json(out, app);
    }
    writeln!(out, "Application '{}' ({}) {what}.", app.name, app.client_id)?;
    Ok(())
}

pub async fn run_keys(command: KeysCommand, out: &mut dyn Write) -> anyhow::Result<()> {
    match command {
        KeysCommand::Rotate { config, json } => {
            let key = config.admin().await?.rotate_key().await?;
            if json {
                return print_json(out, &key);
            }
            writeln!(out, "New signing key {} signs from now on; older keys keep verifying until retired.", key.kid)?;
            writeln!(
                out,
                "Running servers pick it up within auth.key_refresh_seconds (at once on PostgreSQL), or at its first token."
            )?;
        }
        KeysCommand::Retire { config, kid } => {
            config.admin().await?.retire_key(&kid).await?;
            writeln!(
                out,
                "Key {kid} retired: the tokens and links it signed stop working on running servers within auth.key_refresh_seconds."
            )?;
        }
        KeysCommand::List { config, json } => {
            let value = config.admin().await?.keys().await?;
            if json {
                return print_json(out, &serde_json::json!({ "value": value }));
            }
            for key in &value {
                let state = match (key.signing, key.retired_at) {
                    (true, _) => "signing".to_owned(),
                    (false, None) => "verifying".to_owned(),
                    (false, Some(at)) => format!("retired {}", casefile_proto::time::format(&at)),
                };
                writeln!(out, "{}  created {}  {state}", key.kid, casefile_proto::time::format(&key.created_at))?;
            }
        }
    }
    Ok(())
}

fn print_json<T: Serialize + ?Sized>(out: &mut dyn Write, value: &T) -> anyhow::Result<()> {
    serde_json::to_writer(&mut *out, value)?;
    writeln!(out)?;
    Ok(())
}

#[derive(Subcommand)]
pub enum EnrollTokenCommand {
    /// List the tenant's enrollment tokens (ids, uses, state; never the secrets).
    List {
        #[command(flatten)]
        target: Target,
    },
    /// Revoke an enrollment token: no agent enrolls with it from now on.
    Revoke {
        #[command(flatten)]
        target: Target,
        /// The token's id, as `casefile enroll-token list` shows it.
        id: String,
    },
}

pub async fn run_enroll_tokens(command: EnrollTokenCommand, out: &mut dyn Write) -> anyhow::Result<()> {
    match command {
        EnrollTokenCommand::List { target } => {
            let value = target.config.admin().await?.enrollment_tokens(&target.tenant).await?;
            if target.json {
                return print_json(out, &EnrollmentTokenList { value });
            }
            if value.is_empty() {
                writeln!(out, "No enrollment tokens in tenant '{}'.", target.tenant)?;
            }
            for t in &value {
                writeln!(
                    out,
                    "{}  {:<8}  used {}/{}  created {}  expires {}",
                    t.id, t.state, t.uses, t.uses_allowed, t.created_at, t.expires_at
                )?;
            }
        }
        EnrollTokenCommand::Revoke { target, id } => {
            let token = target.config.admin().await?.revoke_enrollment_token(&target.tenant, &id).await?;
            if target.json {
                return print_json(out, &token);
            }
            writeln!(out, "Enrollment token {} revoked: no agent enrolls with it from now on.", token.id)?;
        }
    }
    Ok(())
}

#[derive(Subcommand)]
pub enum MachineCommand {
    /// Void a machine's agent credential and key (audited): its agent is refused from now
    /// on, and the next enrollment by token for that host creates its identity afresh.
    ResetIdentity {
        #[command(flatten)]
        target: Target,
        /// The machine's id (40 hex characters).
        id: String,
        /// Who asks, for the audit trail [default: the login name].
        #[arg(long)]
        actor: Option<String>,
    },
}

pub async fn run_machine(command: MachineCommand, out: &mut dyn Write) -> anyhow::Result<()> {
    match command {
        MachineCommand::ResetIdentity { target, id, actor } => {
            let admin = target.config.admin().await?;
            let actor = actor
                .or_else(|| std::env::var("USER").ok())
                .map(|who| format!("cli:{who}"))
                .unwrap_or_else(|| "cli".to_owned());
            let machine = admin.reset_identity(&target.tenant, &id, &actor).await?;
            if target.json {
                return print_json(
                    out,
                    &serde_json::json!({"machineId": machine.id, "computerDnsName": machine.facts.computer_dns_name, "identityReset": true}),
                );
            }
            writeln!(
                out,
                "Machine {} ('{}'): credential and agent key voided. Its agent is refused from now on; the next \
                 enrollment by token for this host creates its identity afresh.",
                machine.id, machine.facts.computer_dns_name
            )?;
        }
    }
    Ok(())
}
