//! Writes under faults (issue 9, items 7 and 9): on a full disk every state-changing call
//! either persists or answers `507` and changes nothing; after a `kill -9` in the middle
//! of a burst, every change has its audit entry.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use casefile_proto::ActionStatus;
use casefile_store::{ActionStore, AuditFilter, AuditStore, HostFacts, MachineEnrollment, MachineStore, SqliteStore};
use serde_json::{Value, json};

use crate::agent::RawAgent;
use crate::support::*;

/// A tmpfs of its own, so a test can fill it without touching the machine's disk. Mounting
/// needs root (CI runs as root); unmounted when dropped.
pub(crate) struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    pub(crate) fn mount(mebibytes: u32) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mebibytes}m,mode=0700"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("mount runs");
        assert!(status.success(), "mounting a tmpfs needs root; the durability tests fill a small disk on purpose");
        Self { dir }
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes zeros until the filesystem has no block left.
    pub(crate) fn fill(&self) {
        let mut filler =
            std::fs::OpenOptions::new().create(true).append(true).open(self.path().join("filler")).unwrap();
        for chunk in [1 << 20, 4096, 512] {
            let block = vec![0u8; chunk];
            while filler.write_all(&block).is_ok() {}
        }
        let _ = filler.sync_all();
        assert!(std::fs::write(self.path().join("probe"), [0u8; 4096]).is_err(), "the disk is full");
        let _ = std::fs::remove_file(self.path().join("probe"));
    }

    pub(crate) fn free(&self) {
        std::fs::remove_file(self.path().join("filler")).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

/// Empties the WAL into the database, so the next commit must grow the WAL file: on a
/// full disk it cannot.
pub(crate) async fn checkpoint(database: &Path) {
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", database.display())).await.unwrap();
    let (busy, _, _): (i64, i64, i64) =
        sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)").fetch_one(&pool).await.unwrap();
    assert_eq!(busy, 0, "the WAL was emptied");
    pool.close().await;
}

/// What a call did on the full disk.
struct Outcome {
    call: &'static str,
    status: u16,
    body: String,
}

