//! The console's first render, as the issue asks for it: the Devices page over 100,000
//! devices, and a 50 MB CSV in the package viewer. Each page is timed from the request to
//! its last byte (server time: loopback, plain HTTP, one client) and sized; the API call
//! the page makes is timed in the same run as its baseline, so the ratio is the console's
//! own cost (session, RBAC, template).

use std::io::Write as _;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use casefile_package::writer::PackageMeta;
use casefile_package::{ItemOutcome, ItemSink, PackageWriter};
use casefile_server::{Server, ServerConfig, TokenRequest};
use casefile_store::{HostFacts, MachineEnrollment, TenantId};
use clap::Parser;
use sha2::Digest as _;

#[derive(Parser)]
struct Args {
    /// Devices in the store.
    #[arg(long, default_value_t = 100_000)]
    devices: usize,
    /// Size of the CSV in the package, in MB.
    #[arg(long, default_value_t = 50)]
    csv_mb: usize,
    /// Runs per page (the median is printed).
    #[arg(long, default_value_t = 7)]
    runs: usize,
}

const PASSWORD: &str = "bench password 1234";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let mut config = ServerConfig { data_dir: dir.path().join("data"), ..Default::default() };
    config.rate_limits.enabled = false;
    config.tls.plain_http = true;
    let server = Server::open(config).await.context("opening the server")?;
    let state = server.state().clone();
    let tenant = TenantId::default_tenant();

    let seeding = Instant::now();
    let now = chrono::Utc::now();
    for n in 0..args.devices {
        let facts = HostFacts {
            computer_dns_name: format!("host-{n:06}.corp.example"),
            os_platform: if n % 5 == 0 { "Windows11".into() } else { "Linux".into() },
            ..Default::default()
        };
        state
            .store
            .enroll_machine(&MachineEnrollment {
                id: format!("{n:040x}"),
                tenant_id: tenant.clone(),
                facts,
                credential_hash: format!("bench-{n}"),
                agent_public_key: None,
                last_ip_address: None,
                at: now - chrono::Duration::seconds(n as i64),
            })
            .await?;
    }
    println!("seeded {} devices in {:.1} s", args.devices, seeding.elapsed().as_secs_f64());
    casefile_server::auth::users::create(&*state.store, &tenant, "analyst", PASSWORD, state.now()).await?;
    let role = casefile_proto::rbac::Role {
        name: "analysts".into(),
        permissions: vec!["ViewData".into(), "AlertsInvestigation".into()],
        users: vec!["analyst".into()],
        groups: vec![],
    };
    state.store.tenant(&tenant).put_role(&role).await?;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let serving = server.clone();
    tokio::spawn(async move { serving.serve(listener, std::future::pending()).await });
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;

    // The package: a CSV of `csv_mb` MB, imported through the API.
    let package = dir.path().join("package.zip");
    let rows = write_package(&package, args.csv_mb << 20)?;
    let bytes = std::fs::read(&package)?;
    let token = server.mint_access_token(&TokenRequest {
        tenant: tenant.to_string(),
        roles: vec!["Machine.CollectForensics".into(), "Machine.Read.All".into()],
        requestor: "bench".into(),
        ttl: Duration::from_secs(3600),
    })?;
    let imported = http
        .post(format!("{base}/api/machines/{:040x}/importInvestigationPackage", 0))
        .bearer_auth(&token)
        .header("content-type", "application/zip")
        .header("x-casefile-sha256", hex::encode(sha2::Sha256::digest(&bytes)))
        .body(bytes.clone())
        .send()
        .await?;
    anyhow::ensure!(imported.status() == 201, "import: {} {}", imported.status(), imported.text().await?);
    let action: serde_json::Value = imported.json().await?;
    let action_id = action["id"].as_str().context("the import's action id")?.to_owned();
    println!("package: {} bytes, a CSV of {rows} rows ({} MB)", bytes.len(), args.csv_mb);

    let cookie = sign_in(&http, &base).await?;
    let page = |path: String| {
        let (http, cookie, url) = (http.clone(), cookie.clone(), format!("{base}{path}"));
        async move {
            let started = Instant::now();
            let answer = http.get(&url).header("cookie", &cookie).send().await?;
            anyhow::ensure!(answer.status() == 200, "{url}: {}", answer.status());
            let body = answer.bytes().await?;
            Ok::<_, anyhow::Error>((started.elapsed(), body.len()))
        }
    };
    let api = |path: String| {
        let (http, token, url) = (http.clone(), token.clone(), format!("{base}{path}"));
        async move {
            let started = Instant::now();
            let answer = http.get(&url).bearer_auth(&token).send().await?;
            anyhow::ensure!(answer.status() == 200, "{url}: {}", answer.status());
            let body = answer.bytes().await?;
            Ok::<_, anyhow::Error>((started.elapsed(), body.len()))
        }
    };

    println!();
    println!("{:<52} {:>10} {:>10} {:>9}", "page", "median ms", "bytes", "vs API");
    let devices_api =
        median(args.runs, || api("/api/machines?$orderby=lastSeen%20desc&$top=50&$skip=0&$count=true".into())).await?;
    report("API: /api/machines, first 50 with $count", devices_api, None);
    let last_page = args.devices.div_ceil(50).saturating_sub(1);
    for (label, path) in [
        ("Devices, first page (last seen)", "/console/devices".to_owned()),
        ("Devices, sorted by name", "/console/devices?sort=name&dir=asc".to_owned()),
        ("Devices, name contains 'host-0999'", "/console/devices?q=host-0999".to_owned()),
        ("Devices, OS = Windows11", "/console/devices?os=Windows11".to_owned()),
        ("Devices, last page", format!("/console/devices?page={last_page}")),
    ] {
        let measured = median(args.runs, || page(path.clone())).await?;
        report(label, measured, Some(devices_api.0));
    }
    let view = |query: &str| format!("/console/actions/{action_id}/package/view?path=Processes%2Fprocesses.csv{query}");
    for (label, path) in [
        ("Viewer: 50 MB CSV, first page (100 rows)", view("")),
        ("Viewer: sorted by rss_kb", view("&sort=3")),
        ("Viewer: rows containing 'host-042'", view("&filter=host-042")),
        ("Viewer: page 100", view("&page=100")),
        ("Package page (verifies the package again)", format!("/console/actions/{action_id}/package")),
    ] {
        let measured = median(args.runs, || page(path.clone())).await?;
        report(label, measured, None);
    }
    Ok(())
}

