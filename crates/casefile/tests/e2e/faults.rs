//! Faults between server and agent (issue 9 items 10–13 and the orphaned upload): the
//! server down during a collection's report, answers that never reach the agent, agents
//! killed mid-collection, a database failing after a package was published.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use casefile_agent::identity::Identity;
use casefile_agent::transport::Transport;
use casefile_collectors::{CollectError, Collector, Context};
use casefile_package::{ItemOutcome, ItemSink};
use casefile_proto::MachineAction;
use casefile_proto::action::{ActionStatus, hresult};
use casefile_proto::agent::AgentTask;
use casefile_server::{Server, ServerConfig, TokenRequest};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::cli::agent_binary;
use crate::support::{ALL, TestServer, sqlite_only};

const WAIT_LIMIT: Duration = Duration::from_secs(120);

/// A real server on its own runtime, so it can be killed outright (every connection
/// reset, as a crashed process would) and started again on the same port and data dir.
struct Instance {
    runtime: Option<tokio::runtime::Runtime>,
    server: Server,
    addr: SocketAddr,
    changes: tokio::sync::watch::Receiver<u64>,
}

impl Instance {
    async fn launch(config: ServerConfig, addr: SocketAddr) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let server = runtime.spawn(Server::open(config)).await.unwrap().unwrap();
        // The listener belongs to the server's runtime, so it dies with it.
        let listener = runtime.spawn(tokio::net::TcpListener::bind(addr)).await.unwrap().unwrap();
        let addr = listener.local_addr().unwrap();
        let serving = server.clone();
        runtime.spawn(async move { serving.serve(listener, std::future::pending()).await });
        let changes = server.state().dispatcher.watch_actions();
        Self { runtime: Some(runtime), server, addr, changes }
    }

    fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn token(&self) -> String {
        self.server
            .mint_access_token(&TokenRequest {
                tenant: "default".into(),
                roles: ALL.iter().map(|r| r.to_string()).collect(),
                requestor: "fault tests".into(),
                ttl: Duration::from_secs(600),
            })
            .unwrap()
    }

    async fn action(&self, id: &str) -> MachineAction {
        let response = reqwest::Client::new()
            .get(format!("{}/api/machineactions/{id}", self.base()))
            .bearer_auth(self.token())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    async fn collect(&self, machine: &str) -> String {
        let response = reqwest::Client::new()
            .post(format!("{}/api/machines/{machine}/collectInvestigationPackage", self.base()))
            .bearer_auth(self.token())
            .json(&serde_json::json!({"Comment": "fault test"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        let created: Value = response.json().await.unwrap();
        created["id"].as_str().unwrap().to_owned()
    }

    /// Waits for a final status, woken by the server's change notifications.
    async fn wait_final(&self, id: &str) -> MachineAction {
        let mut changes = self.changes.clone();
        tokio::time::timeout(WAIT_LIMIT, async {
            loop {
                changes.borrow_and_update();
                let action = self.action(id).await;
                if action.status.is_final() {
                    return action;
                }
                changes.changed().await.unwrap();
            }
        })
        .await
        .expect("action finished in time")
    }

    /// Kills the server: its runtime stops with every task and connection, and its port
    /// is free once this returns.
    async fn kill(mut self) {
        if let Some(runtime) = self.runtime.take() {
            tokio::task::spawn_blocking(move || runtime.shutdown_timeout(WAIT_LIMIT)).await.unwrap();
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A free port below the usual ephemeral range (32768 and up), so that while the server is
/// down neither another test's port-0 listener nor an outgoing connection can take it.
fn stable_addr() -> SocketAddr {
    for _ in 0..1000 {
        let random = uuid::Uuid::new_v4();
        let port = 20_000 + u16::from_le_bytes([random.as_bytes()[0], random.as_bytes()[1]]) % 12_000;
        if let Ok(probe) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            return probe.local_addr().unwrap();
        }
    }
    panic!("no free port below the ephemeral range")
}

fn config(dir: &Path) -> ServerConfig {
    let mut config = ServerConfig { data_dir: dir.join("data"), ..Default::default() };
    config.rate_limits.enabled = false;
    // These tests are about outages, not transport: plain HTTP on loopback.
    config.tls.plain_http = true;
    config
}

/// What stands on the server's port while it is down: it takes each connection, reads the
/// request head, answers `503` and hangs up. Sends the request line of each PUT and POST
/// (the agent's reports; its polls are GETs) so a test knows the agent tried.
async fn outage(addr: SocketAddr) -> (tokio::task::JoinHandle<()>, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let (tried, attempts) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else { return };
            let tried = tried.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && head.len() < 64 * 1024 {
                    match socket.read(&mut byte).await {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let line = String::from_utf8_lossy(&head).lines().next().unwrap_or_default().to_owned();
                let _ = socket
                    .write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
                let _ = socket.shutdown().await;
                if !line.starts_with("GET ") {
                    let _ = tried.send(line);
                }
            });
        }
    });
    (task, attempts)
}

/// A collector that holds its collection until released, then ends it as told.
struct Gate {
    started: Arc<tokio::sync::Notify>,
    release: Arc<tokio::sync::Notify>,
    fail: bool,
}

impl Collector for Gate {
    fn name(&self) -> &'static str {
        "gate"
    }

    fn folder(&self) -> &'static str {
        "Gate"
    }

    fn collect(&self, ctx: &Context, sink: &mut dyn ItemSink) -> Result<(), CollectError> {
        sink.file("held.txt", "test", |w| w.write_all(b"held").map(|()| ItemOutcome::ok()))?;
        self.started.notify_one();
        // Collectors run on plain threads: wait on a runtime of their own.
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
            tokio::select! {
                _ = ctx.cancel.cancelled() => {}
                _ = self.release.notified() => {}
            }
        });
        // `Cancelled` from a collector the server did not cancel fails the collection.
        if self.fail || ctx.cancel.is_cancelled() { Err(CollectError::Cancelled) } else { Ok(()) }
    }
}

