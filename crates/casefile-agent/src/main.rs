//! `casefile-agent`: the endpoint agent.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "casefile-agent",
    version,
    about = "casefile endpoint agent: collects investigation packages on demand"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    log: casefile_agent::cli::AgentLogArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Enroll (once) and then wait for actions and execute them until stopped.
    Run {
        /// Base URL of the casefile server, e.g. https://casefile.example.com:8443
        /// (plain http:// only to a loopback address)
        #[arg(long, env = "CASEFILE_AGENT_SERVER")]
        server: String,
        /// SHA-256 of the server's CA certificate, `sha256:HEX` (printed by `casefile
        /// enroll-token`): the agent trusts only that CA. Needed on the first start.
        #[arg(long, value_name = "sha256:HEX", conflicts_with = "system_roots", env = "CASEFILE_AGENT_CA_SHA256")]
        ca_sha256: Option<casefile_agent::trust::CaPin>,
        /// Trust the system's certificate store instead (a publicly trusted certificate).
        #[arg(long, env = "CASEFILE_AGENT_SYSTEM_ROOTS")]
        system_roots: bool,
        /// Enrollment token from `casefile enroll-token`; needed only for the first start.
        #[arg(long, env = "CASEFILE_ENROLL_TOKEN")]
        enroll_token: Option<String>,
        /// Where the agent keeps its identity and work files.
        #[arg(long, env = "CASEFILE_AGENT_STATE_DIR")]
        state_dir: PathBuf,
        /// Host identity to enroll with instead of /etc/machine-id (for cloned images).
        #[arg(long, env = "CASEFILE_AGENT_HOST_ID")]
        host_id: Option<String>,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Collect a package into a file without any server (air-gapped hosts). The package
    /// is signed; `casefile package verify --public-key` checks it, `casefile package
    /// import` records it on a server.
    Collect {
        /// The package to write, e.g. host.zip
        #[arg(long)]
        output: PathBuf,
        /// The Ed25519 signing key (32 raw bytes, as the agent keeps it in its state
        /// directory). Created there, readable by the owner only, if the file does not
        /// exist. Default: the agent's key in --state-dir, else a new key next to the output.
        #[arg(long)]
        key: Option<PathBuf>,
        /// An enrolled agent's state directory: sign with its registered key.
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// The collection profile: `standard` (MDE's content) or `triage` (standard plus
        /// the filesystem timeline, all logs, configuration, user traces, containers, kernel
        /// state and hidden processes).
        #[arg(long, default_value = casefile_proto::profile::STANDARD, conflicts_with = "profile_file")]
        profile: String,
        /// A profile of your own, written as a server's `[profiles.define.NAME]` table
        /// (TOML; it may extend `standard` or `triage`); its name is the file's stem.
        #[arg(long, value_name = "FILE")]
        profile_file: Option<PathBuf>,
        #[command(flatten)]
        limits: LimitArgs,
    },
}

/// The bounds of every collection, the same for `run` and `collect`.
#[derive(clap::Args)]
struct LimitArgs {
    /// Longest one collector may run, in seconds; a collector still running then is
    /// abandoned and recorded as timed out.
    #[arg(long, default_value_t = 300)]
    collector_timeout: u64,
    /// Stop adding files once the package is this large, in bytes.
    #[arg(long, default_value_t = 4 << 30)]
    max_package_bytes: u64,
    /// Largest single file copied, in bytes (larger ones are cut and marked partial).
    #[arg(long, default_value_t = 32 << 20)]
    max_file_bytes: u64,
    /// Most bytes kept of each log source, newest first.
    #[arg(long, default_value_t = 64 << 20)]
    max_log_bytes: u64,
    /// Seconds an external command (e.g. `nft list ruleset`) may run.
    #[arg(long, default_value_t = 30)]
    command_timeout: u64,
    /// Run collections at normal priority instead of nice 19.
    #[arg(long)]
    normal_priority: bool,
}

