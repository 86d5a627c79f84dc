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
}

#[derive(Subcommand)]
enum Command {
    /// Enroll (once) and then wait for actions and execute them until stopped.
    Run {
        /// Base URL of the casefile server, e.g. http://127.0.0.1:8080
        #[arg(long)]
        server: String,
        /// Enrollment token from `casefile enroll-token`; needed only for the first start.
        #[arg(long, env = "CASEFILE_ENROLL_TOKEN")]
        enroll_token: Option<String>,
        /// Where the agent keeps its identity and work files.
        #[arg(long)]
        state_dir: PathBuf,
        /// Host identity to enroll with instead of /etc/machine-id (for cloned images).
        #[arg(long)]
        host_id: Option<String>,
    },
    /// Collect a package into a file without any server (air-gapped hosts).
    Collect {
        #[arg(long)]
        output: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli: Cli = casefile_agent::cli::parse_or_exit("casefile-agent");
    casefile_agent::cli::run_main("casefile-agent", "info", execute(cli.command))
}

async fn execute(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run { server, enroll_token, state_dir, host_id } => {
            let shutdown = CancellationToken::new();
            let trigger = shutdown.clone();
            tokio::spawn(async move {
                shutdown_signal().await;
                trigger.cancel();
            });
            let mut config = casefile_agent::AgentConfig::new(server, enroll_token, state_dir);
            config.host_id = host_id;
            casefile_agent::run(config, shutdown).await?;
        }
        Command::Collect { output } => {
            let ctx = casefile_collectors::Context::live(CancellationToken::new());
            let meta = casefile_agent::collect::package_meta(None, None);
            let package = tokio::task::spawn_blocking(move || {
                casefile_agent::collect::write_package(&output, meta, &ctx, &casefile_collectors::all())
            })
            .await??;
            println!("{}  {} bytes  {}", package.sha256, package.size, package.path.display());
        }
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return ctrl_c.await.unwrap_or(()),
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
