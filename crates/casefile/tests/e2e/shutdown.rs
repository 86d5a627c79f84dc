//! Issue 10: the server as an operated process. SIGTERM drains (parked polls answered at
//! once, uploads given the grace period, the rest cut) and exits 0; agents reconnect to
//! the restarted server; `--log-format json` writes one JSON object per line with the
//! correlation id. Every server here is the real `casefile server` process.

use std::io::{BufRead, BufReader, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use casefile_proto::agent::{AgentTask, EnrollResponse};
use ed25519_dalek::SigningKey;
use futures::StreamExt as _;
use serde_json::Value;
use sha2::Digest;

use crate::agent::{RawAgent, signed_package};
use crate::cli::{agent_binary, casefile};
use crate::support::*;

/// Upper bound on any wait here; a hang fails the test instead of blocking CI.
const WAIT_LIMIT: Duration = Duration::from_secs(120);

/// `casefile server` in its own process, logging JSON; every line is parsed (a line
/// that is not JSON fails the test) and handed to the test.
struct ServerProcess {
    child: Child,
    listen: SocketAddr,
    base: String,
    data_dir: PathBuf,
    logs: mpsc::Receiver<Value>,
}

impl ServerProcess {
    /// Starts on `listen` (port 0: any) with `config` as its configuration file.
    fn start(data_dir: &Path, listen: SocketAddr, config: &str) -> Self {
        std::fs::create_dir_all(data_dir).unwrap();
        let config_path = data_dir.with_extension("toml");
        std::fs::write(&config_path, config).unwrap();
        let mut child = casefile()
            .args(["server", "--log-format", "json", "--listen", &listen.to_string(), "--config"])
            .arg(&config_path)
            .arg("--data-dir")
            .arg(data_dir)
            // The debug lines of the agent routes say when a poll parks and an upload starts.
            .env("RUST_LOG", "info,casefile_server::routes::agent=debug")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, logs) = mpsc::channel();
        let stderr = BufReader::new(child.stderr.take().unwrap());
        std::thread::spawn(move || {
            for line in stderr.lines() {
                let line = line.unwrap();
                assert!(!line.contains('\x1b'), "no colour codes when stderr is not a terminal: {line:?}");
                let value: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
                let _ = tx.send(value);
            }
        });
        let mut server = Self { child, listen, base: String::new(), data_dir: data_dir.to_owned(), logs };
        let line = server.wait_log(|l| l["message"].as_str().is_some_and(|m| m.contains("listening on ")));
        let message = line["message"].as_str().unwrap();
        server.base = message[message.find("listening on ").unwrap() + "listening on ".len()..].to_owned();
        server.listen = server.base.trim_start_matches("https://").parse().unwrap();
        server
    }

    /// The next log line that `matches` (earlier ones are passed over).
    fn wait_log(&self, matches: impl Fn(&Value) -> bool) -> Value {
        loop {
            let line = self.logs.recv_timeout(WAIT_LIMIT).expect("the awaited log line came in time");
            if matches(&line) {
                return line;
            }
        }
    }

    fn http(&self) -> reqwest::Client {
        https_client(&std::fs::read_to_string(self.data_dir.join("tls").join("ca.pem")).unwrap())
    }

    fn token(&self) -> String {
        let out = casefile()
            .args(["token", "--roles", "Machine.CollectForensics,Machine.Read.All", "--data-dir"])
            .arg(&self.data_dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    fn enroll_token(&self) -> String {
        let out = casefile().args(["enroll-token", "--uses", "10", "--data-dir"]).arg(&self.data_dir).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().lines().next().unwrap().trim().to_owned()
    }

    /// Sends SIGTERM and returns the exit code.
    async fn terminate(mut self) -> Option<i32> {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
        tokio::task::spawn_blocking(move || self.child.wait().unwrap().code()).await.unwrap()
    }

    async fn enroll(&self, host_id: &str, key: &SigningKey) -> RawAgent {
        let http = self.http();
        let response = http
            .post(format!("{}/agent/v1/enroll", self.base))
            .bearer_auth(self.enroll_token())
            .json(&RawAgent::enroll_request(host_id, Some(key)))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        let enrolled: EnrollResponse = response.json().await.unwrap();
        RawAgent { base: self.base.clone(), http, machine_id: enrolled.machine_id, credential: enrolled.credential }
    }

    async fn collect(&self, machine: &str, token: &str) -> String {
        let response = self
            .http()
            .post(format!("{}/api/machines/{machine}/collectInvestigationPackage", self.base))
            .bearer_auth(token)
            .json(&serde_json::json!({"Comment": "shutdown test"}))
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert_eq!(status, 201, "{body}");
        body["id"].as_str().unwrap().to_owned()
    }

    async fn action(&self, id: &str, token: &str) -> Value {
        let response =
            self.http().get(format!("{}/api/machineactions/{id}", self.base)).bearer_auth(token).send().await.unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(poll_wait: u64, grace: u64) -> String {
    format!(
        "[agents]\npoll_wait_seconds = {poll_wait}\nsilent_timeout_seconds = {}\n\
         [rate_limits]\nenabled = false\n[shutdown]\ngrace_seconds = {grace}\n",
        poll_wait * 2
    )
}

fn is(message: &'static str) -> impl Fn(&Value) -> bool {
    move |line| line["message"] == message
}

/// A raw agent's poll that claims the action (no receipt confirmation: InProgress at once).
async fn claim(agent: &RawAgent) -> String {
    match agent.poll(5).await {
        Some(AgentTask::CollectInvestigationPackage { action_id, .. }) => action_id.to_string(),
        other => panic!("expected the collection, got {other:?}"),
    }
}

/// An upload whose body the test releases: the first half at once, the rest on `release`.
fn held_upload(
    agent: &RawAgent,
    action: &str,
    package: Vec<u8>,
) -> (tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<Result<reqwest::Response, reqwest::Error>>) {
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let sha256 = hex::encode(sha2::Sha256::digest(&package));
    let size = package.len();
    let (first, rest) = package.split_at(size / 2);
    let (first, rest) = (first.to_vec(), rest.to_vec());
    let body = futures::stream::iter([Ok::<_, std::io::Error>(first)]).chain(futures::stream::once(async move {
        // Dropped (the upload abandoned) counts as released: the body then ends short.
        let _ = released.await;
        Ok(rest)
    }));
    let request = agent
        .http
        .put(format!("{}/agent/v1/actions/{action}/package", agent.base))
        .bearer_auth(&agent.credential)
        .header("x-casefile-sha256", sha256)
        .header("content-length", size)
        .body(reqwest::Body::wrap_stream(body));
    (release, tokio::spawn(request.send()))
}

/// SIGTERM with agents parked on their long-polls: every poll is answered at once (not
/// after its 10 minutes), the server exits 0, and a real agent process reconnects to the
/// restarted server and collects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_parked_polls_exits_zero_and_agents_reconnect() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let config = config(600, 30);
    let server = ServerProcess::start(&data_dir, "127.0.0.1:0".parse().unwrap(), &config);
    // Port 0 was asked for: the recorded public URL (and so the issuer) names the bound port.
    let endpoint: Value = serde_json::from_slice(&std::fs::read(data_dir.join("endpoint.json")).unwrap()).unwrap();
    assert_eq!(endpoint["public_url"], server.base.as_str());
    let token = server.token();

    let state = dir.path().join("agent");
    let agent = KillOnDrop(
        Command::new(agent_binary())
            .args(["run", "--server", &server.base, "--host-id", "reconnecting", "--state-dir"])
            .arg(&state)
            .env("CASEFILE_ENROLL_TOKEN", server.enroll_token())
            .env("CASEFILE_AGENT_CA_SHA256", ca_pin(&data_dir))
            .env("CASEFILE_AGENT_LOG_FORMAT", "json")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    server.wait_log(is("poll parked"));

    let mut polls = tokio::task::JoinSet::new();
    for i in 0..3 {
        let raw = server.enroll(&format!("parked-{i}"), &SigningKey::from_bytes(&[i; 32])).await;
        polls.spawn(async move {
            raw.http
                .get(format!("{}/agent/v1/actions/next?wait=600", raw.base))
                .bearer_auth(&raw.credential)
                .send()
                .await
        });
    }
    for _ in 0..3 {
        server.wait_log(is("poll parked"));
    }
    let listen = server.listen;
    assert_eq!(server.terminate().await, Some(0), "a SIGTERM is a clean stop");
    while let Some(answered) = polls.join_next().await {
        let answered = answered.unwrap().expect("the parked poll got an answer");
        assert_eq!(answered.status(), 204, "poll again");
        assert_eq!(answered.headers()["connection"], "close");
    }

    // The agent process kept running; it finds the server back on the same address.
    let server = ServerProcess::start(&data_dir, listen, &config);
    // The token minted before the stop still holds: the issuer did not change.
    server.wait_log(is("poll parked"));
    let identity: Value = serde_json::from_slice(&std::fs::read(state.join("identity.json")).unwrap()).unwrap();
    let id = server.collect(identity["machine_id"].as_str().unwrap(), &token).await;
    server.wait_log(|l| l["message"] == "package verified and stored" && l["action_id"] == id.as_str());
    assert_eq!(server.action(&id, &token).await["status"], "Succeeded");
    drop(agent);
    assert_eq!(server.terminate().await, Some(0));
}

/// An agent process that does not outlive its test, even a failing one.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// SIGTERM during an upload: the upload in flight finishes within the grace period, the
/// action is `Succeeded`, and it still is after a restart, with its package.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_an_upload_lets_it_finish_within_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let config = config(30, 120);
    let server = ServerProcess::start(&data_dir, "127.0.0.1:0".parse().unwrap(), &config);
    let token = server.token();
    let key = SigningKey::from_bytes(&[7; 32]);
    let agent = server.enroll("uploading", &key).await;
    let id = server.collect(&agent.machine_id, &token).await;
    assert_eq!(claim(&agent).await, id);
    let package = signed_package(&key, false, &agent, &id);
    let (release, upload) = held_upload(&agent, &id, package.clone());
    server.wait_log(is("receiving the package"));

    let pid = server.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    server.wait_log(is("stopping: draining connections"));
    // The listener is closed: new connections are refused while the upload goes on.
    assert!(server.http().get(format!("{}/api/machines", server.base)).send().await.is_err());
    release.send(()).unwrap();
    let uploaded = upload.await.unwrap().expect("the upload in flight was answered");
    assert_eq!(uploaded.status(), 200, "{}", uploaded.text().await.unwrap());
    let listen = server.listen;
    assert_eq!(server.terminate_waiting().await, Some(0));

    let server = ServerProcess::start(&data_dir, listen, &config);
    let token = server.token();
    let action = server.action(&id, &token).await;
    assert_eq!(action["status"], "Succeeded", "{action}");
    let link: Value = server
        .http()
        .get(format!("{}/api/machineactions/{id}/getPackageUri", server.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let downloaded = server.http().get(link["value"].as_str().unwrap()).send().await.unwrap();
    assert_eq!(downloaded.bytes().await.unwrap(), package);
}

/// An upload still running when the grace period ends is cut: the server exits 0 with
/// its staging area empty, the action stays `InProgress`, and the agent's retry against
/// the restarted server ends it `Succeeded`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_longer_than_the_grace_period_is_cut_and_then_retried_to_succeeded() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let config = config(30, 1);
    let server = ServerProcess::start(&data_dir, "127.0.0.1:0".parse().unwrap(), &config);
    let token = server.token();
    let key = SigningKey::from_bytes(&[8; 32]);
    let agent = server.enroll("slow-uploader", &key).await;
    let id = server.collect(&agent.machine_id, &token).await;
    assert_eq!(claim(&agent).await, id);
    let package = signed_package(&key, false, &agent, &id);
    let (release, upload) = held_upload(&agent, &id, package.clone());
    server.wait_log(is("receiving the package"));

    let listen = server.listen;
    // Never released: the grace period (1 s) ends first.
    assert_eq!(server.terminate().await, Some(0));
    assert!(upload.await.unwrap().is_err(), "the cut upload got no answer");
    drop(release);
    let staging = data_dir.join("incoming");
    let left: Vec<_> = std::fs::read_dir(&staging).map(|d| d.map(|e| e.unwrap().path()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "the cut upload's staging is removed: {left:?}");

    let server = ServerProcess::start(&data_dir, listen, &config);
    let token = server.token();
    assert_eq!(server.action(&id, &token).await["status"], "InProgress", "the action stays retryable");
    let agent = RawAgent { base: server.base.clone(), http: server.http(), ..agent };
    let sha256 = hex::encode(sha2::Sha256::digest(&package));
    let retried = agent.upload(&id, package, &sha256).await;
    assert_eq!(retried.status(), 200, "{}", retried.text().await.unwrap());
    let action = server.action(&id, &token).await;
    assert_eq!(action["status"], "Succeeded", "{action}");
    assert_eq!(server.terminate().await, Some(0));
}

/// `--log-format json`: one object per line, and the request's line carries the
/// correlation id the response sent back. Text logs carry no colour codes in a pipe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_the_correlation_id_and_text_logs_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("json"), "127.0.0.1:0".parse().unwrap(), "");
    let response = server.http().get(format!("{}/api/machines", server.base)).send().await.unwrap();
    assert_eq!(response.status(), 401);
    let correlation = response.headers()["x-correlation-id"].to_str().unwrap().to_owned();
    let line = server.wait_log(|l| l["span"]["correlation_id"] == correlation.as_str());
    assert_eq!(line["message"], "request handled");
    assert_eq!(line["status"], 401);
    assert_eq!(line["span"]["path"], "/api/machines");
    assert_eq!(server.terminate().await, Some(0));

    // Text, through a pipe (the env var instead of the flag).
    let data_dir = dir.path().join("text");
    let mut child = casefile()
        .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data_dir)
        .env("CASEFILE_LOG_FORMAT", "text")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(serde_json::from_str::<Value>(&first).is_err(), "text, not JSON: {first}");
    assert!(!first.contains('\x1b'), "no colour codes in a pipe: {first:?}");
    child.kill().unwrap();
    child.wait().unwrap();

    // A bad value is a usage error naming the flag.
    let out = casefile().args(["server", "--log-format", "yaml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--log-format"));
    let out = casefile()
        .args(["token", "--roles", "Machine.Read.All", "--data-dir"])
        .arg(dir.path().join("none"))
        .env("CASEFILE_LOG_FORMAT", "xml")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "a bad CASEFILE_LOG_FORMAT is refused too");
}

/// Hostile `[shutdown]` values are refused at start, naming the setting.
#[test]
fn bad_grace_periods_are_refused_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    for (value, says) in [("-1", "grace_seconds"), ("\"30\"", "grace_seconds"), ("99999999", "shutdown.grace_seconds")]
    {
        let config = dir.path().join("bad.toml");
        let mut file = std::fs::File::create(&config).unwrap();
        writeln!(file, "[shutdown]\ngrace_seconds = {value}").unwrap();
        let out = casefile()
            .args(["server", "--listen", "127.0.0.1:0", "--config"])
            .arg(&config)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{value}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{value}: {stderr}");
    }
}

/// A running server owns its data directory: a second server, `migrate` and `restore`
/// (which would change the schema or move the directory from under it) are refused until it
/// stops; then they work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_server_keeps_migrate_restore_and_a_second_server_off_its_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let server = ServerProcess::start(&data_dir, "127.0.0.1:0".parse().unwrap(), &config(600, 30));
    let refused = |args: &[&str]| {
        let out = casefile().args(args).arg("--data-dir").arg(&data_dir).output().unwrap();
        assert!(!out.status.success(), "{args:?} ran beside the server");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(stderr.contains("stop it first"), "{args:?}: {stderr}");
    };
    refused(&["server", "--listen", "127.0.0.1:0"]);
    refused(&["migrate"]);
    let archive = dir.path().join("backup.zip").to_string_lossy().into_owned();
    refused(&["restore", &archive, "--force"]);
    assert_eq!(server.terminate().await, Some(0));

    let out = casefile().arg("migrate").arg("--data-dir").arg(&data_dir).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("up to date"));
}