struct GatedAgent {
    identity: Identity,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), casefile_agent::AgentError>>,
}

impl GatedAgent {
    async fn start(base: &str, state_dir: &Path, token: Option<String>, gate: Option<Gate>) -> Self {
        let mut config = casefile_agent::AgentConfig::new(base.to_owned(), token, state_dir.to_owned());
        config.host_id = Some("faulty".into());
        if let Some(gate) = gate {
            config.collectors = Some(casefile_agent::Collectors(Arc::new(vec![Box::new(gate)])));
        }
        let stop = CancellationToken::new();
        let (ready, online) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(casefile_agent::run_with_ready(config, stop.clone(), Some(ready)));
        let identity = tokio::time::timeout(WAIT_LIMIT, online).await.unwrap().expect("agent online");
        Self { identity, stop, task }
    }

    async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                found.extend(files_in(&path));
            } else {
                found.push(path);
            }
        }
    }
    found
}

/// Waits until the agent has sent `count` reports to the stand-in (each one refused).
/// Progress reports are best effort, not reports the agent owes: they are passed over.
async fn attempts(seen: &mut tokio::sync::mpsc::UnboundedReceiver<String>, count: usize, what: &str) {
    let mut found = 0;
    while found < count {
        let line = tokio::time::timeout(WAIT_LIMIT, seen.recv()).await.expect("the agent retried").unwrap();
        if line.contains("/progress") {
            continue;
        }
        assert!(line.contains(what), "{line}");
        found += 1;
    }
}

