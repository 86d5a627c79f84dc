//! Issue 11, "Replicas": several `casefile server` processes on one PostgreSQL database
//! (the testkit's) and one bucket (moto's), with the same TLS certificate and CA, behave
//! as one server; HAProxy in front of them (TLS passed through) for the agent that loses
//! its replica mid-upload. Every replica here is the real `casefile server` process.

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use casefile_proto::agent::{AgentTask, EnrollResponse};
use casefile_testkit::haproxy::HaProxy;
use casefile_testkit::pg::PgDatabase;
use casefile_testkit::s3::S3Server;
use serde_json::Value;
use sha2::Digest as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::agent::RawAgent;
use crate::cli::{agent_binary, casefile};
use crate::support::*;

/// Upper bound on any wait here; a hang fails the test instead of blocking CI.
const WAIT_LIMIT: Duration = Duration::from_secs(120);

/// The "within 1 s", as a bound generous enough for a loaded CI machine: a poll
/// parked for 10 minutes that answers before it was woken, not by its own deadline.
const WAKE_LIMIT: Duration = Duration::from_secs(10);

/// Where in the bucket the replicas keep packages.
const PACKAGES_PREFIX: &str = "replicas";

/// The `[store]` section that points a replica at the shared database.
fn store_toml(url: &str) -> String {
    format!("[store]\nurl = \"{url}\"\n")
}

/// One `casefile server` process of the cluster, logging JSON.
struct Replica {
    child: Child,
    base: String,
    listen: SocketAddr,
    data_dir: PathBuf,
    config_path: PathBuf,
    /// The bucket's credentials, for the CLI run on this replica's configuration too.
    aws_env: Vec<(String, String)>,
    logs: Logs,
}

/// A process's JSON log lines, as they come. A line is handed out once, to the first wait
/// it matches; lines no wait wanted yet are kept for later waits (a replica may log what a
/// test waits for before the line the start waits for).
struct Logs {
    from: String,
    lines: mpsc::Receiver<Value>,
    kept: std::sync::Mutex<Vec<Value>>,
}

impl Logs {
    fn of(from: String, child: &mut Child) -> Self {
        let (tx, lines) = mpsc::channel();
        let stderr = BufReader::new(child.stderr.take().unwrap());
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                // Lines that are not JSON (an error the process ends with) are kept as text,
                // so a wait that fails can say why the process went.
                let value = serde_json::from_str::<Value>(&line).unwrap_or(Value::String(line));
                let _ = tx.send(value);
            }
        });
        Self { from, lines, kept: Default::default() }
    }

    /// The first line not handed out yet that `matches`; panics after [`WAIT_LIMIT`] or
    /// when the process is gone.
    fn wait(&self, matches: impl Fn(&Value) -> bool) -> Value {
        let mut kept = self.kept.lock().unwrap();
        if let Some(at) = kept.iter().position(&matches) {
            return kept.remove(at);
        }
        let deadline = Instant::now() + WAIT_LIMIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).unwrap_or_else(|e| {
                let last: Vec<String> = kept.iter().rev().take(5).rev().map(Value::to_string).collect();
                panic!("awaited log line of {}: {e}; its last lines:\n{}", self.from, last.join("\n"))
            });
            if matches(&line) {
                return line;
            }
            kept.push(line);
        }
    }
}

impl Replica {
    fn start(data_dir: &Path, listen: SocketAddr, config: &str, aws_env: &[(String, String)]) -> Self {
        std::fs::create_dir_all(data_dir).unwrap();
        let config_path = data_dir.with_extension("toml");
        std::fs::write(&config_path, config).unwrap();
        let mut child = casefile()
            .envs(aws_env.iter().map(|(k, v)| (k, v)))
            .args(["server", "--log-format", "json", "--listen", &listen.to_string(), "--config"])
            .arg(&config_path)
            .arg("--data-dir")
            .arg(data_dir)
            .env("RUST_LOG", "info,casefile_server::routes::agent=debug,casefile_server::routes::uploads=debug")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let base = format!("https://{listen}");
        let logs = Logs::of(format!("replica {base}"), &mut child);
        let replica =
            Self { child, base, listen, data_dir: data_dir.to_owned(), config_path, aws_env: aws_env.to_vec(), logs };
        replica.wait_log(|l| l["message"].as_str().is_some_and(|m| m.contains("listening on ")));
        replica
    }

