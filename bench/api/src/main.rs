//! `bench-api`: throughput and p50/p99 latency of the public API on SQLite, PostgreSQL
//! (`--store-url`) or both in one run (`--postgres`, a throwaway cluster), with rate limits
//! off. Every workload is also given as a ratio against a trivial axum handler served by the
//! same process and driven by the same client in the same run, so the ratios, unlike the raw
//! figures, can be compared between machines.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use casefile_proto::MachineAction;
use casefile_proto::action::{ActionStatus, ActionType};
use casefile_server::{Server, ServerConfig, TokenRequest};
use casefile_store::{HostFacts, MachineEnrollment};
use chrono::{DateTime, SecondsFormat, Utc};
use clap::Parser;
use reqwest::{Client, RequestBuilder, StatusCode};
use tokio::net::TcpListener;
use uuid::Uuid;

mod metrics_cost;

const TENANT: &str = "default";
/// What every API success carries; the baseline answers with it too, so both responses
/// cost the client the same to take apart.
const ODATA_JSON: &str = "application/json; odata.metadata=minimal; odata.streaming=true; charset=utf-8";
const BASELINE_BODY: &str = r#"{"@odata.context":"http://127.0.0.1/api/$metadata#Edm.String","value":"ok"}"#;
/// Seeded actions are created over the past 90 days.
const SPREAD_MICROS: usize = 90 * 24 * 3600 * 1_000_000;
const WARM_UP: Duration = Duration::from_secs(1);

#[derive(Parser)]
#[command(about = "casefile API throughput and latency, as ratios against a trivial axum handler")]
struct Args {
    /// Concurrent client tasks (each keeps its connection alive).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Seconds measured per workload, after a one-second warm-up.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Finished actions seeded for the read workloads.
    #[arg(long, default_value_t = 100_000)]
    actions: usize,
    /// Machines the seeded actions are spread over.
    #[arg(long, default_value_t = 1_000)]
    machines: usize,
    /// Machines without actions: create-action spends one per request.
    #[arg(long, default_value_t = 20_000)]
    fresh_machines: usize,
    /// Smoke run: 1 s per workload, 10,000 actions, 5,000 fresh machines.
    #[arg(long)]
    quick: bool,
    /// The store to measure: an empty database's URL (`postgres://…`); default: SQLite in a
    /// temporary directory. The same table is printed for either.
    #[arg(long, conflicts_with = "postgres")]
    store_url: Option<String>,
    /// Both backends side by side: the run on SQLite, then the same run on a throwaway
    /// PostgreSQL cluster the benchmark starts itself (`casefile-testkit`: binaries from
    /// `CASEFILE_TEST_PG_BIN`, else the newest `/usr/lib/postgresql/*/bin`), removed at exit.
    #[arg(long)]
    postgres: bool,
    /// Instead of the workload table: the cost of metrics. The server runs as a child
    /// process, once with `metrics.enabled = false` and once with it on (scraped every
    /// `--scrape-seconds`); its RSS and CPU time are read from /proc at idle and under the
    /// get-action, list-filter and create-action workloads.
    #[arg(long)]
    metrics_cost: bool,
    /// With --metrics-cost: seconds the server sits idle before its idle figures are read.
    #[arg(long, default_value_t = 10)]
    idle_seconds: u64,
    /// With --metrics-cost: how often the server with metrics on is scraped.
    #[arg(long, default_value_t = 5)]
    scrape_seconds: u64,
    /// Internal: serve the data directory DIR (seeded by the parent) on loopback, metrics
    /// on or off, and print `READY <base url>`.
    #[arg(long, hide = true, num_args = 2, value_names = ["DIR", "METRICS"])]
    serve_child: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Workload {
    Trivial,
    GetAction,
    ListFilter,
    ListFilterDate,
    /// Last: it adds actions, which the read workloads must not see.
    CreateAction,
}

impl Workload {
    const ALL: [Workload; 5] =
        [Self::Trivial, Self::GetAction, Self::ListFilter, Self::ListFilterDate, Self::CreateAction];