/// Issue 9 item 10: the server goes down while a collection runs; the package waits on
/// disk, is retried (with backoff) while the server is away and across an agent restart,
/// and is delivered once the server is back: the action ends `Succeeded`.
#[tokio::test]
async fn a_package_outlives_a_server_outage_and_an_agent_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = Instance::launch(config(dir.path()), stable_addr()).await;
    let addr = server.addr;
    let state_dir = dir.path().join("agent");
    let (started, release) = (Arc::new(tokio::sync::Notify::new()), Arc::new(tokio::sync::Notify::new()));
    let gate = Gate { started: started.clone(), release: release.clone(), fail: false };
    let enroll = server.server.create_enrollment_token("default", None).await.unwrap();
    let agent = GatedAgent::start(&server.base(), &state_dir, Some(enroll), Some(gate)).await;
    let id = server.collect(&agent.identity.machine_id).await;
    started.notified().await;

    server.kill().await;
    let (stand_in, mut seen) = outage(addr).await;
    release.notify_one();
    attempts(&mut seen, 2, &format!("/agent/v1/actions/{id}/upload")).await;
    agent.stop().await;
    let kept = files_in(&state_dir.join("work"));
    assert_eq!(kept.len(), 1, "the package waits for the server: {kept:?}");
    assert_eq!(files_in(&state_dir.join("outbox")).len(), 1);
    stand_in.abort();
    let _ = stand_in.await;

    let server = Instance::launch(config(dir.path()), addr).await;
    let agent = GatedAgent::start(&server.base(), &state_dir, None, None).await;
    let done = server.wait_final(&id).await;
    assert_eq!(done.status, ActionStatus::Succeeded, "{:?}", done.troubleshoot_info);
    // The agent forgets a report once it has the server's answer: stopping waits for that.
    agent.stop().await;
    assert!(files_in(&state_dir.join("work")).is_empty(), "the delivered package is gone from the agent");
    assert!(files_in(&state_dir.join("outbox")).is_empty());
}

/// Issue 9 item 10: a collection fails while the server is down; its failure report is
/// retried until the server is back, and the action ends `Failed` with the agent's reason
/// (not stuck `InProgress` until a timeout).
#[tokio::test]
async fn a_failure_report_outlives_a_server_outage() {
    let dir = tempfile::tempdir().unwrap();
    let server = Instance::launch(config(dir.path()), stable_addr()).await;
    let addr = server.addr;
    let state_dir = dir.path().join("agent");
    let (started, release) = (Arc::new(tokio::sync::Notify::new()), Arc::new(tokio::sync::Notify::new()));
    let gate = Gate { started: started.clone(), release: release.clone(), fail: true };
    let enroll = server.server.create_enrollment_token("default", None).await.unwrap();
    let agent = GatedAgent::start(&server.base(), &state_dir, Some(enroll), Some(gate)).await;
    let id = server.collect(&agent.identity.machine_id).await;
    started.notified().await;

    server.kill().await;
    let (stand_in, mut seen) = outage(addr).await;
    release.notify_one();
    attempts(&mut seen, 3, &format!("POST /agent/v1/actions/{id}/failure")).await;
    stand_in.abort();
    let _ = stand_in.await;

    let server = Instance::launch(config(dir.path()), addr).await;
    let done = server.wait_final(&id).await;
    assert_eq!(done.status, ActionStatus::Failed, "{:?}", done.troubleshoot_info);
    assert_eq!(done.error_h_result, hresult::COLLECTION_FAILED);
    agent.stop().await;
    assert!(files_in(&state_dir.join("outbox")).is_empty(), "delivered reports are forgotten");
}

/// An agent that speaks the protocol by hand.
async fn raw_agent(server: &TestServer, host_id: &str) -> (Transport, ed25519_dalek::SigningKey, String) {
    let key = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    let request = crate::agent::RawAgent::enroll_request(host_id, Some(&key));
    let transport = Transport::with_client_builder(&server.base, server.client_builder()).unwrap();
    let enrolled = transport.enroll(&server.enroll_token().await, &request).await.unwrap();
    (transport.with_credential(enrolled.credential), key, enrolled.machine_id)
}

async fn poll(agent: &Transport) -> Option<AgentTask> {
    agent.next_task(Duration::ZERO).await.unwrap()
}

