//! One simulator process: `count` agents that enroll, say hello and hold their long-poll
//! exactly as `casefile-agent` does, through its own `trust` and `transport` code (the
//! pinned CA fetched over the unverified bootstrap connection, then HTTPS trusting only
//! it). A process holds a few thousand connections: these machines cap a process at
//! 20,000 open files, so the coordinator starts several, each from its own loopback
//! source address (so that no one address runs out of ephemeral ports).
//!
//! Lines on stdout tell the coordinator what happened (`machine`, `enrolled`, `polling`,
//! `got`, `ready`); it sends `park` on stdin, and closing stdin ends the process.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use casefile_agent::transport::Transport;
use casefile_agent::trust::{CaPin, Trust};
use casefile_proto::agent::{ActionFailure, AgentTask, EnrollRequest, HelloRequest, HostInfo};
use futures::{StreamExt as _, TryStreamExt as _};

#[derive(clap::Args, Debug)]
pub struct WorkerArgs {
    /// The server's URL (`https://127.0.0.1:PORT`).
    #[arg(long)]
    pub server: String,
    /// `sha256:HEX` of the server's CA, as `casefile enroll-token` prints it.
    #[arg(long)]
    pub ca_sha256: String,
    #[arg(long)]
    pub enroll_token: String,
    /// Index of this process's first agent (host ids are `bench-agent-<index>`).
    #[arg(long)]
    pub first: usize,
    #[arg(long)]
    pub count: usize,
    /// Loopback source address of this process's connections.
    #[arg(long)]
    pub source: IpAddr,
    /// New long-polls started per second when parking (a ramp, so that the server is not
    /// handed every TLS handshake in the same instant).
    #[arg(long, default_value_t = 500)]
    pub ramp_per_second: usize,
}

/// What an enrolled agent keeps.
#[derive(Clone)]
struct Agent {
    index: usize,
    credential: String,
    wait: Duration,
}

/// Nanoseconds since the Unix epoch: the coordinator, another process on the same
/// machine, compares it with when it called the API.
pub fn unix_ns() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos()
}

async fn transport(args: &WorkerArgs, state_dir: &std::path::Path) -> anyhow::Result<Transport> {
    let url: url::Url = args.server.parse().context("--server")?;
    let pin: CaPin = args.ca_sha256.parse().map_err(anyhow::Error::msg)?;
    // The agent's own trust code: fetches the CA on first use and checks it against the pin.
    let builder = casefile_agent::trust::client_builder(&url, &Trust::Pinned(pin), state_dir)
        .await?
        .local_address(args.source)
        .pool_idle_timeout(Duration::from_secs(30));
    Ok(Transport::with_client_builder(&args.server, builder)?)
}

fn host(index: usize) -> HostInfo {
    HostInfo {
        computer_dns_name: format!("bench-agent-{index}.example"),
        os_platform: "Linux".into(),
        os_version: Some("bench".into()),
        os_architecture: Some("x86_64".into()),
        os_build: None,
        agent_version: "bench-agents".into(),
        ip_addresses: vec![],
    }
}