    fn name(self) -> &'static str {
        match self {
            Self::Trivial => "trivial",
            Self::GetAction => "get-action",
            Self::ListFilter => "list-filter",
            Self::ListFilterDate => "list-filter-date",
            Self::CreateAction => "create-action",
        }
    }

    fn expected(self) -> StatusCode {
        if self == Self::CreateAction { StatusCode::CREATED } else { StatusCode::OK }
    }

    fn is_list(self) -> bool {
        matches!(self, Self::ListFilter | Self::ListFilterDate)
    }
}

/// SplitMix64: the workspace has no `rand`, and picking ids at random needs no more.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) % n as u64) as usize
    }
}

/// What the store was seeded with, for the workloads to pick from.
struct Seeded {
    machines: Vec<String>,
    actions: Vec<Uuid>,
    /// Machines without any action, so each can take one new collection.
    fresh: Vec<String>,
    oldest: DateTime<Utc>,
}

/// Everything the client tasks share.
struct Bench {
    client: Client,
    baseline: String,
    api: String,
    token: String,
    seeded: Seeded,
    next_fresh: AtomicUsize,
}

/// One client task's share of a workload.
struct TaskRun {
    latencies: Vec<Duration>,
    last_finish: Instant,
    ran_out: bool,
}

struct Stats {
    workload: Workload,
    requests: usize,
    per_second: f64,
    p50: Duration,
    p99: Duration,
    elapsed: Duration,
    ran_out: bool,
}

