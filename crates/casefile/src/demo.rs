//! `casefile demo`: the whole product on one machine. Starts the server on embedded
//! defaults (HTTPS with the private CA it creates), enrolls an agent for this host that
//! pins that CA, and walks the real flow exactly as
//! an MDE script would: collect → wait for `Succeeded` → getPackageUri → download.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use casefile_proto::action::ActionStatus;
use casefile_server::{Server, ServerConfig, TokenRequest};
use tokio_util::sync::CancellationToken;

use crate::client::ApiClient;

pub struct DemoOptions {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub exit_after_collect: bool,
}

/// How long the demo waits for each step before it calls the step failed.
const STEP_TIMEOUT: Duration = Duration::from_secs(300);
const TOKEN_TTL: Duration = Duration::from_secs(3600);

pub async fn run(options: DemoOptions) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .with_context(|| format!("cannot listen on {}", options.listen))?;
    let addr = listener.local_addr()?;
    let config = ServerConfig { data_dir: options.data_dir.clone(), listen: addr, ..Default::default() };
    step(&format!("Opening the data directory {}", options.data_dir.display()));
    let server = Server::open(config).await?;
    let tls = server.tls().context("the demo serves HTTPS")?.clone();
    let ca_file = options.data_dir.join("tls").join("ca.pem");
    let base = format!("https://{addr}");
    let token = server.mint_access_token(&TokenRequest {
        tenant: casefile_proto::DEFAULT_TENANT.to_owned(),
        roles: casefile_server::auth::permissions::ALL.iter().map(|r| r.to_string()).collect(),
        requestor: "casefile demo".to_owned(),
        ttl: TOKEN_TTL,
    })?;
    let enroll_token = server.create_enrollment_token(casefile_proto::DEFAULT_TENANT, None).await?;

    let shutdown = CancellationToken::new();
    let server_stop = shutdown.clone();
    let serving = server.clone();
    let server_task =
        tokio::spawn(async move { serving.serve(listener, async move { server_stop.cancelled().await }).await });
    step(&format!("Server listening on {base} (private CA {}, {})", ca_file.display(), tls.ca_pin()));

    let mut agent_config =
        casefile_agent::AgentConfig::new(base.clone(), Some(enroll_token), options.data_dir.join("agent"));
    agent_config.trust = casefile_agent::trust::Trust::Pinned(tls.ca_pin().parse().map_err(anyhow::Error::msg)?);
    let agent_task = tokio::spawn(casefile_agent::run(agent_config, shutdown.child_token()));

    let result = walk(&base, &token, &options.data_dir, &ca_file).await;
    if let Err(e) = &result {
        eprintln!("casefile demo: {e:#}");
    }
    if result.is_ok() && !options.exit_after_collect {
        println!();
        println!("Serving on {base}. Press Ctrl-C to stop.");
        tokio::signal::ctrl_c().await?;
    }
    shutdown.cancel();
    let _ = agent_task.await;
    let _ = server_task.await;
    result
}

fn step(text: &str) {
    println!("==> {text}");
}