fn ca_pin(data_dir: &Path) -> String {
    let endpoint: Value = serde_json::from_slice(&std::fs::read(data_dir.join("endpoint.json")).unwrap()).unwrap();
    endpoint["ca_sha256"].as_str().unwrap().to_owned()
}

impl ServerProcess {
    /// Waits for a process already sent SIGTERM to exit; returns its code.
    async fn terminate_waiting(mut self) -> Option<i32> {
        tokio::task::spawn_blocking(move || self.child.wait().unwrap().code()).await.unwrap()
    }
}

/// Replicas share the database, not a data directory: on PostgreSQL `casefile migrate`,
/// run from any data directory, is refused while a server is connected to the database,
/// naming who is.
#[tokio::test]
async fn migrate_is_refused_while_a_replica_uses_the_shared_database() {
    if !on_postgres() {
        eprintln!("PostgreSQL only: on SQLite the data directory's lock keeps migrate off (tested above)");
        return;
    }
    let server = TestServer::start().await;
    let elsewhere = tempfile::tempdir().unwrap();
    let out = casefile().arg("migrate").arg("--data-dir").arg(elsewhere.path()).output().unwrap();
    assert!(!out.status.success(), "migrate ran under a connected replica");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("other casefile processes are connected to this database"), "{stderr}");
    assert!(stderr.contains(&format!("casefile/{}", std::process::id())), "names the replica: {stderr}");
    assert!(stderr.contains("stop every replica first"), "{stderr}");
    drop(server);
}