/// Issue 9 item 11: the poll's answer never reaches the agent (here: a client that reads
/// it and never confirms). The claim is a lease: within it nothing is handed out twice;
/// after it the same action is offered again, still `InProgress`, and the audit trail
/// counts the offers. A confirmed action is never offered again.
#[tokio::test]
async fn an_action_whose_answer_was_lost_is_offered_again() {
    let server = TestServer::start_with_clock(|c| {
        c.agents.claim_lease_seconds = 30;
        c.agents.silent_timeout_seconds = 3600;
    })
    .await;
    let (agent, _, machine) = raw_agent(&server, "lossy").await;
    let id = server.collect(&machine, &server.token(ALL)).await.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let first = poll(&agent).await;
    assert!(
        matches!(first, Some(AgentTask::CollectInvestigationPackage { action_id, .. }) if action_id.to_string() == id)
    );
    assert_eq!(server.action(&id).await.status, ActionStatus::InProgress);
    assert_eq!(poll(&agent).await, None, "not offered twice within the lease");

    server.advance(Duration::from_secs(31));
    let again = poll(&agent).await;
    assert_eq!(again, first, "offered again once the lease ended");
    assert_eq!(server.action(&id).await.status, ActionStatus::InProgress);
    let store = &server.server().state().store;
    let filter = casefile_store::AuditFilter {
        event: Some("action.dispatch".into()),
        target: Some(id.clone()),
        limit: 10,
        ..Default::default()
    };
    let offers: Vec<Value> =
        store.audit(&filter).await.unwrap().iter().map(|e| e.entry.detail.as_ref().unwrap()["offer"].clone()).collect();
    assert_eq!(offers, vec![Value::from(1), Value::from(2)]);

    agent.accept(id.parse().unwrap()).await.unwrap();
    server.advance(Duration::from_secs(31));
    assert_eq!(poll(&agent).await, None, "a confirmed action is not offered again");
}

/// Issue 9 item 11: a poll already waiting when an unconfirmed claim's lease ends gets the
/// action then, rather than an empty answer at the end of its wait.
#[tokio::test]
async fn a_waiting_poll_gets_the_unconfirmed_action_when_its_lease_ends() {
    let server = TestServer::start_with(|c| {
        c.agents.claim_lease_seconds = 1;
        c.agents.poll_wait_seconds = 600;
        c.agents.silent_timeout_seconds = 1200;
    })
    .await;
    let (agent, _, machine) = raw_agent(&server, "lossy-waiting").await;
    server.collect(&machine, &server.token(ALL)).await;
    let first = poll(&agent).await.expect("handed out");
    let again = tokio::time::timeout(WAIT_LIMIT, agent.next_task(Duration::from_secs(600))).await.unwrap().unwrap();
    assert_eq!(again, Some(first));
}

