//! Operating the server (issue 10, "Observe"): `/metrics` in Prometheus' text format after
//! real work, who may read it, and `/healthz` and `/readyz` as load balancers see them.

use std::collections::BTreeMap;

use casefile_server::config::Quota;
use serde_json::Value;

use crate::agent::RawAgent;
use crate::durability::{SmallDisk, checkpoint};
use crate::support::*;

/// One sample of the exposition: a name, its labels and its value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses Prometheus' text format line by line (comments skipped, label values unescaped);
/// panics on a line that is not `name{labels} value`.
fn parse(text: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#')) {
        let name_end = line.find(['{', ' ']).unwrap_or_else(|| panic!("no value: {line}"));
        let name = line[..name_end].to_owned();
        assert!(name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':'), "name: {line}");
        let mut labels = BTreeMap::new();
        let mut rest = &line[name_end..];
        if let Some(inner) = rest.strip_prefix('{') {
            let mut chars = inner.char_indices();
            let mut key = String::new();
            loop {
                let (i, c) = chars.next().unwrap_or_else(|| panic!("unterminated labels: {line}"));
                match c {
                    '}' => {
                        rest = &inner[i + 1..];
                        break;
                    }
                    ',' => {}
                    '=' => {
                        assert_eq!(chars.next().map(|(_, c)| c), Some('"'), "quoted value: {line}");
                        let mut value = String::new();
                        loop {
                            match chars.next().unwrap_or_else(|| panic!("unterminated value: {line}")).1 {
                                '"' => break,
                                '\\' => match chars.next().unwrap().1 {
                                    'n' => value.push('\n'),
                                    other => value.push(other),
                                },
                                c => value.push(c),
                            }
                        }
                        assert!(labels.insert(std::mem::take(&mut key), value).is_none(), "duplicate label: {line}");
                    }
                    c => key.push(c),
                }
            }
        }
        let value = rest.trim().split(' ').next().unwrap();
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("value: {line}")),
        };
        samples.push(Sample { name, labels, value });
    }
    samples
}

struct Scrape(Vec<Sample>);

impl Scrape {
    /// The value of the one sample named `name` whose labels include `labels`; 0 when none
    /// (a counter never incremented is not shown).
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let matching: Vec<&Sample> = self
            .0
            .iter()
            .filter(|s| s.name == name && labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(v)))
            .collect();
        assert!(matching.len() <= 1, "{name}{labels:?} matches several samples: {matching:?}");
        matching.first().map_or(0.0, |s| s.value)
    }

    fn has(&self, name: &str) -> bool {
        self.0.iter().any(|s| s.name == name)
    }
}