fn report(label: &str, (time, bytes): (Duration, usize), baseline: Option<Duration>) {
    let ratio = baseline.map(|b| format!("{:.2}x", time.as_secs_f64() / b.as_secs_f64())).unwrap_or_default();
    println!("{label:<52} {:>10.1} {bytes:>10} {ratio:>9}", time.as_secs_f64() * 1000.0);
}

async fn median<F, Fut>(runs: usize, mut run: F) -> anyhow::Result<(Duration, usize)>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<(Duration, usize)>>,
{
    let mut times = Vec::with_capacity(runs);
    let mut size = 0;
    for _ in 0..runs.max(1) {
        let (time, bytes) = run().await?;
        times.push(time);
        size = bytes;
    }
    times.sort();
    Ok((times[times.len() / 2], size))
}

async fn sign_in(http: &reqwest::Client, base: &str) -> anyhow::Result<String> {
    let page = http.get(format!("{base}/console/signin")).send().await?;
    let form_cookie = page
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("__Host-casefile-signin="))
        .and_then(|v| v.split(';').next())
        .context("the sign-in form's cookie")?
        .to_owned();
    let token = form_cookie.split_once('=').map(|(_, v)| v.to_owned()).unwrap_or_default();
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs([("form_token", token.as_str()), ("name", "analyst"), ("password", PASSWORD)])
        .finish();
    let answer = http
        .post(format!("{base}/console/signin"))
        .header("cookie", &form_cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await?;
    anyhow::ensure!(answer.status() == 303, "sign-in: {}", answer.status());
    answer
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("__Host-casefile-session="))
        .and_then(|v| v.split(';').next())
        .map(str::to_owned)
        .context("the session cookie")
}

/// A signed package with one CSV of about `target` bytes; returns its rows.
fn write_package(path: &std::path::Path, target: usize) -> anyhow::Result<u64> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("{e}"))?;
    let key = ed25519_dalek::SigningKey::from_bytes(&seed);
    let mut writer = PackageWriter::new(std::fs::File::create(path)?, PackageMeta::detached("bench-console"));
    let mut rows = 0u64;
    writer.begin_collector("processes", "Processes");
    let sink: &mut dyn ItemSink = &mut writer;
    sink.file("processes.csv", "generated", |w| {
        let mut w = std::io::BufWriter::new(w);
        w.write_all(b"pid,host,user,rss_kb,command,started_utc\n")?;
        let mut written = 0;
        while written < target {
            rows += 1;
            let i = rows;
            let line = format!(
                "{i},host-{:03},user-{},{},/usr/lib/worker --id {i} --queue q{},2026-12-0{}T{:02}:{:02}:00Z\n",
                i % 211,
                i % 13,
                (i * 7919) % 1_000_003,
                i % 17,
                1 + i % 7,
                i % 24,
                i % 60
            );
            w.write_all(line.as_bytes())?;
            written += line.len();
        }
        w.flush()?;
        Ok(ItemOutcome::ok())
    })?;
    writer.end_collector(None);
    writer.finish_signed(&key).context("writing the package")?;
    Ok(rows)
}