    fn wait_log(&self, matches: impl Fn(&Value) -> bool) -> Value {
        self.logs.wait(matches)
    }

    /// `casefile ARGS --config <this replica's> --data-dir <its>`, which must succeed.
    fn cli(&self, args: &[&str]) -> String {
        let out = casefile()
            .envs(self.aws_env.iter().map(|(k, v)| (k, v)))
            .args(args)
            .arg("--config")
            .arg(&self.config_path)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "casefile {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// `kill -9`: no drain, no goodbye; its database sessions end with the process.
    fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn is(message: &'static str) -> impl Fn(&Value) -> bool {
    move |line| line["message"] == message
}

fn starts(prefix: &'static str) -> impl Fn(&Value) -> bool {
    move |line| line["message"].as_str().is_some_and(|m| m.starts_with(prefix))
}

/// Replicas on one fresh database, one bucket and one certificate: the first
/// creates the CA and certificate, the others serve the same files. All name the balancer's
/// address as their public URL, so tokens carry one issuer whichever replica checks them.
struct Cluster {
    dir: tempfile::TempDir,
    _db: PgDatabase,
    /// The S3-compatible server holding the one bucket all replicas store packages in.
    s3: S3Server,
    /// Where HAProxy listens (reserved before the replicas start: it is their public URL).
    proxy_addr: SocketAddr,
    config: String,
    replicas: Vec<Replica>,
}

impl Cluster {
    /// `None` (skipped, except in CI) without PostgreSQL or moto.
    fn new(sections: &str) -> Option<Self> {
        let db = casefile_testkit::pg::database()?;
        let s3 = S3Server::start()?;
        let proxy_addr: SocketAddr = ([127, 0, 0, 1], casefile_testkit::free_port()).into();
        let blobs = format!(
            "[blobs]\nurl = \"{}\"\nendpoint = \"{}\"\nallow_http = true\n",
            s3.url(PACKAGES_PREFIX),
            s3.endpoint()
        );
        let config = format!("public_url = \"https://{proxy_addr}\"\n{}{blobs}{sections}", store_toml(&db.url));
        let dir = tempfile::tempdir().unwrap();
        Some(Self { dir, _db: db, s3, proxy_addr, config, replicas: Vec::new() })
    }

    fn tls_dir(&self) -> PathBuf {
        self.dir.path().join("r0").join("tls")
    }

    /// Starts one more replica on `listen` (port 0: any); returns its index.
    fn start_on(&mut self, listen: SocketAddr) -> usize {
        let index = self.replicas.len();
        let mut config = self.config.clone();
        if index > 0 {
            let tls = self.tls_dir();
            config.push_str(&format!(
                "[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\nca_file = \"{}\"\n",
                tls.join("server.pem").display(),
                tls.join("server.key").display(),
                tls.join("ca.pem").display()
            ));
        }
        let listen = match listen.port() {
            0 => ([127, 0, 0, 1], casefile_testkit::free_port()).into(),
            _ => listen,
        };
        let data_dir = self.dir.path().join(format!("r{index}"));
        let replica = Replica::start(&data_dir, listen, &config, &self.s3.aws_env());
        self.replicas.push(replica);
        index
    }

    fn start(&mut self) -> usize {
        self.start_on(([127, 0, 0, 1], 0).into())
    }

    fn ca_file(&self) -> PathBuf {
        self.tls_dir().join("ca.pem")
    }

    fn http(&self) -> reqwest::Client {
        https_client(&std::fs::read_to_string(self.ca_file()).unwrap())
    }

    fn ca_pin(&self) -> String {
        let endpoint = self.dir.path().join("r0").join("endpoint.json");
        let endpoint: Value = serde_json::from_slice(&std::fs::read(endpoint).unwrap()).unwrap();
        endpoint["ca_sha256"].as_str().unwrap().to_owned()
    }

    /// An application token minted by the CLI from the shared database's signing key.
    fn token(&self) -> String {
        self.replicas[0].cli(&["token", "--roles", "Machine.CollectForensics,Machine.Read.All"]).trim().to_owned()
    }

    fn enroll_token(&self) -> String {
        self.replicas[0].cli(&["enroll-token", "--uses", "10"]).lines().next().unwrap().trim().to_owned()
    }

    /// A hand-driven agent enrolled through replica `on` and talking to it.
    async fn enroll(&self, on: usize, host_id: &str) -> RawAgent {
        let base = self.replicas[on].base.clone();
        let http = self.http();
        let response = http
            .post(format!("{base}/agent/v1/enroll"))
            .bearer_auth(self.enroll_token())
            .json(&RawAgent::enroll_request(host_id, None))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        let enrolled: EnrollResponse = response.json().await.unwrap();
        RawAgent { base, http, machine_id: enrolled.machine_id, credential: enrolled.credential }
    }

    async fn collect(&self, on: usize, machine: &str, token: &str) -> reqwest::Response {
        self.http()
            .post(format!("{}/api/machines/{machine}/collectInvestigationPackage", self.replicas[on].base))
            .bearer_auth(token)
            .json(&serde_json::json!({"Comment": "replica test"}))
            .send()
            .await
            .unwrap()
    }

    async fn get(&self, on: usize, path: &str, token: &str) -> reqwest::Response {
        self.http().get(format!("{}{path}", self.replicas[on].base)).bearer_auth(token).send().await.unwrap()
    }

    async fn action(&self, on: usize, id: &str, token: &str) -> Value {
        let response = self.get(on, &format!("/api/machineactions/{id}"), token).await;
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    /// Audit entries of `event`, as `casefile audit --json` shows them (the CLI reads the
    /// shared database, whichever replica's configuration it is given).
    fn audit(&self, event: &str) -> Vec<Value> {
        let out = self.replicas[0].cli(&["audit", "--json", "--event", event]);
        out.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    async fn jwks_kids(&self, on: usize) -> Vec<String> {
        let url = format!("{}/discovery/v2.0/keys", self.replicas[on].base);
        let jwks: Value = self.http().get(url).send().await.unwrap().json().await.unwrap();
        jwks["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap().to_owned()).collect()
    }

    /// The replica's `/metrics` sample lines naming `metric`.
    async fn samples(&self, on: usize, metric: &str) -> Vec<String> {
        let text = self.http().get(format!("{}/metrics", self.replicas[on].base)).send().await.unwrap();
        let text = text.text().await.unwrap();
        text.lines().filter(|l| l.starts_with(metric)).map(str::to_owned).collect()
    }
}

async fn created_id(response: reqwest::Response) -> String {
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

/// A poll of `agent` with a wait far longer than the test's, so only a wake-up can answer
/// it in time.
fn park(agent: &RawAgent) -> tokio::task::JoinHandle<Option<AgentTask>> {
    let agent = RawAgent {
        base: agent.base.clone(),
        http: agent.http.clone(),
        machine_id: agent.machine_id.clone(),
        credential: agent.credential.clone(),
    };
    tokio::spawn(async move { agent.poll(600).await })
}

async fn woken(poll: tokio::task::JoinHandle<Option<AgentTask>>) -> (AgentTask, Duration) {
    let started = Instant::now();
    let task = tokio::time::timeout(WAKE_LIMIT, poll)
        .await
        .unwrap_or_else(|_| panic!("the parked poll was not woken within {WAKE_LIMIT:?}"))
        .unwrap()
        .expect("the poll answered with a task");
    (task, started.elapsed())
}

const PARKING: &str =
    "[agents]\npoll_wait_seconds = 600\nsilent_timeout_seconds = 1200\n[rate_limits]\nenabled = false\n";

/// An action created through replica A reaches the agent whose poll is parked on
/// replica B (LISTEN/NOTIFY), and so does a cancellation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_created_on_one_replica_wakes_a_poll_parked_on_another() {
    let Some(mut cluster) = Cluster::new(PARKING) else { return };
    let (a, b) = (cluster.start(), cluster.start());
    let token = cluster.token();
    let agent = cluster.enroll(b, "parked-on-b").await;

    let poll = park(&agent);
    cluster.replicas[b].wait_log(is("poll parked"));
    let id = created_id(cluster.collect(a, &agent.machine_id, &token).await).await;
    let (task, latency) = woken(poll).await;
    match task {
        AgentTask::CollectInvestigationPackage { action_id, .. } => assert_eq!(action_id.to_string(), id),
        other => panic!("expected the collection, got {other:?}"),
    }
    eprintln!("the poll parked on replica B answered {latency:?} after replica A created the action");
    // The raw poll does not confirm receipt: the claim counts as accepted, InProgress.
    assert_eq!(cluster.action(a, &id, &token).await["status"], "InProgress");

    // A cancellation requested through A reaches the agent parked on B the same way.
    let poll = park(&agent);
    cluster.replicas[b].wait_log(is("poll parked"));
    let cancelled = cluster
        .http()
        .post(format!("{}/api/machineactions/{id}/cancel", cluster.replicas[a].base))
        .bearer_auth(&token)
        .json(&serde_json::json!({"Comment": "not needed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(cancelled.status(), 200);
    let (task, latency) = woken(poll).await;
    assert!(matches!(task, AgentTask::Cancel { action_id } if action_id.to_string() == id), "{task:?}");
    eprintln!("the poll parked on replica B answered {latency:?} after replica A recorded the cancellation");
}

/// Racing requests spread over the replicas: the database decides, exactly one wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_live_collection_per_machine_under_racing_requests_over_replicas() {
    let Some(mut cluster) = Cluster::new(PARKING) else { return };
    let replicas = [cluster.start(), cluster.start()];
    let token = cluster.token();
    let agent = cluster.enroll(0, "raced").await;
    let mut racers = tokio::task::JoinSet::new();
    for i in 0..24 {
        let request = cluster
            .http()
            .post(format!(
                "{}/api/machines/{}/collectInvestigationPackage",
                cluster.replicas[replicas[i % 2]].base,
                agent.machine_id
            ))
            .bearer_auth(&token)
            .json(&serde_json::json!({"Comment": format!("racer {i}")}));
        racers.spawn(async move { request.send().await.unwrap() });
    }
    let (mut created, mut refused) = (0, 0);
    while let Some(answer) = racers.join_next().await {
        let answer = answer.unwrap();
        match answer.status().as_u16() {
            201 => created += 1,
            _ => {
                let (status, error) = error_of(answer).await;
                assert_eq!((status, error["code"].as_str()), (400, Some("ActiveRequestAlreadyExists")), "{error}");
                refused += 1;
            }
        }
    }
    assert_eq!((created, refused), (1, 23));
    let listed: Value = cluster
        .get(1, &format!("/api/machineactions?$filter=machineId eq '{}'", agent.machine_id), &token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["value"].as_array().unwrap().len(), 1, "{listed}");
}

/// Rotation and retirement through the CLI reach every running replica at once (the
/// periodic reload is set to an hour here, so only the announcement can explain it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotated_and_retired_apply_on_every_replica_at_once() {
    let sections = format!("{PARKING}[auth]\nkey_refresh_seconds = 3600\n");
    let Some(mut cluster) = Cluster::new(&sections) else { return };
    let (a, b) = (cluster.start(), cluster.start());
    let old_token = cluster.token();
    let old = cluster.jwks_kids(b).await;
    assert_eq!(old.len(), 1);

    let rotated: Value = serde_json::from_str(&cluster.replicas[a].cli(&["keys", "rotate", "--json"])).unwrap();
    let new_kid = rotated["kid"].as_str().unwrap().to_owned();
    for on in [a, b] {
        cluster.replicas[on].wait_log(is("signing keys reloaded"));
        assert_eq!(cluster.jwks_kids(on).await, vec![new_kid.clone(), old[0].clone()], "replica {on}");
    }
    let new_token = cluster.token();
    assert_eq!(jwt_kid(&new_token), new_kid, "the CLI signs with the newest key");
    for on in [a, b] {
        assert_eq!(cluster.get(on, "/api/machines", &new_token).await.status(), 200, "replica {on}");
        assert_eq!(cluster.get(on, "/api/machines", &old_token).await.status(), 200, "replica {on}");
    }

    cluster.replicas[a].cli(&["keys", "retire", "--kid", &old[0]]);
    for on in [a, b] {
        cluster.replicas[on].wait_log(is("signing keys reloaded"));
        assert_eq!(cluster.jwks_kids(on).await, vec![new_kid.clone()], "replica {on}");
        assert_eq!(cluster.get(on, "/api/machines", &old_token).await.status(), 401, "replica {on}");
        assert_eq!(cluster.get(on, "/api/machines", &new_token).await.status(), 200, "replica {on}");
    }
}

fn jwt_kid(token: &str) -> String {
    use base64::Engine as _;
    let header = token.split('.').next().unwrap();
    let header: Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
    header["kid"].as_str().unwrap().to_owned()
}

/// One replica sweeps (an advisory lock); when it is killed, another takes the role over.
/// The trail shows one timeout entry per timed-out action, never one per replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweeper_runs_on_one_replica_and_moves_when_it_dies() {
    let sections = "[agents]\npending_timeout_seconds = 1\npoll_wait_seconds = 1\nsilent_timeout_seconds = 2\n\
                    [rate_limits]\nenabled = false\n";
    let Some(mut cluster) = Cluster::new(sections) else { return };
    let leader = cluster.start();
    cluster.replicas[leader].wait_log(is("this replica leads the lifecycle sweeper"));
    let follower = cluster.start();
    let token = cluster.token();
    let machine = cluster.enroll(follower, "never-polls").await.machine_id;

    let first = created_id(cluster.collect(follower, &machine, &token).await).await;
    cluster.replicas[leader].wait_log(starts("actions timed out"));
    assert_eq!(cluster.action(follower, &first, &token).await["status"], "TimeOut");
    let entries = cluster.audit("action.timeout");
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["detail"]["pending"], 1, "{entries:?}");

    let followed = cluster.samples(follower, "casefile_lifecycle_sweeps_total").await;
    assert!(followed.is_empty(), "the follower never swept: {followed:?}");
    assert_eq!(cluster.samples(leader, "casefile_lifecycle_leader").await, ["casefile_lifecycle_leader 1"]);

    cluster.replicas[leader].kill();
    cluster.replicas[follower].wait_log(is("this replica leads the lifecycle sweeper"));
    let second = created_id(cluster.collect(follower, &machine, &token).await).await;
    cluster.replicas[follower].wait_log(starts("actions timed out"));
    assert_eq!(cluster.action(follower, &second, &token).await["status"], "TimeOut");
    assert_eq!(cluster.audit("action.timeout").len(), 2, "one entry per timed-out action, by whoever leads");
    assert_eq!(cluster.samples(follower, "casefile_lifecycle_leader").await, ["casefile_lifecycle_leader 1"]);
}

/// A TCP relay in front of one replica that stops passing the client's bytes on once a
/// connection has sent `hold_after` of them (an upload, since nothing else an agent sends
/// is that large) and says so: the replica then holds a partial upload for the test to
/// kill it under. When the replica's side closes, the client's side is closed too.
struct Relay {
    addr: SocketAddr,
    held: tokio::sync::mpsc::UnboundedReceiver<()>,
    stop: tokio_util::sync::CancellationToken,
}

impl Relay {
    async fn start(upstream: SocketAddr, hold_after: usize) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (held_tx, held) = tokio::sync::mpsc::unbounded_channel();
        let stop = tokio_util::sync::CancellationToken::new();
        let stopped = stop.clone();
        tokio::spawn(async move {
            loop {
                let (client, _) = tokio::select! {
                    // Dropping the listener: new connections are refused, as by a dead host.
                    () = stopped.cancelled() => return,
                    accepted = listener.accept() => match accepted { Ok(c) => c, Err(_) => continue },
                };
                let held_tx = held_tx.clone();
                let stopped = stopped.clone();
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(upstream).await else { return };
                    let (mut client_read, mut client_write) = client.into_split();
                    let (mut server_read, mut server_write) = server.into_split();
                    let up = async {
                        let mut buf = vec![0u8; 16 * 1024];
                        let mut sent = 0;
                        loop {
                            let n = client_read.read(&mut buf).await.unwrap_or(0);
                            if n == 0 {
                                let _ = server_write.shutdown().await;
                                return std::future::pending::<()>().await;
                            }
                            let take = n.min(hold_after - sent);
                            if server_write.write_all(&buf[..take]).await.is_err() {
                                return;
                            }
                            sent += take;
                            if sent == hold_after {
                                let _ = held_tx.send(());
                                return std::future::pending::<()>().await;
                            }
                        }
                    };
                    let down = tokio::io::copy(&mut server_read, &mut client_write);
                    tokio::select! {
                        () = up => {}
                        _ = down => {}
                        () = stopped.cancelled() => {}
                    }
                    // Both halves drop: the client sees its connection end.
                });
            }
        });
        Self { addr, held, stop }
    }
}

/// Bytes after which the relay holds a connection: far more than any request but an
/// upload (polls, receipts and hello are a few hundred bytes each).
const HOLD_AFTER: usize = 48 * 1024;

/// The fault test: `kill -9` of the replica receiving an agent's upload through HAProxy.
/// The agent's retry lands on the other replica; the action ends `Succeeded` with the
/// agent's package, recorded once, nothing lost or duplicated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_replica_under_an_upload_loses_nothing() {
    let Some(mut cluster) = Cluster::new(PARKING) else { return };
    let first = cluster.start();
    // Replica 2's port, held until it starts: bound, so no other test's server takes it
    // meanwhile, but not listening, so HAProxy finds it refused.
    let reserved = tokio::net::TcpSocket::new_v4().unwrap();
    reserved.bind(([127, 0, 0, 1], 0).into()).unwrap();
    let second_port = reserved.local_addr().unwrap();
    let mut relay = Relay::start(cluster.replicas[first].listen, HOLD_AFTER).await;
    // Replica 2 starts only once the upload is held on replica 1: until then HAProxy finds
    // it down and sends everything to replica 1 (through the relay), deterministically.
    let Some(proxy) = HaProxy::start_at(cluster.proxy_addr, &[relay.addr, second_port], &cluster.ca_file()) else {
        return;
    };
    let token = cluster.token();