impl LimitArgs {
    fn collector_limits(&self) -> casefile_collectors::Limits {
        casefile_collectors::Limits {
            max_file_bytes: self.max_file_bytes,
            max_log_bytes: self.max_log_bytes,
            command_timeout: std::time::Duration::from_secs(self.command_timeout),
            ..casefile_collectors::Limits::default()
        }
    }

    fn governance(&self) -> casefile_agent::Governance {
        casefile_agent::Governance {
            collector_timeout: std::time::Duration::from_secs(self.collector_timeout),
            max_package_bytes: self.max_package_bytes,
            low_priority: !self.normal_priority,
        }
    }
}

/// The profile an offline collection runs: a built-in one by name, or one from a file.
fn offline_profile(name: &str, file: Option<&std::path::Path>) -> anyhow::Result<casefile_proto::profile::Profile> {
    use casefile_proto::profile;
    let mut definitions = profile::builtin_definitions();
    let name = match file {
        None => name.to_owned(),
        Some(path) => {
            let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            let meta = std::fs::metadata(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            anyhow::ensure!(meta.len() <= 1 << 20, "{}: a profile is at most 1 MiB", path.display());
            let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            anyhow::ensure!(
                !definitions.contains_key(&stem),
                "{}: {stem} is a built-in profile's name",
                path.display()
            );
            definitions.insert(stem.clone(), profile::parse_definition(&stem, &text)?);
            stem
        }
    };
    let mut resolved = profile::resolve(&definitions)?;
    resolved.remove(&name).ok_or_else(|| {
        let known = resolved.keys().cloned().collect::<Vec<_>>().join(", ");
        anyhow::anyhow!("no profile is named {name:?}; the profiles are {known}")
    })
}

fn main() -> ExitCode {
    let cli: Cli = casefile_agent::cli::parse_or_exit("casefile-agent");
    casefile_agent::cli::run_main("casefile-agent", "info", cli.log.log_format, execute(cli.command))
}

async fn execute(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run { server, ca_sha256, system_roots, enroll_token, state_dir, host_id, limits } => {
            let shutdown = CancellationToken::new();
            let trigger = shutdown.clone();
            tokio::spawn(async move {
                casefile_agent::cli::stop_signal().await;
                trigger.cancel();
            });
            let mut config = casefile_agent::AgentConfig::new(server, enroll_token, state_dir);
            config.host_id = host_id;
            config.trust = match (ca_sha256, system_roots) {
                (Some(pin), _) => casefile_agent::trust::Trust::Pinned(pin),
                (None, true) => casefile_agent::trust::Trust::SystemRoots,
                (None, false) => casefile_agent::trust::Trust::Saved,
            };
            config.limits = limits.collector_limits();
            config.governance = limits.governance();
            casefile_agent::run(config, shutdown).await?;
        }
        Command::Collect { output, key, state_dir, profile, profile_file, limits } => {
            let profile = offline_profile(&profile, profile_file.as_deref())?;
            let key_path = match (key, state_dir) {
                (Some(key), _) => key,
                (None, Some(dir)) => dir.join(casefile_agent::identity::KEY_FILE),
                (None, None) => output.with_extension("key"),
            };
            let signer = casefile_agent::identity::load_or_create_key(&key_path)?;
            let public_key = casefile_agent::identity::public_key_base64(&signer);
            let mut ctx = casefile_collectors::Context::live(CancellationToken::new());
            ctx.limits = limits.collector_limits();
            let collection = casefile_agent::collect::Collection {
                output,
                meta: casefile_agent::collect::package_meta(None, None),
                ctx,
                collectors: casefile_agent::Collectors::all(),
                profile: Some(profile),
                governance: limits.governance(),
                signer,
                progress: None,
            };
            let package = collection.run().await?;
            println!("{}  {} bytes  {}", package.sha256, package.size, package.path.display());
            println!("signed by public key {public_key} (signing key in {})", key_path.display());
        }
    }
    Ok(())
}