impl Bench {
    /// The workload's next request; `None` once create-action has used every fresh machine.
    fn request(&self, workload: Workload, rng: &mut Rng) -> Option<RequestBuilder> {
        let s = &self.seeded;
        let url = match workload {
            Workload::Trivial => self.baseline.clone(),
            Workload::GetAction => format!("{}/api/machineactions/{}", self.api, s.actions[rng.below(s.actions.len())]),
            Workload::ListFilter => format!(
                "{}/api/machineactions?$filter=machineId%20eq%20'{}'%20and%20status%20eq%20'Succeeded'&$top=100",
                self.api,
                s.machines[rng.below(s.machines.len())]
            ),
            Workload::ListFilterDate => {
                let after = s.oldest + chrono::Duration::microseconds(rng.below(SPREAD_MICROS) as i64);
                let after = after.to_rfc3339_opts(SecondsFormat::Secs, true);
                format!("{}/api/machineactions?$filter=creationDateTimeUtc%20gt%20{after}&$top=50", self.api)
            }
            Workload::CreateAction => {
                let machine = s.fresh.get(self.next_fresh.fetch_add(1, Ordering::Relaxed))?;
                let url = format!("{}/api/machines/{machine}/collectInvestigationPackage", self.api);
                let post = self.client.post(url).header("content-type", "application/json");
                return Some(post.bearer_auth(&self.token).body(r#"{"Comment":"bench"}"#));
            }
        };
        // The baseline gets the bearer token too: the same bytes go over the wire.
        Some(self.client.get(url).bearer_auth(&self.token))
    }

    /// Sends requests back to back until `until`, timing those started after `from`.
    async fn client_task(
        &self,
        workload: Workload,
        mut rng: Rng,
        from: Instant,
        until: Instant,
    ) -> anyhow::Result<TaskRun> {
        let mut run = TaskRun { latencies: Vec::new(), last_finish: from, ran_out: false };
        loop {
            let started = Instant::now();
            if started >= until {
                return Ok(run);
            }
            let Some(request) = self.request(workload, &mut rng) else {
                run.ran_out = true;
                return Ok(run);
            };
            let response = request.send().await?;
            let status = response.status();
            let body = response.bytes().await?;
            let finished = Instant::now();
            // Checked after the clock stops: the check is the client's cost, not the server's.
            ensure!(
                status == workload.expected(),
                "{}: expected {}, got {status}: {}",
                workload.name(),
                workload.expected(),
                String::from_utf8_lossy(&body)
            );
            if workload.is_list() {
                let json: serde_json::Value = serde_json::from_slice(&body)?;
                ensure!(json["value"].is_array(), "{}: no `value` array in {json}", workload.name());
            }
            if started >= from {
                run.latencies.push(finished - started);
                run.last_finish = finished;
            }
        }
    }
}

async fn measure(bench: &Arc<Bench>, workload: Workload, concurrency: usize, seconds: u64) -> anyhow::Result<Stats> {
    let from = Instant::now() + WARM_UP;
    let until = from + Duration::from_secs(seconds);
    let tasks: Vec<_> = (0..concurrency)
        .map(|n| {
            let bench = bench.clone();
            tokio::spawn(async move { bench.client_task(workload, Rng(n as u64 + 1), from, until).await })
        })
        .collect();
    let (mut latencies, mut last_finish, mut ran_out) = (Vec::new(), from, false);
    for task in tasks {
        let run = task.await??;
        latencies.extend(run.latencies);
        last_finish = last_finish.max(run.last_finish);
        ran_out |= run.ran_out;
    }
    if latencies.is_empty() {
        bail!("{}: nothing measured (ran out of work during the warm-up?)", workload.name());
    }
    latencies.sort_unstable();
    let at = |percent: usize| latencies[(latencies.len() * percent / 100).min(latencies.len() - 1)];
    let elapsed = last_finish - from;
    Ok(Stats {
        workload,
        requests: latencies.len(),
        per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50: at(50),
        p99: at(99),
        elapsed,
        ran_out,
    })
}

fn machine_id(n: usize) -> String {
    format!("{n:040x}")
}

/// Writes straight into the store, as the e2e tests' `seed_machine`/`seed_action` do:
/// seeding through the API would take longer than the benchmark.
async fn seed(server: &Server, args: &Args) -> anyhow::Result<Seeded> {
    let store = &server.state().store;
    let now = Utc::now();
    let machines: Vec<String> = (0..args.machines).map(machine_id).collect();
    let fresh: Vec<String> = (args.machines..args.machines + args.fresh_machines).map(machine_id).collect();
    for id in machines.iter().chain(&fresh) {
        let facts =
            HostFacts { computer_dns_name: format!("bench-{id}"), os_platform: "Linux".into(), ..Default::default() };
        store
            .enroll_machine(&MachineEnrollment {
                id: id.clone(),
                tenant_id: casefile_store::TenantId::default_tenant(),
                facts,
                credential_hash: format!("bench-{id}"),
                agent_public_key: None,
                last_ip_address: None,
                at: now,
            })
            .await?;
    }
    let oldest = now - chrono::Duration::microseconds(SPREAD_MICROS as i64);
    let mut rng = Rng(0);
    let mut actions = Vec::with_capacity(args.actions);
    for n in 0..args.actions {
        let machine = &machines[n % machines.len()];
        let created = oldest + chrono::Duration::microseconds(rng.below(SPREAD_MICROS) as i64);
        let name = Some(format!("bench-{machine}"));
        let kind = ActionType::CollectInvestigationPackage;
        let mut action = MachineAction::new_pending(kind, machine, name, "bench", "seeded".into(), created);
        // Only final statuses: the store allows one live collection per machine. Drawn at
        // random, not from `n`, which would tie each machine to one status.
        action.status = if rng.below(10) == 0 { ActionStatus::Failed } else { ActionStatus::Succeeded };
        store.create_action(&casefile_store::TenantId::default_tenant(), &action, None).await?;
        actions.push(action.id);
    }
    Ok(Seeded { machines, actions, fresh, oldest })
}

async fn local_listener() -> anyhow::Result<(TcpListener, String)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    Ok((listener, base))
}

fn print_table(stats: &[Stats]) {
    let trivial = &stats[0];
    println!(
        "{:<17} {:>9} {:>10} {:>8} {:>8} {:>12} {:>10}",
        "workload", "requests", "req/s", "p50 ms", "p99 ms", "req/s ratio", "p50 ratio"
    );
    for s in stats {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let note = if s.ran_out {
            format!("  (count-bounded: machines ran out after {:.1} s)", s.elapsed.as_secs_f64())
        } else {
            String::new()
        };
        println!(
            "{:<17} {:>9} {:>10.0} {:>8.3} {:>8.3} {:>12.3} {:>10.2}{note}",
            s.workload.name(),
            s.requests,
            s.per_second,
            ms(s.p50),
            ms(s.p99),
            s.per_second / trivial.per_second,
            s.p50.as_secs_f64() / trivial.p50.as_secs_f64(),
        );
    }
}

fn print_aims(stats: &[Stats]) {
    let find = |w: Workload| stats.iter().find(|s| s.workload == w).expect("every workload ran");
    let (trivial, get, list) = (find(Workload::Trivial), find(Workload::GetAction), find(Workload::ListFilter));
    let verdict = |ok: bool| if ok { "PASS" } else { "MISS" };
    let throughput = get.per_second / trivial.per_second;
    println!(
        "{}: get-action throughput {:.0}% of trivial (aim >= 50%)",
        verdict(throughput >= 0.5),
        throughput * 100.0
    );
    let slower = list.p50.as_secs_f64() / get.p50.as_secs_f64();
    println!("{}: list-filter p50 {slower:.1}x get-action p50 (aim within 10x)", verdict(slower <= 10.0));
}

/// The configuration every server of the benchmark runs with.
/// A day's token with the permissions every workload needs.
fn bench_token(server: &Server) -> anyhow::Result<String> {
    Ok(server.mint_access_token(&TokenRequest {
        tenant: TENANT.into(),
        roles: vec!["Machine.CollectForensics".into(), "Machine.Read.All".into()],
        requestor: "bench".into(),
        ttl: Duration::from_secs(24 * 3600),
    })?)
}

fn bench_config(data_dir: std::path::PathBuf) -> ServerConfig {
    let mut config = ServerConfig { data_dir, ..Default::default() };
    config.rate_limits.enabled = false;
    // Plain HTTP on loopback, as the baseline handler: the ratios compare handlers, not TLS.
    config.tls.plain_http = true;
    // Nothing times out mid-run: the lifecycle sweeper must not write while we measure.
    config.agents.pending_timeout_seconds = u64::MAX;
    config.agents.max_collection_seconds = u64::MAX;
    config.agents.silent_timeout_seconds = u64::MAX;
    config
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let run_started = Instant::now();
    let mut args = Args::parse();
    if let Some(child) = &args.serve_child {
        return serve_child(&child[0], &child[1]).await;
    }
    if args.quick {
        (args.seconds, args.actions, args.fresh_machines) = (1, 10_000, 5_000);
    }
    if args.metrics_cost {
        return metrics_cost::run(&args).await;
    }
    ensure!(
        args.machines > 0 && args.actions > 0 && args.concurrency > 0,
        "machines, actions and concurrency must be > 0"
    );
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let profile = if cfg!(debug_assertions) { "debug (figures not meaningful)" } else { "release" };
    println!(
        "nproc {cores}, {profile} build, concurrency {}, {} s per workload after {} s warm-up",
        args.concurrency,
        args.seconds,
        WARM_UP.as_secs()
    );

    // The cluster (and its database) lives until the process exits.
    let pg = if args.postgres {
        let db = casefile_testkit::pg::database().context("--postgres: no PostgreSQL to start")?;
        println!("PostgreSQL: a throwaway cluster at {}", db.url);
        Some(db)
    } else {
        None
    };
    let mut runs = Vec::new();
    let urls = match &pg {
        Some(db) => vec![None, Some(db.url.clone())],
        None => vec![args.store_url.clone()],
    };
    for url in urls {
        runs.push(run_on(&args, url).await?);
    }
    if runs.len() > 1 {
        println!();
        print_side_by_side(&runs);
    }
    println!("whole run: {:.1} s", run_started.elapsed().as_secs_f64());
    Ok(())
}

/// Seeds a fresh store (SQLite in a temporary directory, or the database at `url`), serves
/// it beside the baseline, measures every workload and prints the table and the aims.
async fn run_on(args: &Args, url: Option<String>) -> anyhow::Result<(String, Vec<Stats>)> {
    let dir = tempfile::tempdir()?;
    let mut config = bench_config(dir.path().join("data"));
    config.store.url = url;
    let store = casefile_store::Backend::of(&config.database_url())?.name().to_owned();
    println!();
    println!("store: {store}");
    let server = Server::open(config).await.context("opening the server")?;

    let seeding = Instant::now();
    let seeded = seed(&server, args).await.context("seeding the store")?;
    println!(
        "seeded {} actions over {} machines, plus {} machines without actions, in {:.1} s",
        args.actions,
        args.machines,
        args.fresh_machines,
        seeding.elapsed().as_secs_f64()
    );

    // Both servers stop when this run is over, so that the next backend's run has the
    // cores to itself.
    let stop = Arc::new(tokio::sync::Notify::new());
    let (listener, api) = local_listener().await?;
    let serving = server.clone();
    let stopped = stop.clone();
    let api_task = tokio::spawn(async move { serving.serve(listener, async move { stopped.notified().await }).await });
    let (listener, baseline) = local_listener().await?;
    let trivial = || async { ([("content-type", ODATA_JSON), ("odata-version", "4.0")], BASELINE_BODY) };
    let baseline_task = tokio::spawn(async move {
        axum::serve(listener, axum::Router::new().route("/", axum::routing::get(trivial))).await
    });

    let token = bench_token(&server)?;
    let client = Client::builder().pool_max_idle_per_host(args.concurrency).build()?;
    let bench = Arc::new(Bench { client, baseline, api, token, seeded, next_fresh: AtomicUsize::new(0) });

    let mut stats = Vec::new();
    for workload in Workload::ALL {
        stats.push(measure(&bench, workload, args.concurrency, args.seconds).await?);
    }
    println!();
    print_table(&stats);
    println!();
    print_aims(&stats);

    // The client's keep-alive connections go with it; then the server drains and stops.
    drop(bench);
    stop.notify_one();
    api_task.await?.context("serving")?;
    baseline_task.abort();
    Ok((store, stats))
}

/// One line per workload, each backend's throughput, ratio to its own baseline and p50.
fn print_side_by_side(runs: &[(String, Vec<Stats>)]) {
    let mut head = format!("{:<17}", "workload");
    for (store, _) in runs {
        head += &format!(" | {:>10} {:>6} {:>8}", format!("{store} req/s"), "ratio", "p50 ms");
    }
    println!("{head}");
    for (n, workload) in Workload::ALL.iter().enumerate() {
        let mut line = format!("{:<17}", workload.name());
        for (_, stats) in runs {
            let (s, trivial) = (&stats[n], &stats[0]);
            line += &format!(
                " | {:>10.0} {:>6.3} {:>8.3}",
                s.per_second,
                s.per_second / trivial.per_second,
                s.p50.as_secs_f64() * 1000.0
            );
        }
        println!("{line}");
    }
}

/// The server process of `--metrics-cost`: serves `dir` until killed.
async fn serve_child(dir: &str, metrics: &str) -> anyhow::Result<()> {
    let mut config = bench_config(dir.into());
    config.metrics.enabled = metrics == "on";
    let server = Server::open(config).await.context("opening the server")?;
    let (listener, base) = local_listener().await?;
    println!("READY {base}");
    server.serve(listener, std::future::pending()).await?;
    Ok(())
}
