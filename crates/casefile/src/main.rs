//! `casefile`: runs the server and the demo, and mints tokens for a data directory.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use casefile::settings::ConfigArgs;
use casefile_server::{Server, TokenRequest};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "casefile",
    version,
    about = "casefile: collect forensic investigation packages from endpoints, MDE-compatible"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    log: casefile_agent::cli::LogArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server. Settings: flag > CASEFILE_* environment > --config file > default.
    Server {
        #[command(flatten)]
        config: ConfigArgs,
        /// Address to listen on [env: CASEFILE_LISTEN] [default: 127.0.0.1:8080]
        #[arg(long)]
        listen: Option<String>,
    },
    /// Check the configuration and print the effective one, secrets redacted.
    Config {
        #[command(subcommand)]
        command: casefile::datadir::ConfigCommand,
    },
    /// Apply pending database migrations (after copying the database to
    /// <data_dir>/backups/); the server refuses to start until they are applied.
    Migrate {
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Move the records between databases: `store copy` puts an embedded (SQLite)
    /// installation into an empty PostgreSQL database.
    Store {
        #[command(subcommand)]
        command: casefile::datadir::StoreCommand,
    },
    /// Back up a (running) server's database, signing keys, packages, TLS material and
    /// configuration into one archive.
    Backup(casefile::datadir::BackupArgs),
    /// Restore an archive `casefile backup` wrote into an empty data directory (the
    /// server stopped).
    Restore(casefile::datadir::RestoreArgs),
    /// Print a bearer token the configured server accepts, carrying the given permissions.
    Token {
        #[command(flatten)]
        config: ConfigArgs,
        /// Application permissions for the `roles` claim, e.g. Machine.CollectForensics,Machine.Read.All
        #[arg(long, value_delimiter = ',', required = true)]
        roles: Vec<String>,
        #[arg(long, default_value = casefile_proto::DEFAULT_TENANT)]
        tenant: String,
        /// Who the token identifies; shown as `requestor` on actions.
        #[arg(long, default_value = "casefile-cli")]
        requestor: String,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
    },
    /// Print a token an agent uses to enroll (single-use unless --uses) and the agent
    /// command that uses it (with the server's public URL and the SHA-256 of the CA the
    /// agent pins); `list` and `revoke` manage the tokens.
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    EnrollToken {
        #[command(subcommand)]
        command: Option<casefile::identity::EnrollTokenCommand>,
        #[command(flatten)]
        config: ConfigArgs,
        /// The URL agents reach the server at [default: the server's public URL]
        #[arg(long)]
        server: Option<String>,
        #[arg(long, default_value = casefile_proto::DEFAULT_TENANT)]
        tenant: String,
        /// Lifetime in seconds [default: 7 days; at most 365 days]
        #[arg(long)]
        ttl: Option<u64>,
        /// How many agents may enroll with it.
        #[arg(long, default_value_t = 1)]
        uses: u32,
    },
    /// Manage machines' identities.
    Machine {
        #[command(subcommand)]
        command: casefile::identity::MachineCommand,
    },
    /// Manage application registrations: the clients of the token endpoint.
    App {
        #[command(subcommand)]
        command: casefile::identity::AppCommand,
    },
    /// Manage the token signing keys: rotate, retire, list.
    Keys {
        #[command(subcommand)]
        command: casefile::identity::KeysCommand,
    },
    /// Read the audit trail: every state-changing call, token issued, refused access, link
    /// issued and package download.
    Audit(casefile::audit::AuditArgs),
    /// Manage roles and device groups for delegated users.
    Rbac {
        #[command(subcommand)]
        command: casefile::rbac::RbacCommand,
    },
    /// Local users of the web console (name and password).
    User {
        #[command(subcommand)]
        command: casefile::users::UserCommand,
    },
    /// Check or import investigation packages.
    Package {
        #[command(subcommand)]
        command: PackageCommand,
    },
    /// Start a server and an agent here and walk the whole collection flow.
    Demo {
        #[arg(long, default_value = "casefile-data")]
        data_dir: PathBuf,
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Exit after the download (0 on success) instead of serving on.
        #[arg(long)]
        exit_after_collect: bool,
    },
}