    let state = cluster.dir.path().join("agent");
    let agent = Command::new(agent_binary())
        .args(["run", "--server", &proxy.url(), "--host-id", "uploading-through-haproxy", "--state-dir"])
        .arg(&state)
        .env("CASEFILE_ENROLL_TOKEN", cluster.enroll_token())
        .env("CASEFILE_AGENT_CA_SHA256", cluster.ca_pin())
        .env("CASEFILE_AGENT_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let agent = AgentProcess::new(agent);
    agent.wait_log(starts("agent online"));
    let machine =
        serde_json::from_slice::<Value>(&std::fs::read(state.join("identity.json")).unwrap()).unwrap()["machine_id"]
            .as_str()
            .unwrap()
            .to_owned();
    let http = cluster.http();
    let created = http
        .post(format!("{}/api/machines/{machine}/collectInvestigationPackage", proxy.url()))
        .bearer_auth(&token)
        .json(&serde_json::json!({"Comment": "fault test"}))
        .send()
        .await
        .unwrap();
    let id = created_id(created).await;

    tokio::time::timeout(WAIT_LIMIT, relay.held.recv()).await.expect("the upload reached replica 1").unwrap();
    let held_at = chrono::Utc::now();
    cluster.replicas[first].wait_log(|l| l["message"] == "receiving the package" && l["action_id"] == id.as_str());
    // What the agent owes: the package and the SHA-256 it announces.
    let owed: Value =
        serde_json::from_slice(&std::fs::read(state.join("outbox").join(format!("{id}.json"))).unwrap()).unwrap();
    let announced = owed["report"]["sha256"].as_str().unwrap().to_owned();
    let zip = std::fs::read(state.join("work").join(format!("{id}.zip"))).unwrap();
    assert_eq!(hex::encode(sha2::Sha256::digest(&zip)), announced);
    assert!(zip.len() > HOLD_AFTER, "the package ({} bytes) is larger than what the relay passes", zip.len());

    drop(reserved);
    let second = cluster.start_on(second_port);
    cluster.replicas[first].kill();
    let killed_at = chrono::Utc::now();
    relay.stop.cancel();

    let retry = agent.wait_log(starts("delivering the report failed, retrying"));
    let received =
        cluster.replicas[second].wait_log(|l| l["message"] == "receiving the package" && l["action_id"] == id.as_str());
    let stored = cluster.replicas[second]
        .wait_log(|l| l["message"] == "package verified and stored" && l["action_id"] == id.as_str());
    assert_eq!(stored["sha256"], announced.as_str());
    agent.wait_log(is("package uploaded and verified"));

    let action: Value = get_json(&http, format!("{}/api/machineactions/{id}", proxy.url()), &token).await;
    assert_eq!(action["status"], "Succeeded", "{action}");
    let succeeded_at = chrono::Utc::now();
    eprintln!("fault test timeline (action {id}, package {} bytes, sha256 {announced}):", zip.len());
    eprintln!("  {held_at}  upload in flight on replica 1 ({HOLD_AFTER} bytes received, the rest held)");
    eprintln!("  {killed_at}  kill -9 replica 1 (pid gone, its database sessions with it)");
    // The processes' own log times (RFC 3339) for what they did.
    eprintln!(
        "  {}  agent: {}",
        retry["timestamp"].as_str().unwrap_or_default(),
        retry["message"].as_str().unwrap_or_default()
    );
    eprintln!(
        "  {}  replica 2: receiving the package (the agent's retry, through HAProxy)",
        received["timestamp"].as_str().unwrap_or_default()
    );
    eprintln!(
        "  {}  replica 2: package verified and stored, sha256 {}",
        stored["timestamp"].as_str().unwrap_or_default(),
        stored["sha256"]
    );
    eprintln!("  {succeeded_at}  API through HAProxy: status {}", action["status"]);

    // The right package: the link's bytes are the agent's.
    let link: Value = get_json(&http, format!("{}/api/machineactions/{id}/getPackageUri", proxy.url()), &token).await;
    let downloaded = http.get(link["value"].as_str().unwrap()).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(hex::encode(sha2::Sha256::digest(&downloaded)), announced);
    // Recorded once: one stored upload in the trail, one object in the shared bucket.
    let uploads: Vec<Value> = cluster
        .audit("package.upload")
        .into_iter()
        .filter(|e| e["target"] == id.as_str() && e["outcome"] == "ok")
        .collect();
    assert_eq!(uploads.len(), 1, "{uploads:?}");
    // (Besides `/readyz`'s probe objects, which come and go.)
    let objects: Vec<String> =
        cluster.s3.keys(PACKAGES_PREFIX).into_iter().filter(|key| !key.contains("/readyz/")).collect();
    assert_eq!(objects.len(), 1, "{objects:?}");
    assert_eq!(cluster.s3.pending_uploads(), Vec::<String>::new(), "no multipart upload left open");
    drop(agent);
}

/// `GET url` with `token`, as JSON.
async fn get_json(http: &reqwest::Client, url: String, token: &str) -> Value {
    http.get(url).bearer_auth(token).send().await.unwrap().json().await.unwrap()
}

/// A real `casefile-agent` process logging JSON, killed on drop.
struct AgentProcess {
    child: Child,
    logs: Logs,
}

impl AgentProcess {
    fn new(mut child: Child) -> Self {
        let logs = Logs::of("the agent".to_owned(), &mut child);
        Self { child, logs }
    }

    fn wait_log(&self, matches: impl Fn(&Value) -> bool) -> Value {
        self.logs.wait(matches)
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