async fn walk(base: &str, token: &str, data_dir: &Path, ca_file: &Path) -> anyhow::Result<()> {
    let client = ApiClient::with_ca(base, token, Some(ca_file))?;
    let hostname = casefile_agent::host::hostname();

    step(&format!("Waiting for the agent on '{hostname}' to enroll"));
    let machine = poll(|| async {
        let machines = client.machines().await?;
        Ok(machines.into_iter().find(|m| m.computer_dns_name == hostname))
    })
    .await?;
    println!("    machine id {} ({} {})", machine.id, machine.os_platform, machine.os_version.as_deref().unwrap_or(""));

    step(&format!("POST {base}/api/machines/{}/collectInvestigationPackage", machine.id));
    let action = client.collect(machine.id.as_str(), "casefile demo: collect an investigation package").await?;
    println!("    201 Created: action {} is {}", action.id, action.status);

    step("Waiting for the action to finish");
    let last = std::cell::Cell::new(action.status);
    let finished = poll(|| async {
        let current = client.action(action.id).await?;
        if current.status != last.get() {
            println!("    {} -> {}", last.get(), current.status);
            last.set(current.status);
        }
        Ok(current.status.is_final().then_some(current))
    })
    .await?;
    if finished.status != ActionStatus::Succeeded {
        bail!(
            "the action ended {}: {} (errorHResult {:#x})",
            finished.status,
            finished.troubleshoot_info.unwrap_or_default(),
            finished.error_h_result
        );
    }

    step(&format!("GET {base}/api/machineactions/{}/GetPackageUri", action.id));
    let url = client.package_uri(action.id).await?;
    println!("    signed link, valid 10 minutes: {}…", &url[..url.len().min(90)]);

    let downloads = data_dir.join("downloads");
    std::fs::create_dir_all(&downloads)?;
    let file = downloads.join(format!("{}.zip", action.id));
    step(&format!("Downloading to {}", file.display()));
    let bytes = client.download(&url, &file).await?;
    println!("    {bytes} bytes");

    // The key the agent registered at enrollment: the package must be signed by it.
    let agent_key = casefile_agent::identity::signing_key(&data_dir.join("agent"))?.verifying_key();
    summarize(&file, &agent_key)?;
    print_curl(base, token, machine.id.as_str(), action.id, ca_file);
    Ok(())
}

/// Retries `probe` until it yields a value (a demo client polls as scripts do).
async fn poll<T, F, Fut>(mut probe: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
    loop {
        if let Some(value) = probe().await? {
            return Ok(value);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("gave up after {} seconds", STEP_TIMEOUT.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn summarize(file: &Path, agent_key: &ed25519_dalek::VerifyingKey) -> anyhow::Result<()> {
    let report = casefile_package::verify_with(std::io::BufReader::new(std::fs::File::open(file)?), Some(agent_key))?;
    let m = &report.manifest;
    step("Package summary");
    println!("    host {} ({}, kernel {})", m.host.hostname, m.host.os, m.host.kernel);
    println!("    collected {} → {}", m.started_utc.format("%H:%M:%S%.3f"), m.finished_utc.format("%H:%M:%S%.3f"));
    for c in &m.collectors {
        println!(
            "    {:<28} {:<15} {:>3} files {:>6} ms  {}",
            c.folder,
            c.status.as_str(),
            c.items,
            c.duration_ms,
            c.error.as_deref().unwrap_or("")
        );
    }
    if report.is_authentic() {
        println!("    all {} files match their SHA-256 in manifest.json", report.files_checked);
        println!("    manifest {}", report.signature);
        Ok(())
    } else {
        println!("    manifest {}", report.signature);
        for p in &report.problems {
            println!("    PROBLEM: {p}");
        }
        bail!("the downloaded package does not verify")
    }
}

fn print_curl(base: &str, token: &str, machine_id: &str, action_id: uuid::Uuid, ca_file: &Path) {
    step("Try the API by hand (the token is valid for one hour; curl trusts the demo's private CA)");
    println!("    export TOKEN='{token}'");
    println!("    export CASEFILE_CA='{}'", ca_file.display());
    println!("    curl -s --cacert \"$CASEFILE_CA\" -H \"Authorization: Bearer $TOKEN\" {base}/api/machines");
    println!(
        "    curl -s --cacert \"$CASEFILE_CA\" -X POST -H \"Authorization: Bearer $TOKEN\" -H 'Content-Type: application/json' \\\n         -d '{{\"Comment\":\"Collect forensics\"}}' {base}/api/machines/{machine_id}/collectInvestigationPackage"
    );
    println!(
        "    curl -s --cacert \"$CASEFILE_CA\" -H \"Authorization: Bearer $TOKEN\" {base}/api/machineactions/{action_id}"
    );
    println!(
        "    curl -s --cacert \"$CASEFILE_CA\" -H \"Authorization: Bearer $TOKEN\" {base}/api/machineactions/{action_id}/GetPackageUri"
    );
}
