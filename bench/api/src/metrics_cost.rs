//! `--metrics-cost`: what `/metrics` costs the server. The same seeded data directory is
//! served by a child process twice in one run, metrics off then on; its resident memory
//! (`VmRSS` of /proc/PID/status) and CPU time (`utime + stime` of /proc/PID/stat) are read
//! after it sat idle and after the load, and printed with the on/off ratios.

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use casefile_server::Server;
use reqwest::Client;

use crate::{Args, Bench, Stats, Workload, bench_config, bench_token, measure, seed};

/// The workloads of the load phase (read, filtered list, write).
const LOAD: [Workload; 3] = [Workload::GetAction, Workload::ListFilter, Workload::CreateAction];

/// What one server process showed.
struct Figures {
    idle_rss_kib: u64,
    idle_cpu: Duration,
    idle_wall: Duration,
    load_rss_kib: u64,
    load_cpu: Duration,
    load_wall: Duration,
    stats: Vec<Stats>,
    scrapes: usize,
}

impl Figures {
    fn requests(&self) -> usize {
        self.stats.iter().map(|s| s.requests).sum()
    }

    /// CPU seconds per 1,000 requests under load.
    fn cpu_per_kreq(&self) -> f64 {
        self.load_cpu.as_secs_f64() * 1000.0 / self.requests().max(1) as f64
    }
}

/// Kills the server process when the run ends, however it ends.
struct ServerProcess(Child);

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).context("no VmRSS")?;
    Ok(line.split_whitespace().nth(1).context("VmRSS value")?.parse()?)
}

/// User plus system CPU time of the process, all its threads.
fn cpu_time(pid: u32, ticks_per_second: u64) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')').context("stat format")? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    Ok(Duration::from_secs_f64(ticks as f64 / ticks_per_second as f64))
}

fn clock_ticks() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// Scrapes `/metrics` every `every` until the task is aborted, as Prometheus would.
fn scraper(client: Client, url: String, every: Duration, count: Arc<AtomicUsize>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(every);
        loop {
            ticker.tick().await;
            if let Ok(response) = client.get(&url).send().await
                && response.status().is_success()
                && response.bytes().await.is_ok()
            {
                count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    })
}

async fn one_server(args: &Args, metrics_on: bool, ticks: u64) -> anyhow::Result<Figures> {
    let dir = tempfile::tempdir()?;
    let data_dir = dir.path().join("data");
    // Seeded and the token minted here, then the server process opens the same directory.
    let (seeded, token) = {
        let server = Server::open(bench_config(data_dir.clone())).await.context("opening the data directory")?;
        let seeded = seed(&server, args).await.context("seeding the store")?;
        let token = bench_token(&server)?;
        (seeded, token)
    };
    let mut child = Command::new(std::env::current_exe()?)
        .arg("--serve-child")
        .arg(&data_dir)
        .arg(if metrics_on { "on" } else { "off" })
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the server process")?;
    let stdout = child.stdout.take().context("server stdout")?;
    let server = ServerProcess(child);
    let pid = server.0.id();
    let mut line = String::new();
    std::io::BufReader::new(stdout).read_line(&mut line)?;
    let Some(api) = line.trim().strip_prefix("READY ").map(str::to_owned) else {
        bail!("the server process did not start: {line:?}");
    };

    let client = Client::builder().pool_max_idle_per_host(args.concurrency).build()?;
    let scrapes = Arc::new(AtomicUsize::new(0));
    let scraping = metrics_on.then(|| {
        let every = Duration::from_secs(args.scrape_seconds.max(1));
        scraper(client.clone(), format!("{api}/metrics"), every, scrapes.clone())
    });

    let idle_from = (Instant::now(), cpu_time(pid, ticks)?);
    tokio::time::sleep(Duration::from_secs(args.idle_seconds)).await;
    let idle_rss_kib = rss_kib(pid)?;
    let idle_cpu = cpu_time(pid, ticks)?.saturating_sub(idle_from.1);
    let idle_wall = idle_from.0.elapsed();

    let bench =
        Arc::new(Bench { client, baseline: String::new(), api, token, seeded, next_fresh: AtomicUsize::new(0) });
    let load_from = (Instant::now(), cpu_time(pid, ticks)?);
    let mut stats = Vec::new();
    for workload in LOAD {
        stats.push(measure(&bench, workload, args.concurrency, args.seconds).await?);
    }
    let load_cpu = cpu_time(pid, ticks)?.saturating_sub(load_from.1);
    let load_wall = load_from.0.elapsed();
    let load_rss_kib = rss_kib(pid)?;
    if let Some(scraping) = scraping {
        scraping.abort();
    }
    drop(server);
    let scrapes = scrapes.load(std::sync::atomic::Ordering::Relaxed);
    Ok(Figures { idle_rss_kib, idle_cpu, idle_wall, load_rss_kib, load_cpu, load_wall, stats, scrapes })
}

pub async fn run(args: &Args) -> anyhow::Result<()> {
    let ticks = clock_ticks();
    println!(
        "metrics cost: {} actions over {} machines, idle {} s, then {} s each of {} at concurrency {}; \
         metrics scraped every {} s when on",
        args.actions,
        args.machines,
        args.idle_seconds,
        args.seconds,
        LOAD.map(Workload::name).join(", "),
        args.concurrency,
        args.scrape_seconds
    );
    let off = one_server(args, false, ticks).await?;
    let on = one_server(args, true, ticks).await?;
    let mib = |kib: u64| kib as f64 / 1024.0;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let ratio = |a: f64, b: f64| if b > 0.0 { format!("{:.3}", a / b) } else { "-".to_owned() };
    println!();
    println!("{:<34} {:>12} {:>12} {:>9}", "figure", "metrics off", "metrics on", "on/off");
    let row = |name: &str, off: f64, on: f64, digits: usize| {
        println!("{name:<34} {off:>12.digits$} {on:>12.digits$} {:>9}", ratio(on, off));
    };
    row("idle RSS (MiB)", mib(off.idle_rss_kib), mib(on.idle_rss_kib), 1);
    row(
        "idle CPU (ms per 10 s)",
        ms(off.idle_cpu) * 10.0 / off.idle_wall.as_secs_f64(),
        ms(on.idle_cpu) * 10.0 / on.idle_wall.as_secs_f64(),
        1,
    );
    row("RSS after load (MiB)", mib(off.load_rss_kib), mib(on.load_rss_kib), 1);
    row(
        "CPU under load (cores)",
        off.load_cpu.as_secs_f64() / off.load_wall.as_secs_f64(),
        on.load_cpu.as_secs_f64() / on.load_wall.as_secs_f64(),
        2,
    );
    row("CPU per 1,000 requests (ms)", off.cpu_per_kreq() * 1000.0, on.cpu_per_kreq() * 1000.0, 1);
    for (a, b) in off.stats.iter().zip(&on.stats) {
        row(&format!("{} (req/s)", a.workload.name()), a.per_second, b.per_second, 0);
    }
    println!("scrapes of /metrics during the run with metrics on: {}", on.scrapes);
    Ok(())
}