/// Issue 9 item 13: an agent process killed (`kill -9`) during a collection leaves a
/// partial zip; at its next start it removes it (and any other leftover), and the server
/// fails the abandoned action.
#[tokio::test]
async fn a_killed_agent_leaves_no_partial_packages_after_its_restart() {
    let server = TestServer::start().await;
    let state = server.dir.path().join("agent-killed");
    let enroll = server.enroll_token().await;
    let spawn = |token: Option<&str>| {
        let mut command = Command::new(agent_binary());
        command.args(["run", "--server", &server.base, "--host-id", "killed", "--state-dir"]).arg(&state);
        command.args(server.trust_args());
        if let Some(token) = token {
            command.args(["--enroll-token", token]);
        }
        let mut child = command.env("RUST_LOG", "info").stderr(Stdio::piped()).spawn().unwrap();
        let (lines, said) = std::sync::mpsc::channel::<String>();
        let stderr = BufReader::new(child.stderr.take().unwrap());
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                let _ = lines.send(line);
            }
        });
        (child, said)
    };
    let until = |said: std::sync::mpsc::Receiver<String>, what: &'static str| async move {
        tokio::task::spawn_blocking(move || {
            let found = said.iter().any(|l| l.contains(what));
            (found, said)
        })
        .await
        .unwrap()
    };
    let (mut child, said) = spawn(Some(&enroll));
    let (online, said) = until(said, "agent online").await;
    assert!(online);
    let identity: Value = serde_json::from_slice(&std::fs::read(state.join("identity.json")).unwrap()).unwrap();
    let machine = identity["machine_id"].as_str().unwrap().to_owned();
    let token = server.token(ALL);
    let id = server.collect(&machine, &token).await.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let (collecting, _said) = until(said, "collecting investigation package").await;
    assert!(collecting);
    child.kill().unwrap();
    child.wait().unwrap();
    let mid_collection = server.action(&id).await.status == ActionStatus::InProgress;
    // Leftovers of earlier kills, whatever this one left.
    std::fs::write(state.join("work").join(format!("{}.zip", uuid::Uuid::new_v4())), b"partial").unwrap();
    std::fs::write(state.join("outbox").join("half-written.tmp"), b"{").unwrap();

    let (mut child, said) = spawn(None);
    let (online, _said) = until(said, "agent online").await;
    assert!(online);
    // Only a package still owed to the server may stay, with its outbox entry (when the
    // kill came after the collection). Entries are listed first: a package goes before
    // its entry.
    let owed: Vec<PathBuf> = files_in(&state.join("outbox"))
        .iter()
        .filter_map(|p| p.file_stem()?.to_str().map(|stem| state.join("work").join(format!("{stem}.zip"))))
        .collect();
    let left = files_in(&state.join("work"));
    assert!(left.iter().all(|p| owed.contains(p)), "partial packages left: {left:?} (owed: {owed:?})");
    assert!(!state.join("outbox").join("half-written.tmp").exists());
    if mid_collection && owed.is_empty() {
        let done = server.action(&id).await;
        assert_eq!(done.status, ActionStatus::Failed, "the abandoned collection failed at the restart");
        assert!(left.is_empty());
    } else {
        eprintln!("the kill came after the collection had finished: only the planted leftovers were checked");
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Issue 9, smaller break: the database fails after the package was published; the stored
/// package is deleted (nothing records it), the action stays `InProgress`, and the
/// agent's retry succeeds once the database works again.
#[tokio::test]
async fn a_store_failure_after_publishing_leaves_no_orphaned_package() {
    if sqlite_only("a SQLite trigger that fails the write") {
        return;
    }
    let server = TestServer::start().await;
    let (agent, key, machine) = raw_agent(&server, "orphan").await;
    let created = server.collect(&machine, &server.token(ALL)).await.json::<Value>().await.unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    let action_id: uuid::Uuid = id.parse().unwrap();
    assert!(poll(&agent).await.is_some());
    let zip = server.dir.path().join("orphan.zip");
    let collection = casefile_agent::collect::Collection {
        output: zip.clone(),
        meta: casefile_agent::collect::package_meta(Some(action_id), Some(machine.clone())),
        ctx: Context::live(CancellationToken::new()),
        collectors: casefile_agent::Collectors(Arc::new(vec![])),
        profile: None,
        governance: Default::default(),
        signer: key,
        progress: None,
    };
    let package = collection.run().await.unwrap();

    // The fault: recording any package fails, after the upload was checked and published.
    let db = server.dir.path().join("data/casefile.db");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display())).await.unwrap();
    sqlx::query("CREATE TRIGGER injected BEFORE INSERT ON packages BEGIN SELECT RAISE(ABORT, 'injected'); END")
        .execute(&pool)
        .await
        .unwrap();
    let refused = agent.upload_package(action_id, &zip, package.size, &package.sha256).await;
    assert!(matches!(refused, Err(casefile_agent::AgentError::Server { status: 500, .. })), "{refused:?}");
    let packages = server.dir.path().join("data/packages");
    assert!(files_in(&packages).is_empty(), "no orphaned package: {:?}", files_in(&packages));
    assert_eq!(server.action(&id).await.status, ActionStatus::InProgress, "the agent may retry");

    sqlx::query("DROP TRIGGER injected").execute(&pool).await.unwrap();
    agent.upload_package(action_id, &zip, package.size, &package.sha256).await.unwrap();
    assert_eq!(server.action(&id).await.status, ActionStatus::Succeeded);
    assert_eq!(files_in(&packages).len(), 1);
}