pub async fn run(args: WorkerArgs) -> anyhow::Result<()> {
    let state = tempfile::tempdir()?;
    let enrolling = transport(&args, state.path()).await?;
    let started = std::time::Instant::now();
    // A few at a time, as agents starting across a fleet would: enrollment is a write.
    let agents: Vec<Agent> = futures::stream::iter(args.first..args.first + args.count)
        .map(|index| {
            let transport = enrolling.clone();
            let token = args.enroll_token.clone();
            async move {
                let request = EnrollRequest {
                    host_id: format!("bench-agent-{index}"),
                    host: host(index),
                    public_key: None,
                    proof: None,
                };
                let enrolled = transport.enroll(&token, &request).await.with_context(|| format!("enroll {index}"))?;
                let agent = transport.with_credential(enrolled.credential.clone());
                let hello = agent.hello(&HelloRequest { host: host(index), holding: vec![] }).await?;
                println!("machine {index} {}", enrolled.machine_id);
                anyhow::Ok(Agent {
                    index,
                    credential: enrolled.credential,
                    wait: Duration::from_secs(hello.poll_wait_seconds),
                })
            }
        })
        .buffer_unordered(8)
        .try_collect()
        .await?;
    // Its connections close with it: the server holds none of this process's sockets now.
    drop(enrolling);
    println!("enrolled {} {}", agents.len(), started.elapsed().as_millis());

    // Commands from the coordinator, read on a thread of their own (stdin blocks).
    let (tx, mut commands) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    while let Some(line) = commands.recv().await {
        if line.trim() == "park" {
            break;
        }
    }
    let polling = transport(&args, state.path()).await?;
    let counts = Arc::new(Counts::default());
    let mut tasks = tokio::task::JoinSet::new();
    start(&polling, &agents, None, args.ramp_per_second, &counts, &mut tasks).await;
    // Until the coordinator closes stdin (or dies): the process exit closes every socket.
    while let Some(line) = commands.recv().await {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("count") => println!("count {}", counts.empty.load(Ordering::Relaxed)),
            // Every agent polls again with this wait: the re-poll cycle, measured.
            Some("cycle") => {
                let wait = words.next().and_then(|w| w.parse().ok()).map(Duration::from_secs);
                tasks.shutdown().await;
                start(&polling, &agents, wait, args.ramp_per_second, &counts, &mut tasks).await;
            }
            _ => {}
        }
    }
    tasks.shutdown().await;
    let failed = counts.errors.load(Ordering::Relaxed);
    if failed > 0 {
        eprintln!("worker {}: {failed} failed requests (retried)", args.source);
    }
    Ok(())
}

#[derive(Default)]
struct Counts {
    /// Polls answered `204` (nothing to do).
    empty: AtomicU64,
    errors: AtomicU64,
}

/// Starts every agent's poll loop, `ramp` a second; `wait` overrides the poll wait the
/// server announced. Says `polling` once all are started.
async fn start(
    transport: &Transport,
    agents: &[Agent],
    wait: Option<Duration>,
    ramp: usize,
    counts: &Arc<Counts>,
    tasks: &mut tokio::task::JoinSet<()>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / ramp.max(1) as f64));
    for agent in agents {
        tick.tick().await;
        let mut agent = agent.clone();
        agent.wait = wait.unwrap_or(agent.wait);
        let transport = transport.clone().with_credential(agent.credential.clone());
        tasks.spawn(poll_loop(transport, agent, counts.clone()));
    }
    println!("polling");
}

/// The agent's main loop, minus the collection: a received collection is confirmed and
/// reported failed at once, so that the machine can take the next one.
async fn poll_loop(transport: Transport, agent: Agent, counts: Arc<Counts>) {
    let report = |e: casefile_agent::AgentError| {
        // The first few say what went wrong; the rest are counted.
        if counts.errors.fetch_add(1, Ordering::Relaxed) < 5 {
            eprintln!("agent {}: {e}", agent.index);
        }
    };
    loop {
        match transport.next_task(agent.wait).await {
            Ok(None) => {
                counts.empty.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Some(AgentTask::CollectInvestigationPackage { action_id, .. })) => {
                println!("got {} {action_id} {}", agent.index, unix_ns());
                if let Err(e) = transport.accept(action_id).await {
                    report(e);
                }
                let failure =
                    ActionFailure { error_h_result: 1, troubleshoot_info: "bench-agents: no collection".into() };
                if let Err(e) = transport.report_failure(action_id, &failure).await {
                    report(e);
                }
                println!("ready {} {action_id}", agent.index);
            }
            Ok(Some(AgentTask::Cancel { action_id })) => {
                if let Err(e) = transport.confirm_cancel(action_id).await {
                    report(e);
                }
            }
            Err(e) => {
                report(e);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}
