//! `bench-shutdown`: time from SIGTERM to exit of a real `casefile server` process with
//! N agents parked on their long-polls, against the same server with none parked,
//! measured in the same run (the ratio is what compares between machines).
//!
//! Each round: a fresh data directory, a server process logging JSON (its debug lines
//! say when a poll parks), N agents enrolled over the agent API, each with a poll of
//! 600 s open; once all N are parked, SIGTERM; measured until the process has exited,
//! and until every poll got its answer.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use casefile_proto::agent::{EnrollRequest, EnrollResponse, HostInfo};
use clap::Parser;
use serde_json::Value;

#[derive(Parser)]
#[command(about = "casefile server: SIGTERM to exit with parked agents, as a ratio against none")]
struct Args {
    /// Agents parked on a poll when SIGTERM comes.
    #[arg(long, default_value_t = 100)]
    agents: usize,
    /// Rounds of each case; the median is reported.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// The `casefile` binary [default: beside this one].
    #[arg(long)]
    casefile: Option<PathBuf>,
}

const WAIT_LIMIT: Duration = Duration::from_secs(120);

struct Round {
    /// SIGTERM sent to the process reaped.
    exit: Duration,
    /// SIGTERM sent to the last parked poll answered (zero without agents).
    answered: Duration,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let casefile = match args.casefile {
        Some(path) => path,
        None => std::env::current_exe()?.with_file_name("casefile"),
    };
    ensure!(casefile.exists(), "{} is missing: build it (cargo build --release -p casefile)", casefile.display());
    if cfg!(debug_assertions) {
        println!("debug build of the benchmark (the server's build is what counts: {})", casefile.display());
    }
    let runtime = tokio::runtime::Runtime::new()?;
    let mut idle = Vec::new();
    let mut parked = Vec::new();
    for _ in 0..args.rounds {
        // Interleaved, so that a change in the machine's load hits both cases alike.
        idle.push(runtime.block_on(round(&casefile, 0))?);
        parked.push(runtime.block_on(round(&casefile, args.agents))?);
    }
    let median = |rounds: &[Round], pick: fn(&Round) -> Duration| {
        let mut values: Vec<Duration> = rounds.iter().map(pick).collect();
        values.sort();
        values[values.len() / 2]
    };
    let (idle_exit, parked_exit) = (median(&idle, |r| r.exit), median(&parked, |r| r.exit));
    let parked_answered = median(&parked, |r| r.answered);
    println!("rounds: {} of each case (median shown)", args.rounds);
    println!("{:<28} {:>12} {:>8}", "case", "SIGTERM->exit", "ratio");
    println!("{:<28} {:>10.1}ms {:>8.2}", "0 parked agents", ms(idle_exit), 1.0);
    println!(
        "{:<28} {:>10.1}ms {:>8.2}",
        format!("{} parked agents", args.agents),
        ms(parked_exit),
        parked_exit.as_secs_f64() / idle_exit.as_secs_f64()
    );
    println!("last parked poll answered {:.1}ms after SIGTERM", ms(parked_answered));
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn round(casefile: &Path, agents: usize) -> anyhow::Result<Round> {
    let dir = tempfile::tempdir()?;
    let data_dir = dir.path().join("data");
    let config = dir.path().join("casefile.toml");
    std::fs::write(
        &config,
        "[agents]\npoll_wait_seconds = 600\nsilent_timeout_seconds = 1200\n[rate_limits]\nenabled = false\n",
    )?;
    let mut child = Command::new(casefile)
        .args(["server", "--log-format", "json", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(&data_dir)
        .env("RUST_LOG", "warn,casefile=info,casefile_server::routes::agent=debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let (tx, logs) = mpsc::channel::<Value>();
    let stderr = BufReader::new(child.stderr.take().context("stderr")?);
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            if let Ok(value) = serde_json::from_str(&line) {
                let _ = tx.send(value);
            }
        }
    });
    let wait_log = |message: &str| -> anyhow::Result<Value> {
        loop {
            let line = logs.recv_timeout(WAIT_LIMIT).context("the server's log went quiet")?;
            if line["message"].as_str().is_some_and(|m| m.contains(message)) {
                return Ok(line);
            }
        }
    };
    let listening = wait_log("listening on ")?;
    let message = listening["message"].as_str().unwrap_or_default();
    let base = message[message.find("https://").context("no URL in the listening line")?..].to_owned();
    let ca = std::fs::read(data_dir.join("tls").join("ca.pem"))?;
    let http = reqwest::Client::builder().tls_certs_only([reqwest::Certificate::from_pem(&ca)?]).build()?;

    let mut polls = tokio::task::JoinSet::new();
    if agents > 0 {
        let out = Command::new(casefile)
            .args(["enroll-token", "--uses", &agents.to_string(), "--data-dir"])
            .arg(&data_dir)
            .output()?;
        ensure!(out.status.success(), "enroll-token: {}", String::from_utf8_lossy(&out.stderr));
        let token = String::from_utf8(out.stdout)?.lines().next().unwrap_or_default().trim().to_owned();
        for i in 0..agents {
            let enrolled: EnrollResponse = http
                .post(format!("{base}/agent/v1/enroll"))
                .bearer_auth(&token)
                .json(&enroll_request(i))
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            let (http, base) = (http.clone(), base.clone());
            polls.spawn(async move {
                let answer = http
                    .get(format!("{base}/agent/v1/actions/next?wait=600"))
                    .bearer_auth(enrolled.credential)
                    .send()
                    .await;
                (answer.map(|r| r.status().as_u16()), Instant::now())
            });
        }
        for _ in 0..agents {
            wait_log("poll parked")?;
        }
    }
    let sent = Instant::now();
    ensure!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status()?.success(), "kill failed");
    let status = tokio::task::spawn_blocking(move || child.wait()).await??;
    let exit = sent.elapsed();
    ensure!(status.code() == Some(0), "the server exited with {status}");
    let mut answered = Duration::ZERO;
    while let Some(done) = polls.join_next().await {
        let (answer, at) = done?;
        match answer {
            Ok(204) => answered = answered.max(at.duration_since(sent)),
            Ok(other) => bail!("a parked poll was answered {other}, not 204"),
            Err(e) => bail!("a parked poll got no answer: {e}"),
        }
    }
    Ok(Round { exit, answered })
}

fn enroll_request(i: usize) -> EnrollRequest {
    EnrollRequest {
        host_id: format!("bench-host-{i}"),
        host: HostInfo {
            computer_dns_name: format!("bench-host-{i}.example"),
            os_platform: "Linux".into(),
            os_version: None,
            os_architecture: None,
            os_build: None,
            agent_version: "bench".into(),
            ip_addresses: vec![],
        },
        public_key: None,
        proof: None,
    }
}