/// Makes `call` against a disk with no space left, not even in the WAL's file.
async fn outcome(
    disk: &SmallDisk,
    database: &Path,
    call: &'static str,
    request: impl std::future::Future<Output = reqwest::Response>,
) -> Outcome {
    // A refused commit leaves the frames it managed to write in the WAL's file, where
    // the next small commit would fit: empty it and take the space it gave back.
    checkpoint(database).await;
    disk.fill();
    let response = request.await;
    let status = response.status().as_u16();
    Outcome { call, status, body: response.text().await.unwrap_or_default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_never_acknowledges_a_write_that_did_not_persist() {
    let disk = SmallDisk::mount(48);
    let server = TestServer::start_with(|c| c.data_dir = disk.path().join("data")).await;
    let database = disk.path().join("data").join("casefile.db");
    let token = server.token(&[COLLECT, READ, "Machine.ReadWrite.All"]);
    let admin = server.token(&["Casefile.Admin"]);

    // Before the disk fills: a machine with a pending action, one with a running action,
    // a succeeded collection with its link, an application.
    let waiting = RawAgent::enroll(&server, "waiting-host").await;
    let pending: Value = server.collect(&waiting.machine_id, &token).await.json().await.unwrap();
    let pending_id = pending["id"].as_str().unwrap().to_owned();
    let running_agent = RawAgent::enroll(&server, "running-host").await;
    let running: Value = server.collect(&running_agent.machine_id, &token).await.json().await.unwrap();
    let running_id = running["id"].as_str().unwrap().to_owned();
    assert!(running_agent.poll(0).await.is_some());
    let done = server.succeeded_collection("done-host").await;
    let idle = RawAgent::enroll(&server, "idle-host").await;
    let app: Value = server
        .post_json("/api/admin/applications", &admin, &json!({"name": "playbook", "roles": [READ]}))
        .await
        .json()
        .await
        .unwrap();
    let (client_id, secret) = (app["client_id"].as_str().unwrap().to_owned(), app["client_secret"].as_str().unwrap());
    let secret = secret.to_owned();
    let enroll_token = server.enroll_token().await;
    let everything = AuditFilter { limit: 10_000, ..Default::default() };
    let ok_entries = |trail: Vec<casefile_store::AuditRecord>| trail.iter().filter(|r| r.entry.outcome == "ok").count();
    let audit_before = ok_entries(server.server().state().store.audit(&everything).await.unwrap());

    let base = &server.base;
    let http = &server.http;
    let mut outcomes = vec![
        outcome(&disk, &database, "collect", async { server.collect(&idle.machine_id, &token).await }).await,
        outcome(&disk, &database, "cancel a pending action", async { server.post_json(&format!("/api/machineactions/{pending_id}/cancel"), &token, &json!({})).await })
        .await,
        outcome(&disk, &database, "cancel a running action", async { server.post_json(&format!("/api/machineactions/{running_id}/cancel"), &token, &json!({})).await })
        .await,
        outcome(&disk, &database, "tag a machine", async { server
                .post_json(
                    &format!("/api/machines/{}/tags", idle.machine_id),
                    &token,
                    &json!({"Value": "x", "Action": "Add"}),
                )
                .await })
        .await,
        outcome(&disk, &database, "get a package link", async { server.get(&format!("/api/machineactions/{}/getPackageUri", done.id), &token).await })
        .await,
        outcome(&disk, &database, "download a package", async { http.get(&done.url).send().await.unwrap() }).await,
        outcome(&disk, &database, "create an application", async { server.post_json("/api/admin/applications", &admin, &json!({"name": "second", "roles": [READ]})).await })
        .await,
        outcome(&disk, &database, "disable an application", async { server.post_json(&format!("/api/admin/applications/{client_id}/disable"), &admin, &json!({})).await })
        .await,
        outcome(&disk, &database, "put a role", async { http.put(format!("{base}/api/admin/roles/Responders"))
                .bearer_auth(&admin)
                .json(&json!({"permissions": ["ViewData"], "users": ["a@example.com"], "groups": []}))
                .send()
                .await
                .unwrap() })
        .await,
        outcome(&disk, &database, "issue a token", async { http.post(format!("{base}/default/oauth2/v2.0/token"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(format!(
                    "grant_type=client_credentials&client_id={client_id}&client_secret={secret}&scope=https%3A%2F%2Fapi.securitycenter.microsoft.com%2F.default"
                ))
                .send()
                .await
                .unwrap() })
        .await,
        outcome(&disk, &database, "report a failure", async { http.post(format!("{base}/agent/v1/actions/{running_id}/failure"))
                .bearer_auth(&running_agent.credential)
                .json(&json!({"error_h_result": -1, "troubleshoot_info": "x"}))
                .send()
                .await
                .unwrap() })
        .await,
        outcome(&disk, &database, "poll for work", async { http.get(format!("{base}/agent/v1/actions/next?wait=0"))
                .bearer_auth(&waiting.credential)
                .send()
                .await
                .unwrap() })
        .await,
        outcome(&disk, &database, "enroll", async { http.post(format!("{base}/agent/v1/enroll"))
                .bearer_auth(&enroll_token)
                .json(&RawAgent::enroll_request("new-host", None))
                .send()
                .await
                .unwrap() })
        .await,
    ];

    // Nothing that answered success may be missing; everything refused is a 507 in the
    // error shape of its API, and changed nothing.
    let acknowledged: Vec<String> =
        outcomes.iter().filter(|o| o.status < 300).map(|o| format!("{} ({})", o.call, o.status)).collect();
    assert!(acknowledged.is_empty(), "acknowledged on a full disk: {acknowledged:?}");
    for o in &outcomes {
        assert_eq!(o.status, 507, "{}: {}", o.call, o.body);
        assert!(
            o.body.contains("InsufficientStorage") || o.body.contains("temporarily_unavailable"),
            "{}: {}",
            o.call,
            o.body
        );
    }
    outcomes.clear();

    disk.free();
    let store = &server.server().state().store;
    assert_eq!(server.action(&pending_id).await.status, ActionStatus::Pending);
    let still_running = server.action(&running_id).await;
    assert_eq!(still_running.status, ActionStatus::InProgress);
    assert!(still_running.cancellation_requestor.is_none());
    let idle_actions: Value =
        server.get(&format!("/api/machines/{}/machineactions", idle.machine_id), &token).await.json().await.unwrap();
    assert_eq!(idle_actions["value"].as_array().unwrap().len(), 0, "no collection was created");
    assert!(
        store
            .machine(&casefile_proto::TenantId::default_tenant(), &idle.machine_id)
            .await
            .unwrap()
            .unwrap()
            .machine_tags
            .is_empty()
    );
    let apps: Value = server.get("/api/admin/applications", &admin).await.json().await.unwrap();
    assert_eq!(apps["value"].as_array().unwrap().len(), 1);
    assert!(apps["value"][0]["disabled_at"].is_null(), "{apps}");
    assert!(store.roles(&casefile_proto::TenantId::default_tenant()).await.unwrap().is_empty());
    let new_host = store
        .machines(&casefile_proto::TenantId::default_tenant(), &casefile_store::ListQuery::first(1000))
        .await
        .unwrap();
    assert!(new_host.items.iter().all(|m| m.facts.computer_dns_name != "new-host.example"));
    let audit_after = ok_entries(store.audit(&everything).await.unwrap());
    assert_eq!(audit_after, audit_before, "no entry claims a change that did not happen");

    // With space again, the same calls go through.
    assert_eq!(server.collect(&idle.machine_id, &token).await.status(), 201);
    let cancelled = server.post_json(&format!("/api/machineactions/{pending_id}/cancel"), &token, &json!({})).await;
    assert_eq!(cancelled.status(), 200);
}

/// The server as a process of its own, to be killed.
struct ServerProcess {
    child: std::process::Child,
    base: String,
}

impl ServerProcess {
    fn start(data_dir: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_casefile"))
            .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let base = loop {
            let line = lines.next().expect("the server says where it listens").unwrap();
            if let Some(at) = line.find("listening on ") {
                break line[at + "listening on ".len()..].split_whitespace().next().unwrap().to_owned();
            }
        };
        // Keep draining the log so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines.by_ref() {});
        Self { child, base }
    }

    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

fn casefile_token(data_dir: &Path) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_casefile"))
        .args(["token", "--roles", "Machine.CollectForensics,Machine.Read.All", "--data-dir"])
        .arg(data_dir)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// Machines written into the database before the server starts.
async fn seed_machines(database: &Path, count: usize) -> Vec<String> {
    let store = SqliteStore::open(database).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..count {
        let id = format!("{i:040x}");
        let facts =
            HostFacts { computer_dns_name: format!("burst-{i}"), os_platform: "Linux".into(), ..Default::default() };
        let at = chrono::Utc::now();
        let machine = MachineEnrollment {
            id: id.clone(),
            tenant_id: casefile_proto::TenantId::default_tenant(),
            facts,
            credential_hash: format!("seeded-{i}"),
            agent_public_key: None,
            last_ip_address: None,
            at,
        };
        store.enroll_machine(&machine).await.unwrap();
        ids.push(id);
    }
    ids
}

/// Issue 9 item 9: a `kill -9` during a burst of collections leaves no action without its
/// `collect` entry (the action and its entry commit together).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_during_a_burst_of_collections_leaves_no_action_unaudited() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir: PathBuf = dir.path().join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    let machines = seed_machines(&data_dir.join("casefile.db"), 400).await;
    let server = ServerProcess::start(&data_dir);
    // After the first start: the token names the issuer the server recorded.
    let token = casefile_token(&data_dir);
    let http = https_client(&std::fs::read_to_string(data_dir.join("tls").join("ca.pem")).unwrap());
    let (answered_tx, mut answered) = tokio::sync::mpsc::unbounded_channel();
    let mut burst = tokio::task::JoinSet::new();
    for machine in machines {
        let (http, base, token, answered_tx) = (http.clone(), server.base.clone(), token.clone(), answered_tx.clone());
        burst.spawn(async move {
            let response = http
                .post(format!("{base}/api/machines/{machine}/collectInvestigationPackage"))
                .bearer_auth(token)
                .json(&json!({"Comment": "burst"}))
                .send()
                .await;
            if let Ok(r) = response
                && r.status() == 201
            {
                let _ = answered_tx.send(());
            }
        });
    }
    drop(answered_tx);
    // Kill it mid-burst: once some collections were acknowledged, well before all were.
    for _ in 0..50 {
        answered.recv().await.expect("collections are acknowledged");
    }
    server.kill();
    burst.shutdown().await;

    let store = SqliteStore::open(&data_dir.join("casefile.db")).await.unwrap();
    let actions = store
        .actions(&casefile_proto::TenantId::default_tenant(), &casefile_store::ListQuery::first(1000))
        .await
        .unwrap()
        .items;
    assert!(actions.len() >= 50, "{} actions", actions.len());
    let filter = AuditFilter { event: Some("collect".into()), limit: 10_000, ..Default::default() };
    let audited: std::collections::HashSet<String> =
        store.audit(&filter).await.unwrap().into_iter().filter_map(|r| r.entry.target).collect();
    let unaudited: Vec<String> = actions.iter().map(|a| a.id.to_string()).filter(|id| !audited.contains(id)).collect();
    assert!(
        unaudited.is_empty(),
        "{} of {} actions have no collect entry: {unaudited:?}",
        unaudited.len(),
        actions.len()
    );
}