async fn scrape(server: &TestServer) -> Scrape {
    let response = server.http.get(format!("{}/metrics", server.base)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    Scrape(parse(&response.text().await.unwrap()))
}

const REQUESTS: &str = "casefile_http_requests_total";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collection_shows_in_the_metrics_by_route_template() {
    let server = TestServer::start_with(|c| {
        c.rate_limits.enabled = true;
        c.rate_limits.apis.insert("ListMachines".into(), Quota { per_minute: 1, per_hour: 10 });
    })
    .await;
    let done = server.succeeded_collection("observed-host").await;
    let package = server.http.get(&done.url).send().await.unwrap().bytes().await.unwrap();

    // A tampered upload: the bytes are not the ones announced.
    let tampered = RawAgent::enroll(&server, "tampered-host").await;
    assert_eq!(server.collect(&tampered.machine_id, &done.token).await.status(), 201);
    let Some(casefile_proto::agent::AgentTask::CollectInvestigationPackage { action_id, .. }) = tampered.poll(0).await
    else {
        panic!("a collection to run")
    };
    let refused = tampered.upload(&action_id.to_string(), b"not the package".as_slice(), &"0".repeat(64)).await;
    assert_eq!(refused.status(), 400);

    // Over a quota.
    assert_eq!(server.get("/api/machines", &done.token).await.status(), 200);
    assert_eq!(server.get("/api/machines", &done.token).await.status(), 429);
    // No route: counted under one label, whatever the path.
    assert_eq!(server.get(&format!("/api/machineactions/{}/nothing", done.id), &done.token).await.status(), 404);

    let m = scrape(&server).await;
    let collect = [("route", "/api/machines/{id}/collectinvestigationpackage"), ("method", "POST"), ("status", "201")];
    assert_eq!(m.value(REQUESTS, &collect), 2.0);
    // The agent's upload is resumable (one chunk, for a package this small); the tampered
    // one is a single upload.
    let resumable = [("route", "/agent/v1/actions/{id}/upload"), ("method", "POST"), ("status", "201")];
    assert_eq!(m.value(REQUESTS, &resumable), 1.0);
    let chunk = [("route", "/agent/v1/actions/{id}/upload"), ("method", "PATCH"), ("status", "204")];
    assert_eq!(m.value(REQUESTS, &chunk), 1.0);
    let upload = [("route", "/agent/v1/actions/{id}/package"), ("method", "PUT")];
    assert_eq!(m.value(REQUESTS, &[upload[0], upload[1], ("status", "400")]), 1.0);
    assert_eq!(m.value(REQUESTS, &[("route", "/api/machines"), ("status", "429")]), 1.0);
    assert_eq!(m.value(REQUESTS, &[("route", "unmatched"), ("status", "404")]), 1.0);
    assert_eq!(m.value("casefile_http_request_duration_seconds_count", &collect[..2]), 2.0);
    assert_eq!(
        m.value("casefile_http_request_duration_seconds_bucket", &[collect[0], collect[1], ("le", "+Inf")]),
        2.0
    );
    // Ids never become labels: the label set stays bounded however many actions there are.
    let ids = [done.id.as_str(), done.agent.identity.machine_id.as_str(), tampered.machine_id.as_str()];
    let action = action_id.to_string();
    for sample in &m.0 {
        for value in sample.labels.values() {
            assert!(!ids.iter().chain([&action.as_str()]).any(|id| value.contains(id)), "{sample:?}");
        }
    }

    let collection = ("type", "CollectInvestigationPackage");
    assert_eq!(m.value("casefile_actions", &[collection, ("status", "Succeeded")]), 1.0);
    assert_eq!(m.value("casefile_actions", &[collection, ("status", "Failed")]), 1.0);
    assert_eq!(m.value("casefile_actions", &[collection, ("status", "Pending")]), 0.0);
    assert_eq!(m.value("casefile_agents_connected", &[]), 2.0);
    assert!(m.has("casefile_agent_polls_parked"));
    assert_eq!(m.value("casefile_dispatch_latency_seconds_count", &[]), 2.0);
    assert_eq!(m.value("casefile_package_uploads_total", &[("kind", "upload")]), 1.0);
    assert_eq!(m.value("casefile_package_upload_bytes_total", &[("kind", "upload")]), package.len() as f64);
    assert_eq!(m.value("casefile_package_upload_duration_seconds_count", &[("kind", "upload")]), 1.0);
    assert_eq!(m.value("casefile_package_rejections_total", &[("kind", "upload"), ("reason", "hash_mismatch")]), 1.0);
    assert_eq!(m.value("casefile_rate_limited_total", &[("limit", "api")]), 1.0);
    assert_eq!(m.value("casefile_store_errors_total", &[]), 0.0);
}

#[tokio::test]
async fn the_action_gauge_is_read_from_the_database_after_a_restart() {
    let first = TestServer::start().await;
    let machine = first.seed_machine("restarted-host").await;
    assert_eq!(first.collect(&machine, &first.token(ALL)).await.status(), 201);
    let data_dir = first.dir.path().join("data");
    // A second server on the same data directory has counted nothing itself.
    let second = TestServer::start_with(|c| c.data_dir = data_dir.clone()).await;
    let m = scrape(&second).await;
    assert_eq!(m.value("casefile_actions", &[("type", "CollectInvestigationPackage"), ("status", "Pending")]), 1.0);
    assert_eq!(m.value(REQUESTS, &[("route", "/api/machines/{id}/collectinvestigationpackage")]), 0.0);
}

#[tokio::test]
async fn metrics_turned_off_answer_404_in_the_error_shape() {
    let server = TestServer::start_with(|c| c.metrics.enabled = false).await;
    let (status, error) = error_of(server.http.get(format!("{}/metrics", server.base)).send().await.unwrap()).await;
    assert_eq!((status, error["code"].as_str().unwrap()), (404, "NotFound"));
    assert_eq!(server.http.get(format!("{}/healthz", server.base)).send().await.unwrap().status(), 200);
    assert_eq!(server.http.get(format!("{}/readyz", server.base)).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn metrics_are_refused_to_sources_not_allowed() {
    let server = TestServer::start_with(|c| {
        // The test client stands for a proxy on loopback that forwards the client's address.
        c.trusted_proxies = vec!["127.0.0.1".into()];
        c.metrics.allow_from = vec!["10.9.0.0/16".into()];
    })
    .await;
    let from = |client: &str| {
        server.http.get(format!("{}/metrics", server.base)).header("x-forwarded-for", client.to_owned()).send()
    };
    let (status, error) = error_of(from("203.0.113.5").await.unwrap()).await;
    assert_eq!((status, error["code"].as_str().unwrap()), (403, "Forbidden"));
    // A client cannot name itself into the allowed block through the proxy.
    assert_eq!(from("10.9.0.1, 203.0.113.5").await.unwrap().status(), 403);
    // Nor borrow the proxy's loopback address by sending a hop that is no address.
    for garbage in ["x", "x, 127.0.0.1", "127.0.0.1 x"] {
        assert_eq!(from(garbage).await.unwrap().status(), 403, "{garbage:?}");
    }
    assert_eq!(from("10.9.3.4").await.unwrap().status(), 200);
    assert_eq!(server.http.get(format!("{}/metrics", server.base)).send().await.unwrap().status(), 200, "loopback");

    let no_loopback = TestServer::start_with(|c| c.metrics.allow_loopback = false).await;
    let (status, _) =
        error_of(no_loopback.http.get(format!("{}/metrics", no_loopback.base)).send().await.unwrap()).await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn a_bad_allow_from_entry_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = casefile_server::ServerConfig { data_dir: dir.path().join("data"), ..Default::default() };
    config.metrics.allow_from = vec!["prometheus.internal".into()];
    let error = casefile_server::Server::open(config).await.err().expect("refused").to_string();
    assert!(error.contains("metrics.allow_from") && error.contains("prometheus.internal"), "{error}");
}

#[tokio::test]
async fn probes_need_no_token_and_are_never_throttled() {
    let server = TestServer::start_with(|c| {
        c.rate_limits.enabled = true;
        c.rate_limits.refusals_per_source_per_minute = 1;
    })
    .await;
    let get = |path: &str| server.http.get(format!("{}{path}", server.base)).send();
    // Refused calls from this address use up its quota of refusals.
    assert_eq!(get("/api/machines").await.unwrap().status(), 401);
    assert_eq!(get("/api/machines").await.unwrap().status(), 429);
    for _ in 0..3 {
        let health = get("/healthz").await.unwrap();
        assert_eq!(health.status(), 200);
        assert_eq!(health.json::<Value>().await.unwrap()["status"], "ok");
        let ready = get("/readyz").await.unwrap();
        assert_eq!(ready.status(), 200);
        assert_eq!(
            ready.json::<Value>().await.unwrap(),
            serde_json::json!({"status": "ready", "checks": {"database": "ok", "blobs": "ok"}})
        );
    }
    let m = scrape(&server).await;
    assert_eq!(m.value("casefile_rate_limited_total", &[("limit", "refusals")]), 1.0);
    assert_eq!(m.value(REQUESTS, &[("route", "/readyz"), ("status", "200")]), 3.0);
    // Not audited: probes are no one's actions.
    let trail = server.server().state().store.audit(&Default::default()).await.unwrap();
    let probes = ["/healthz", "/readyz", "/metrics"];
    assert!(trail.iter().all(|r| !probes.iter().any(|p| format!("{:?}", r.entry).contains(p))), "{trail:?}");
}

#[tokio::test]
async fn readyz_answers_503_when_the_package_storage_cannot_be_written() {
    let server = TestServer::start().await;
    let readyz = || server.http.get(format!("{}/readyz", server.base)).send();
    assert_eq!(readyz().await.unwrap().status(), 200);
    // A file where the staging directory should be: nothing can be created in it, even by root.
    let staging = server.dir.path().join("data").join("incoming");
    std::fs::remove_dir_all(&staging).unwrap();
    std::fs::write(&staging, b"in the way").unwrap();
    let unready = readyz().await.unwrap();
    assert_eq!(unready.status(), 503);
    let body: Value = unready.json().await.unwrap();
    assert_eq!(body["status"], "unavailable");
    assert_eq!(body["checks"]["database"], "ok");
    let why = body["checks"]["blobs"].as_str().unwrap();
    assert!(why.starts_with("the package storage cannot be written"), "{body}");
    assert!(!why.contains(server.dir.path().to_str().unwrap()), "no paths in a public answer: {why}");
    let m = scrape(&server).await;
    assert_eq!(m.value("casefile_store_errors_total", &[("store", "blobs"), ("operation", "probe")]), 1.0);

    std::fs::remove_file(&staging).unwrap();
    std::fs::create_dir(&staging).unwrap();
    assert_eq!(readyz().await.unwrap().status(), 200);
}

/// Needs root to mount a small tmpfs (CI runs as root); skipped elsewhere unless `CI` is set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_answers_503_when_the_database_cannot_take_a_write() {
    if sqlite_only("a full disk under the SQLite file") {
        return;
    }
    if std::env::var_os("CI").is_none() && !is_root() {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let disk = SmallDisk::mount(32);
    let server = TestServer::start_with(|c| c.data_dir = disk.path().join("data")).await;
    let readyz = || server.http.get(format!("{}/readyz", server.base)).send();
    assert_eq!(readyz().await.unwrap().status(), 200);

    checkpoint(&disk.path().join("data").join("casefile.db")).await;
    disk.fill();
    let unready = readyz().await.unwrap();
    assert_eq!(unready.status(), 503);
    let body: Value = unready.json().await.unwrap();
    assert_eq!(body["checks"]["database"], "the database's storage is full", "{body}");
    disk.free();
    assert_eq!(readyz().await.unwrap().status(), 200);
    let m = scrape(&server).await;
    assert_eq!(m.value("casefile_store_errors_total", &[("store", "database"), ("kind", "full")]), 1.0);
}

fn is_root() -> bool {
    std::process::Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}
