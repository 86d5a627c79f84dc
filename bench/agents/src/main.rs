//! `bench-agents`: N simulated agents parked on their long-polls against ONE real
//! `casefile server` process, over real HTTPS with the pinned CA, enrolled with a real
//! enrollment token. For each N: the server's RSS and CPU while every agent is parked
//! (against the same server with the same machines enrolled and none connected), memory
//! per parked agent, and dispatch latency (from the public API call that creates a
//! collection to the simulated agent holding it), for single actions one after another
//! and for a burst. With `--baseline OTHER_CASEFILE` each N also runs on that binary, in
//! the same run, and the figures are printed as ratios.
//!
//! The agents live in several processes of this binary (`bench-agents worker`), each
//! from its own loopback source address: a process here may hold at most 20,000 files.

mod worker;

use std::collections::HashMap;
use std::io::{BufRead as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use clap::{Parser, Subcommand};
use tokio::sync::mpsc;
use uuid::Uuid;

#[derive(Parser)]
#[command(about = "N agents parked on long-polls against one casefile server: memory, idle CPU, dispatch latency")]
struct Args {
    #[command(subcommand)]
    worker: Option<Sub>,
    /// Numbers of agents, one server run each.
    #[arg(long, value_delimiter = ',', default_value = "1000,5000,15000")]
    agents: Vec<usize>,
    /// The `casefile` binary measured [default: beside this one].
    #[arg(long)]
    casefile: Option<PathBuf>,
    /// Another `casefile` binary (e.g. built from the previous commit), run for every N in
    /// the same run, before the measured one; figures are printed as ratios against it.
    #[arg(long)]
    baseline: Option<PathBuf>,
    /// Agents per simulator process (each holds one connection per agent).
    #[arg(long, default_value_t = 4000)]
    per_process: usize,
    /// Length of each idle measurement (none parked, all parked).
    #[arg(long, default_value_t = 30)]
    idle_seconds: u64,
    /// Collections created one after another, each to a parked agent.
    #[arg(long, default_value_t = 200)]
    sequential: usize,
    /// Collections created at once (to distinct parked agents), over `burst_connections`.
    #[arg(long, default_value_t = 500)]
    burst: usize,
    #[arg(long, default_value_t = 16)]
    burst_connections: usize,
    /// The server's `agents.poll_wait_seconds` (agents take it from `hello`): longer than
    /// a run, so that the idle figures hold parked polls only.
    #[arg(long, default_value_t = 1800)]
    poll_wait: u64,
    /// Then every agent polls with this wait (seconds; 0: skip), to measure what a
    /// poll cycle (answer `204`, poll again) costs the server.
    #[arg(long, default_value_t = 20)]
    cycle_wait: u64,
    /// New long-polls per second while parking, over all processes.
    #[arg(long, default_value_t = 2000)]
    ramp_per_second: usize,
    /// A quick check of the bench itself: 20 agents, 2 s windows, few actions.
    #[arg(long)]
    smoke: bool,
}

#[derive(Subcommand)]
enum Sub {
    /// One simulator process (started by the coordinator).
    #[command(hide = true)]
    Worker(worker::WorkerArgs),
}

fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    if let Some(Sub::Worker(worker)) = args.worker.take() {
        return runtime.block_on(worker::run(worker));
    }
    if args.smoke {
        (args.agents, args.idle_seconds, args.sequential, args.burst, args.cycle_wait) = (vec![20], 2, 5, 10, 2);
    }
    let casefile = match &args.casefile {
        Some(path) => path.clone(),
        None => std::env::current_exe()?.with_file_name("casefile"),
    };
    ensure!(casefile.exists(), "{} is missing: build it (cargo build --release -p casefile)", casefile.display());
    if let Some(baseline) = &args.baseline {
        ensure!(baseline.exists(), "--baseline {} is missing", baseline.display());
    }
    let nofile = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|l| l.starts_with("Max open files"))
                .map(|l| l.split_whitespace().nth(3).unwrap_or("?").to_owned())
        })
        .unwrap_or_else(|| "?".into());
    println!(
        "bench-agents: {} (open files per process: {nofile}; {} agents per simulator process)",
        casefile.display(),
        args.per_process
    );
    if cfg!(debug_assertions) {
        println!("debug build of the simulator: its own overhead is larger, the server's build is what counts");
    }
    let started = Instant::now();
    let mut rows = Vec::new();
    for &n in &args.agents {
        let before = match &args.baseline {
            Some(baseline) => Some(runtime.block_on(run(&args, baseline, n, "baseline"))?),
            None => None,
        };
        let after = runtime.block_on(run(&args, &casefile, n, "measured"))?;
        rows.push((n, before, after));
    }
    report(&args, &rows);
    println!("whole run: {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// What one server run measured.
#[derive(Debug, Clone)]
struct Figures {
    enroll: Duration,
    park: Duration,
    rss_start_kib: u64,
    rss_none_kib: u64,
    rss_parked_kib: u64,
    cpu_none: f64,
    cpu_parked: f64,
    sequential: Vec<Duration>,
    burst: Vec<Duration>,
    burst_span: Duration,
    rss_after_kib: u64,
    workers_rss_kib: u64,
    /// Polls answered per second, and the server's CPU (cores), in the re-poll cycle.
    cycle: Option<(f64, f64)>,
    /// Sequential dispatch latencies during the re-poll cycle.
    cycling: Vec<Duration>,
}

impl Figures {
    fn per_agent_kib(&self, n: usize) -> f64 {
        (self.rss_parked_kib as f64 - self.rss_none_kib as f64) / n as f64
    }
}

fn percentile(values: &[Duration], p: f64) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    let mut sorted = values.to_vec();
    sorted.sort();
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn report(args: &Args, rows: &[(usize, Option<Figures>, Figures)]) {
    println!();
    println!(
        "{:<10} {:>7} {:>9} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "agents",
        "enroll",
        "RSS none",
        "RSS park",
        "KiB/agt",
        "CPU none",
        "CPU park",
        "seq p50",
        "seq p99",
        "bst p50",
        "bst p99",
        "bst span",
        "RSS end"
    );
    println!(
        "{:<10} {:>7} {:>9} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "", "s", "MiB", "MiB", "", "% core", "% core", "ms", "ms", "ms", "ms", "ms", "MiB"
    );
    let line = |label: String, n: usize, f: &Figures| {
        println!(
            "{:<10} {:>7.1} {:>9.1} {:>9.1} {:>9.2} {:>8.2} {:>8.2} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>8.0} {:>8.1}",
            label,
            f.enroll.as_secs_f64(),
            mib(f.rss_none_kib),
            mib(f.rss_parked_kib),
            f.per_agent_kib(n),
            f.cpu_none * 100.0,
            f.cpu_parked * 100.0,
            ms(percentile(&f.sequential, 50.0)),
            ms(percentile(&f.sequential, 99.0)),
            ms(percentile(&f.burst, 50.0)),
            ms(percentile(&f.burst, 99.0)),
            ms(f.burst_span),
            mib(f.rss_after_kib),
        );
    };
    for (n, before, after) in rows {
        if let Some(before) = before {
            line(format!("{n} base"), *n, before);
        }
        line(format!("{n}"), *n, after);
    }
    println!();
    for (n, before, after) in rows {
        println!(
            "N={n}: server RSS at start {:.1} MiB; parking took {:.1} s; simulator processes held {:.0} MiB",
            mib(after.rss_start_kib),
            after.park.as_secs_f64(),
            mib(after.workers_rss_kib)
        );
        for (label, f) in [("baseline", before.as_ref()), ("measured", Some(after))] {
            let Some(f) = f else { continue };
            if let Some((polls, cpu)) = f.cycle {
                println!(
                    "N={n} {label}: re-poll cycle {polls:.0} polls/s, server CPU {:.1}% of a core ({:.0} us per poll); dispatch meanwhile p50 {:.1} ms, p99 {:.1} ms",
                    cpu * 100.0,
                    if polls > 0.0 { cpu / polls * 1e6 } else { f64::NAN },
                    ms(percentile(&f.cycling, 50.0)),
                    ms(percentile(&f.cycling, 99.0))
                );
            }
        }
        if let Some(before) = before {
            let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
            println!(
                "N={n}: measured / baseline: memory per agent {:.2}, idle CPU parked {:.2}, sequential p50 {:.2} p99 {:.2}, burst p50 {:.2} p99 {:.2}",
                ratio(after.per_agent_kib(*n), before.per_agent_kib(*n)),
                ratio(after.cpu_parked, before.cpu_parked),
                ratio(ms(percentile(&after.sequential, 50.0)), ms(percentile(&before.sequential, 50.0))),
                ratio(ms(percentile(&after.sequential, 99.0)), ms(percentile(&before.sequential, 99.0))),
                ratio(ms(percentile(&after.burst, 50.0)), ms(percentile(&before.burst, 50.0))),
                ratio(ms(percentile(&after.burst, 99.0)), ms(percentile(&before.burst, 99.0))),
            );
        }
    }
    // The projection takes the largest N measured: its per-agent figures are the least
    // diluted by the server's fixed costs.
    let Some((n, _, f)) = rows.iter().max_by_key(|(n, _, _)| *n) else { return };
    let per_agent = f.per_agent_kib(*n);
    let target = 100_000.0;
    let memory = mib(f.rss_none_kib) + per_agent * target / 1024.0;
    let cpu_per_agent = (f.cpu_parked - f.cpu_none).max(0.0) / *n as f64;
    let cpu = f.cpu_none + cpu_per_agent * target;
    println!();
    println!(
        "projection to 100,000 parked agents on one node (from N={n}): {:.0} MiB server RSS ({:.0} MiB at none + {:.2} KiB each), idle CPU {:.1}% of a core",
        memory,
        mib(f.rss_none_kib),
        per_agent,
        cpu * 100.0
    );
    println!(
        "  it needs connections.max_connections and the open-file limit (LimitNOFILE) above 100,000; the re-polls \
         every poll_wait_seconds ({} s here, 25 s by default) are load on top of the idle figures:",
        args.poll_wait
    );
    if let Some((polls, cpu)) = f.cycle.filter(|(polls, _)| *polls > 0.0) {
        let per_poll = cpu / polls;
        for wait in [25.0, 60.0, 300.0] {
            println!(
                "  at poll_wait_seconds = {wait:.0}: {:.0} polls/s, {:.2} cores ({:.0} us of server CPU per poll, measured at {polls:.0} polls/s)",
                target / wait,
                target / wait * per_poll,
                per_poll * 1e6
            );
        }
    }
    let verdict = |ok: bool| if ok { "PASS" } else { "MISS" };
    println!();
    for (n, _, f) in rows {
        let p99 = percentile(&f.sequential, 99.0).max(percentile(&f.burst, 99.0)).max(percentile(&f.cycling, 99.0));
        println!(
            "{}: N={n}: {:.2} KiB per parked agent (aim <= 20 KB = 19.53 KiB)",
            verdict(f.per_agent_kib(*n) <= 19.53),
            f.per_agent_kib(*n)
        );
        if *n >= 15_000 {
            println!(
                "{}: N={n}: idle CPU {:.2}% of a core (aim < 10%)",
                verdict(f.cpu_parked < 0.10),
                f.cpu_parked * 100.0
            );
        }
        println!(
            "{}: N={n}: dispatch p99 {:.1} ms (aim < 1 s; worst of sequential, burst and sequential while re-polling)",
            verdict(p99 < Duration::from_secs(1)),
            ms(p99)
        );
    }
}

/// The server process, killed if the run fails midway.
struct Server {
    child: Child,
    dir: tempfile::TempDir,
    config: PathBuf,
    base: String,
    pid: u32,
}

impl Drop for Server {
    fn drop(&mut self) {
        // Reaped when it has exited (a stop); killed when the run failed midway.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Server {
    async fn start(casefile: &Path, agents: usize, poll_wait: u64) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let data_dir = dir.path().join("data");
        let config = dir.path().join("casefile.toml");
        let base = format!("https://127.0.0.1:{port}");
        // The server's defaults but for: the connection cap (above N), a poll wait longer
        // than the run, and no rate limits (the bench creates hundreds of actions a minute).
        std::fs::write(
            &config,
            format!(
                "data_dir = {data_dir:?}\nlisten = \"127.0.0.1:{port}\"\npublic_url = \"{base}\"\n\
                 [agents]\npoll_wait_seconds = {poll_wait}\nsilent_timeout_seconds = {}\n\
                 [rate_limits]\nenabled = false\n[connections]\nmax_connections = {}\n",
                poll_wait * 3,
                agents + 1024
            ),
        )?;
        let log = std::fs::File::create(dir.path().join("server.log"))?;
        let child = Command::new(casefile)
            .args(["server", "--config"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", casefile.display()))?;
        let pid = child.id();
        let server = Self { child, dir, config, base, pid };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(client) = server.client().await
                && client.get(format!("{}/healthz", server.base)).send().await.is_ok_and(|r| r.status().is_success())
            {
                return Ok(server);
            }
            ensure!(Instant::now() < deadline, "the server did not answer /healthz: see {}", server.log().display());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// An HTTPS client trusting the server's CA only.
    async fn client(&self) -> anyhow::Result<reqwest::Client> {
        let ca = tokio::fs::read(self.dir.path().join("data").join("tls").join("ca.pem")).await?;
        Ok(reqwest::Client::builder().tls_certs_only([reqwest::Certificate::from_pem(&ca)?]).build()?)
    }

    /// Runs a `casefile` command on the server's configuration; its standard output.
    async fn cli(&self, casefile: &Path, args: &[&str]) -> anyhow::Result<String> {
        let mut command = Command::new(casefile);
        command.args(args).arg("--config").arg(&self.config);
        let out = process_output(command).await?;
        ensure!(out.status.success(), "casefile {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
        Ok(String::from_utf8(out.stdout)?)
    }

    async fn parked(&self, client: &reqwest::Client) -> anyhow::Result<usize> {
        let text = client.get(format!("{}/metrics", self.base)).send().await?.error_for_status()?.text().await?;
        let line = text
            .lines()
            .find(|l| l.starts_with("casefile_agent_polls_parked"))
            .context("no casefile_agent_polls_parked in /metrics")?;
        Ok(line.split_whitespace().last().unwrap_or("0").parse::<f64>()? as usize)
    }

    async fn stop(mut self) -> anyhow::Result<()> {
        let pid = self.pid.to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait()? {
                ensure!(status.success(), "the server exited with {status}: see {}", self.log().display());
                return Ok(());
            }
            ensure!(Instant::now() < deadline, "the server did not stop within 60 s of SIGTERM");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Runs a command to its end off the runtime's threads.
async fn process_output(mut command: Command) -> anyhow::Result<std::process::Output> {
    Ok(tokio::task::spawn_blocking(move || command.output()).await??)
}

/// `VmRSS` of a process, KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// User + system CPU time of a process (all threads), in seconds. `/proc` counts in
/// USER_HZ, which Linux fixes at 100.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let tick = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // Fields 14 and 15 of stat (utime, stime); `after` starts at field 3.
    (tick(11) + tick(12)) as f64 / 100.0
}

/// The server's CPU, in cores, over `window` while nothing is asked of it.
async fn idle_cpu(pid: u32, window: Duration) -> f64 {
    let (t0, c0) = (Instant::now(), cpu_seconds(pid));
    tokio::time::sleep(window).await;
    (cpu_seconds(pid) - c0) / t0.elapsed().as_secs_f64()
}

/// The simulator processes and their merged output.
struct Workers {
    children: Vec<Child>,
    stdins: Vec<ChildStdin>,
    events: mpsc::UnboundedReceiver<String>,
}

impl Workers {
    async fn next(&mut self, limit: Duration) -> anyhow::Result<String> {
        tokio::time::timeout(limit, self.events.recv())
            .await
            .context("no word from the simulator processes")?
            .context("a simulator process ended")
    }

    fn tell(&mut self, line: &str) -> anyhow::Result<()> {
        for stdin in &mut self.stdins {
            writeln!(stdin, "{line}")?;
            stdin.flush()?;
        }
        Ok(())
    }

    fn rss_kib(&self) -> u64 {
        self.children.iter().map(|c| rss_kib(c.id())).sum()
    }

    /// Closing their stdin ends them; one that does not end within 20 s is killed.
    async fn stop(mut self) {
        self.stdins.clear();
        let deadline = Instant::now() + Duration::from_secs(20);
        for child in &mut self.children {
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for child in &mut self.children {
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}

async fn run(args: &Args, casefile: &Path, n: usize, label: &str) -> anyhow::Result<Figures> {
    println!("-- N={n} ({label}: {})", casefile.display());
    let server = Server::start(casefile, n, args.poll_wait).await?;
    let rss_start_kib = rss_kib(server.pid);
    println!("   server pid {} on {}", server.pid, server.base);
    let out = server.cli(casefile, &["enroll-token", "--uses", &n.to_string()]).await?;
    let enroll_token = out.lines().next().unwrap_or_default().trim().to_owned();
    let pin = out
        .split_whitespace()
        .skip_while(|w| *w != "--ca-sha256")
        .nth(1)
        .context("enroll-token printed no --ca-sha256")?
        .to_owned();
    let token = server.cli(casefile, &["token", "--roles", "Machine.CollectForensics", "--ttl", "86400"]).await?;
    let token = token.trim().to_owned();

    // The simulator processes, each from its own loopback address.
    let exe = std::env::current_exe()?;
    let (tx, events) = mpsc::unbounded_channel();
    let (mut children, mut stdins) = (Vec::new(), Vec::new());
    let processes = n.div_ceil(args.per_process.max(1));
    for k in 0..processes {
        let first = k * args.per_process;
        let count = args.per_process.min(n - first);
        let mut child = Command::new(&exe)
            .arg("worker")
            .args(["--server", &server.base, "--ca-sha256", &pin, "--enroll-token", &enroll_token])
            .args(["--first", &first.to_string(), "--count", &count.to_string()])
            .args(["--source", &format!("127.0.0.{}", 2 + k)])
            .args(["--ramp-per-second", &(args.ramp_per_second / processes).max(1).to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        stdins.push(child.stdin.take().context("stdin")?);
        let stdout = std::io::BufReader::new(child.stdout.take().context("stdout")?);
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        children.push(child);
    }
    drop(tx);
    let mut workers = Workers { children, stdins, events };

    let t0 = Instant::now();
    let mut machines: HashMap<usize, String> = HashMap::new();
    let mut enrolled = 0;
    while enrolled < processes {
        let line = workers.next(Duration::from_secs(600)).await?;
        let mut words = line.split_whitespace();
        match words.next() {
            Some("machine") => {
                let index = words.next().context("index")?.parse()?;
                machines.insert(index, words.next().context("id")?.to_owned());
            }
            Some("enrolled") => enrolled += 1,
            _ => {}
        }
    }
    let enroll = t0.elapsed();
    ensure!(machines.len() == n, "{} of {n} agents enrolled", machines.len());
    println!("   enrolled {n} agents in {:.1} s", enroll.as_secs_f64());

    // None connected: every enrollment connection is closed (the server notices at once).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let window = Duration::from_secs(args.idle_seconds);
    let rss_none_kib = rss_kib(server.pid);
    let cpu_none = idle_cpu(server.pid, window).await;
    let rss_none_kib = rss_none_kib.max(rss_kib(server.pid));

    let client = server.client().await?;
    let t0 = Instant::now();
    workers.tell("park")?;
    let mut polling = 0;
    while polling < processes {
        if workers.next(Duration::from_secs(600)).await?.starts_with("polling") {
            polling += 1;
        }
    }
    let mut parked_seen = 0;
    while parked_seen < n {
        ensure!(t0.elapsed() < Duration::from_secs(600), "only {parked_seen} of {n} polls parked after 600 s");
        tokio::time::sleep(Duration::from_millis(500)).await;
        parked_seen = server.parked(&client).await?;
    }
    let park = t0.elapsed();
    println!("   {n} polls parked in {:.1} s", park.as_secs_f64());
    // Let what parking allocated settle, then measure with nothing asked of the server.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_parked_kib = rss_kib(server.pid);
    let cpu_parked = idle_cpu(server.pid, window).await;
    let rss_parked_kib = rss_parked_kib.max(rss_kib(server.pid));
    println!(
        "   RSS {:.1} MiB with none connected, {:.1} MiB with {n} parked: {:.2} KiB per agent; idle CPU {:.2}% -> {:.2}% of a core",
        mib(rss_none_kib),
        mib(rss_parked_kib),
        (rss_parked_kib as f64 - rss_none_kib as f64) / n as f64,
        cpu_none * 100.0,
        cpu_parked * 100.0
    );

    // Dispatch: distinct agents, in a fixed shuffled order (a simple LCG: no dependency).
    let mut order: Vec<usize> = (0..n).collect();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in (1..order.len()).rev() {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        order.swap(i, (seed >> 33) as usize % (i + 1));
    }
    let sequential_count = args.sequential.min(n / 2);
    let burst_count = args.burst.min(n - sequential_count);
    let api = Arc::new(Api { client: client.clone(), base: server.base.clone(), token });
    // Warm the API client's connections (a TLS handshake is not dispatch).
    for _ in 0..args.burst_connections {
        let _ = api.client.get(format!("{}/healthz", api.base)).send().await;
    }
    let sequential = one_by_one(&api, &mut workers, &machines, &order[..sequential_count]).await?;
    println!(
        "   sequential: {} actions, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        sequential.len(),
        ms(percentile(&sequential, 50.0)),
        ms(percentile(&sequential, 99.0)),
        ms(percentile(&sequential, 100.0))
    );

    let burst_agents = &order[sequential_count..sequential_count + burst_count];
    let burst_start = worker::unix_ns();
    let slots = Arc::new(tokio::sync::Semaphore::new(args.burst_connections.max(1)));
    let mut calls = tokio::task::JoinSet::new();
    for &agent in burst_agents {
        let (api, slots, machine) = (api.clone(), slots.clone(), machines[&agent].clone());
        calls.spawn(async move {
            let _slot = slots.acquire_owned().await?;
            let sent = worker::unix_ns();
            anyhow::Ok((api.collect(&machine).await?, sent))
        });
    }
    let mut sent_at = HashMap::new();
    while let Some(call) = calls.join_next().await {
        let (id, sent) = call??;
        sent_at.insert(id, sent);
    }
    let got = wait_got(&mut workers, &sent_at.keys().copied().collect()).await?;
    let burst: Vec<Duration> =
        sent_at.iter().map(|(id, sent)| Duration::from_nanos(got[id].saturating_sub(*sent) as u64)).collect();
    let burst_span =
        Duration::from_nanos(got.values().max().copied().unwrap_or(burst_start).saturating_sub(burst_start) as u64);
    println!(
        "   burst: {} actions over {} connections, p50 {:.1} ms, p99 {:.1} ms; last received {:.0} ms after the first call",
        burst.len(),
        args.burst_connections,
        ms(percentile(&burst, 50.0)),
        ms(percentile(&burst, 99.0)),
        ms(burst_span)
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after_kib = rss_kib(server.pid);
    let workers_rss_kib = workers.rss_kib();
    let (cycle, cycling) = if args.cycle_wait > 0 {
        let cycle = repoll_cycle(args, &server, &mut workers, processes).await?;
        // Dispatch again, now that polls come and go: an action may find its agent between
        // two polls, or the store busy with other agents' polls.
        let rest = &order[sequential_count + burst_count..];
        let cycling = one_by_one(&api, &mut workers, &machines, &rest[..args.sequential.min(rest.len())]).await?;
        println!(
            "   sequential while re-polling: {} actions, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            cycling.len(),
            ms(percentile(&cycling, 50.0)),
            ms(percentile(&cycling, 99.0)),
            ms(percentile(&cycling, 100.0))
        );
        (Some(cycle), cycling)
    } else {
        (None, Vec::new())
    };
    workers.stop().await;
    server.stop().await?;
    Ok(Figures {
        enroll,
        park,
        rss_start_kib,
        rss_none_kib,
        rss_parked_kib,
        cpu_none,
        cpu_parked,
        sequential,
        burst,
        burst_span,
        rss_after_kib,
        workers_rss_kib,
        cycle,
        cycling,
    })
}

/// Collections created one after another, each once the previous one's agent has
/// received it, confirmed, reported and polls again; the latency of each.
async fn one_by_one(
    api: &Api,
    workers: &mut Workers,
    machines: &HashMap<usize, String>,
    agents: &[usize],
) -> anyhow::Result<Vec<Duration>> {
    let mut latencies = Vec::new();
    for agent in agents {
        let sent = worker::unix_ns();
        let id = api.collect(&machines[agent]).await?;
        let got = wait_got(workers, &[id].into_iter().collect()).await?;
        latencies.push(Duration::from_nanos(got[&id].saturating_sub(sent) as u64));
        loop {
            let line = workers.next(Duration::from_secs(60)).await?;
            if line.starts_with("ready") && line.ends_with(&id.to_string()) {
                break;
            }
        }
    }
    Ok(latencies)
}

/// Every agent polls with `--cycle-wait`: polls answered per second, and the server's
/// CPU (cores) meanwhile.
async fn repoll_cycle(
    args: &Args,
    server: &Server,
    workers: &mut Workers,
    processes: usize,
) -> anyhow::Result<(f64, f64)> {
    workers.tell(&format!("cycle {}", args.cycle_wait))?;
    let mut polling = 0;
    while polling < processes {
        if workers.next(Duration::from_secs(600)).await?.starts_with("polling") {
            polling += 1;
        }
    }
    // One whole wait first: then the polls are spread over it as they stay.
    tokio::time::sleep(Duration::from_secs(args.cycle_wait + 2)).await;
    let (c0, t0, cpu0) = (count(workers, processes).await?, Instant::now(), cpu_seconds(server.pid));
    tokio::time::sleep(Duration::from_secs(args.idle_seconds.max(args.cycle_wait))).await;
    let (cpu1, elapsed, c1) = (cpu_seconds(server.pid), t0.elapsed().as_secs_f64(), count(workers, processes).await?);
    let (polls, cpu) = (c1.saturating_sub(c0) as f64 / elapsed, (cpu1 - cpu0) / elapsed);
    println!(
        "   re-poll cycle (wait {} s): {polls:.0} polls/s answered, server CPU {:.1}% of a core, {:.0} us per poll",
        args.cycle_wait,
        cpu * 100.0,
        if polls > 0.0 { cpu / polls * 1e6 } else { f64::NAN }
    );
    Ok((polls, cpu))
}

/// Polls answered `204` so far, over all simulator processes.
async fn count(workers: &mut Workers, processes: usize) -> anyhow::Result<u64> {
    workers.tell("count")?;
    let (mut answers, mut total) = (0, 0);
    while answers < processes {
        let line = workers.next(Duration::from_secs(60)).await?;
        if let Some(n) = line.strip_prefix("count ") {
            total += n.trim().parse::<u64>()?;
            answers += 1;
        }
    }
    Ok(total)
}

/// The public API, as an application with a bearer token.
struct Api {
    client: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    /// Creates a collection for `machine`; its action id.
    async fn collect(&self, machine: &str) -> anyhow::Result<Uuid> {
        let response = self
            .client
            .post(format!("{}/api/machines/{machine}/collectInvestigationPackage", self.base))
            .bearer_auth(&self.token)
            .json(&serde_json::json!({"Comment": "bench-agents"}))
            .send()
            .await?;
        let status = response.status();
        let body = response.text().await?;
        ensure!(status.as_u16() == 201, "collectInvestigationPackage answered {status}: {body}");
        let action: serde_json::Value = serde_json::from_str(&body)?;
        Ok(action["id"].as_str().context("no id in the created action")?.parse()?)
    }
}

/// Waits until every action in `ids` was received by its agent; when each was (Unix ns).
async fn wait_got(workers: &mut Workers, ids: &std::collections::HashSet<Uuid>) -> anyhow::Result<HashMap<Uuid, u128>> {
    let mut got = HashMap::new();
    while got.len() < ids.len() {
        let line = workers.next(Duration::from_secs(120)).await.context("waiting for dispatched actions")?;
        let mut words = line.split_whitespace();
        if words.next() != Some("got") {
            continue;
        }
        let (_agent, id, at) = (words.next(), words.next(), words.next());
        let (Some(id), Some(at)) = (id.and_then(|i| i.parse::<Uuid>().ok()), at.and_then(|a| a.parse::<u128>().ok()))
        else {
            continue;
        };
        if ids.contains(&id) {
            got.insert(id, at);
        }
    }
    Ok(got)
}