#[derive(Subcommand)]
enum PackageCommand {
    /// Check a package offline: every file against manifest.json, and the manifest's
    /// signature. Exits 1 and names each failing file when it is not authentic.
    Verify {
        /// The package zip.
        file: PathBuf,
        /// The signer's Ed25519 public key (base64, or a file holding it): the package must
        /// be signed by it. Without it, only the package's integrity is checked.
        #[arg(long)]
        public_key: Option<String>,
    },
    /// Upload a package collected offline (`casefile-agent collect`) as a collection of
    /// MACHINE; the server verifies it and records a Succeeded action.
    Import {
        /// The package zip.
        file: PathBuf,
        /// Machine id or computer name the package was collected on.
        #[arg(long)]
        machine: String,
        /// Base URL of the casefile server.
        #[arg(long, env = "CASEFILE_SERVER", default_value = "https://127.0.0.1:8080")]
        server: String,
        /// Trust only this CA certificate (PEM), e.g. the server's `<data_dir>/tls/ca.pem`;
        /// default: the system's roots.
        #[arg(long, env = "CASEFILE_CACERT")]
        cacert: Option<PathBuf>,
        /// Bearer token with Machine.CollectForensics (see `casefile token`).
        #[arg(long, env = "CASEFILE_TOKEN")]
        token: String,
        /// Recorded as the action's requestorComment.
        #[arg(long)]
        comment: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli: Cli = casefile_agent::cli::parse_or_exit("casefile");
    // The demo prints its own steps; the server logs.
    let default_filter = if matches!(cli.command, Command::Demo { .. }) { "warn" } else { "info" };
    casefile_agent::cli::run_main("casefile", default_filter, cli.log.log_format, execute(cli.command))
}

async fn execute(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Server { config, listen } => {
            let mut config = config.load(listen.as_deref())?;
            // One server per data directory; `migrate` and `restore` wait for it to stop.
            let _owner = casefile_server::admin::DataDirLock::acquire(&config.data_dir)?;
            let listen = config.listen;
            let listener =
                tokio::net::TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
            // `--listen …:0`: the public URL and the default issuer name the port really bound,
            // not port 0, so tokens and the agent command stay right.
            config.listen.set_port(listener.local_addr()?.port());
            let server = Server::open_checked(config).await?;
            casefile_server::tls::check_plain_http(&server.state().config, listener.local_addr()?.ip())?;
            let scheme = if server.tls().is_some() { "https" } else { "http" };
            // Before the line that says it is up: the CLI's tokens name the recorded issuer.
            server.record_endpoint();
            tracing::info!("casefile server listening on {scheme}://{}", listener.local_addr()?);
            if let Some(tls) = server.tls() {
                tracing::info!(ca_sha256 = %tls.ca_pin(), "agents pin this CA (see `casefile enroll-token`)");
            }
            server.serve(listener, casefile_agent::cli::stop_signal()).await?;
        }
        Command::Config { command } => casefile::datadir::config(command, &mut casefile_agent::cli::stdout())?,
        Command::Migrate { config } => casefile::datadir::migrate(config, &mut casefile_agent::cli::stdout()).await?,
        Command::Store { command } => casefile::datadir::store(command, &mut casefile_agent::cli::stdout()).await?,
        Command::Backup(args) => casefile::datadir::backup(args, &mut casefile_agent::cli::stdout()).await?,
        Command::Restore(args) => casefile::datadir::restore(args, &mut casefile_agent::cli::stdout())?,
        Command::Token { config, roles, tenant, requestor, ttl } => {
            let admin = config.admin().await?;
            let token = admin.mint_token(&TokenRequest { tenant, roles, requestor, ttl: Duration::from_secs(ttl) })?;
            writeln!(casefile_agent::cli::stdout(), "{token}")?;
        }
        Command::EnrollToken { command: Some(command), .. } => {
            casefile::identity::run_enroll_tokens(command, &mut casefile_agent::cli::stdout()).await?
        }
        Command::EnrollToken { command: None, config, server: url, tenant, ttl, uses } => {
            let admin = config.admin().await?;
            let token = admin.create_enrollment_token(&tenant, ttl.map(Duration::from_secs), uses).await?;
            let mut out = casefile_agent::cli::stdout();
            writeln!(out, "{token}")?;
            let endpoint = casefile::enroll::endpoint_for(admin.endpoint(), url);
            writeln!(out, "{}", casefile::enroll::agent_command(&endpoint, &token))?;
        }
        Command::Machine { command } => {
            casefile::identity::run_machine(command, &mut casefile_agent::cli::stdout()).await?
        }
        Command::App { command } => casefile::identity::run_app(command, &mut casefile_agent::cli::stdout()).await?,
        Command::Keys { command } => casefile::identity::run_keys(command, &mut casefile_agent::cli::stdout()).await?,
        Command::Audit(args) => casefile::audit::run(args, &mut casefile_agent::cli::stdout()).await?,
        Command::Rbac { command } => casefile::rbac::run(command, &mut casefile_agent::cli::stdout()).await?,
        Command::User { command } => casefile::users::run(command, &mut casefile_agent::cli::stdout()).await?,
        Command::Package { command: PackageCommand::Verify { file, public_key } } => {
            let authentic =
                casefile::package::verify(&file, public_key.as_deref(), &mut casefile_agent::cli::stdout())?;
            if !authentic {
                anyhow::bail!("{} did not verify", file.display());
            }
        }
        Command::Package { command: PackageCommand::Import { file, machine, server, cacert, token, comment } } => {
            let action =
                casefile::package::import(&server, &token, &machine, &file, comment.as_deref(), cacert.as_deref())
                    .await?;
            writeln!(
                std::io::stdout(),
                "imported as action {} ({}): {}",
                action.id,
                action.status,
                action.troubleshoot_info.unwrap_or_default()
            )?;
        }
        Command::Demo { data_dir, listen, exit_after_collect } => {
            casefile::demo::run(casefile::demo::DemoOptions { data_dir, listen, exit_after_collect }).await?;
        }
    }
    Ok(())
}
