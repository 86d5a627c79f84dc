//! Issue 13, resumable uploads (tus 1.0.0 with `creation` and `checksum`): hostile
//! requests against the protocol, spoken by hand; and the real agent process uploading
//! through a relay that cuts its connections, across a `kill -9` of the server, and from
//! one replica to another.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use casefile_package::writer::PackageMeta;
use casefile_package::{ItemOutcome, ItemSink, PackageWriter};
use casefile_proto::ActionStatus;
use casefile_testkit::relay::CuttingRelay;
use reqwest::Response;
use serde_json::Value;
use sha2::Digest as _;

use crate::agent::{RawAgent, signed_package};
use crate::cli::agent_binary;
use crate::support::*;

const WAIT_LIMIT: Duration = Duration::from_secs(600);
/// The agent's chunk size.
const CHUNK: u64 = 8 << 20;

/// The upload of one action, spoken by hand.
struct Tus<'a> {
    agent: &'a RawAgent,
    url: String,
}

impl<'a> Tus<'a> {
    fn new(agent: &'a RawAgent, action: &str) -> Self {
        Self { agent, url: format!("{}/agent/v1/actions/{action}/upload", agent.base) }
    }

    fn request(&self, method: reqwest::Method) -> reqwest::RequestBuilder {
        self.agent.http.request(method, &self.url).bearer_auth(&self.agent.credential).header("tus-resumable", "1.0.0")
    }

    async fn create(&self, length: &str, sha256: &str) -> Response {
        self.request(reqwest::Method::POST)
            .header("upload-length", length)
            .header("upload-metadata", format!("sha256 {}", STANDARD.encode(sha256)))
            .send()
            .await
            .unwrap()
    }

    async fn head(&self) -> Response {
        self.request(reqwest::Method::HEAD).send().await.unwrap()
    }

    async fn offset(&self) -> u64 {
        let head = self.head().await;
        assert_eq!(head.status(), 204);
        header(&head, "upload-offset").parse().unwrap()
    }

    async fn patch(&self, offset: &str, bytes: &[u8]) -> Response {
        let checksum = STANDARD.encode(sha2::Sha256::digest(bytes));
        self.patch_with(offset, bytes.to_vec(), &format!("sha256 {checksum}")).await
    }

    async fn patch_with(&self, offset: &str, bytes: Vec<u8>, checksum: &str) -> Response {
        self.request(reqwest::Method::PATCH)
            .header("content-type", "application/offset+octet-stream")
            .header("upload-offset", offset)
            .header("upload-checksum", checksum)
            .body(bytes)
            .send()
            .await
            .unwrap()
    }
}

fn header(response: &Response, name: &str) -> String {
    response.headers().get(name).map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default()
}

/// An enrolled hand-driven agent (with a signing key) holding one `InProgress` action.
async fn running_action(server: &TestServer, host: &str) -> (RawAgent, ed25519_dalek::SigningKey, String) {
    let key = ed25519_dalek::SigningKey::from_bytes(&[9u8; 32]);
    let agent = RawAgent::enroll_with_key(server, host, Some(&key)).await;
    let created: Value = server.collect(&agent.machine_id, &server.token(ALL)).await.json().await.unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    agent.poll(0).await.expect("the action is handed out");
    (agent, key, id)
}

/// Chunk files left in the server's local package directory.
fn chunk_files(server: &TestServer) -> Vec<PathBuf> {
    fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, found);
            } else if path.to_string_lossy().ends_with(".part") {
                found.push(path);
            }
        }
    }
    let mut found = Vec::new();
    walk(&server.dir.path().join("data").join("packages").join("uploads"), &mut found);
    found
}

#[tokio::test]
async fn options_say_what_the_server_speaks() {
    let server = TestServer::start().await;
    let url = format!("{}/agent/v1/actions/{}/upload", server.base, uuid::Uuid::new_v4());
    let response = server.http.request(reqwest::Method::OPTIONS, url).send().await.unwrap();
    assert_eq!(response.status(), 204);
    assert_eq!(header(&response, "tus-version"), "1.0.0");
    assert_eq!(header(&response, "tus-resumable"), "1.0.0");
    assert_eq!(header(&response, "tus-extension"), "creation,checksum");
    assert_eq!(header(&response, "tus-checksum-algorithm"), "sha256");
    assert_eq!(header(&response, "tus-max-size").parse::<u64>().unwrap(), 64 << 30);
}

/// Hostile creation requests: wrong protocol version, garbage lengths, past the cap,
/// without the hash, for another machine's action. Each answers in the MDE error shape.
#[tokio::test]
async fn creation_refuses_bad_headers_and_other_machines_actions() {
    let server = TestServer::start_with(|c| c.packages.max_bytes = 1 << 20).await;
    let (agent, _, id) = running_action(&server, "tus-create").await;
    let tus = Tus::new(&agent, &id);
    let sha = "ab".repeat(32);

    let wrong_version = tus
        .agent
        .http
        .post(&tus.url)
        .bearer_auth(&agent.credential)
        .header("tus-resumable", "0.2.2")
        .header("upload-length", "10")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&wrong_version, "tus-version"), "1.0.0");
    let (status, error) = error_of(wrong_version).await;
    assert_eq!((status, error["code"].as_str().unwrap()), (412, "PreconditionFailed"));

    for garbage in ["abc", "-1", "+5", "1e3", "99999999999999999999999", "0x10", ""] {
        let (status, error) = error_of(tus.create(garbage, &sha).await).await;
        assert_eq!(status, 400, "Upload-Length {garbage:?}: {error}");
    }
    let (status, error) = error_of(tus.create("0", &sha).await).await;
    assert_eq!(status, 400, "{error}");
    let (status, error) = error_of(tus.create(&((1u64 << 20) + 1).to_string(), &sha).await).await;
    assert_eq!((status, error["code"].as_str().unwrap()), (413, "PayloadTooLarge"));
    let (status, _) = error_of(tus.create(&u64::MAX.to_string(), &sha).await).await;
    assert_eq!(status, 413);
    for bad_hash in ["", "zz", &"ab".repeat(31)] {
        let (status, error) = error_of(tus.create("10", bad_hash).await).await;
        assert_eq!(status, 400, "{bad_hash:?}: {error}");
    }
    // Another machine of the same tenant cannot see, create or write this upload.
    let other = RawAgent::enroll(&server, "tus-other").await;
    let theirs = Tus::new(&other, &id);
    assert_eq!(error_of(theirs.create("10", &sha).await).await.0, 404);
    assert_eq!(tus.create("10", &sha).await.status(), 201);
    assert_eq!(theirs.head().await.status(), 404);
    assert_eq!(error_of(theirs.patch("0", b"0123456789").await).await.0, 404);
    assert_eq!(tus.offset().await, 0, "nothing the other machine sent landed");
    // Not a GUID.
    let bad = Tus { agent: &agent, url: format!("{}/agent/v1/actions/not-a-guid/upload", server.base) };
    assert_eq!(error_of(bad.create("10", &sha).await).await.0, 400);
}

/// Wrong offsets, damaged chunks, wrong media type, chunks past the length, garbage
/// offsets: each refused, the offset unchanged. Creating again returns the same upload
/// (a restarted agent resumes it). Then the package completes, and a finished upload
/// takes no more chunks.
#[tokio::test]
async fn chunks_land_only_at_the_offset_whole_and_intact() {
    let server = TestServer::start().await;
    let (agent, key, id) = running_action(&server, "tus-chunks").await;
    let package = signed_package(&key, false, &agent, &id);
    let sha = hex::encode(sha2::Sha256::digest(&package));
    let tus = Tus::new(&agent, &id);
    let created = tus.create(&package.len().to_string(), &sha).await;
    assert_eq!(created.status(), 201);
    assert_eq!(header(&created, "location"), format!("/agent/v1/actions/{id}/upload"));
    assert_eq!(header(&created, "tus-resumable"), "1.0.0");
    let (first, rest) = package.split_at(package.len() / 2);

    let (status, error) = error_of(tus.patch("5", first).await).await;
    assert_eq!((status, error["code"].as_str().unwrap()), (409, "Conflict"));
    let damaged = format!("sha256 {}", STANDARD.encode(sha2::Sha256::digest(b"other bytes")));
    let (status, error) = error_of(tus.patch_with("0", first.to_vec(), &damaged).await).await;
    assert_eq!((status, error["code"].as_str().unwrap()), (460, "ChecksumMismatch"));
    assert_eq!(tus.offset().await, 0, "a damaged chunk does not move the offset");
    for checksum in ["md5 AAAA", "sha256 not-base64!", "sha256 AAAA", ""] {
        let (status, error) = error_of(tus.patch_with("0", first.to_vec(), checksum).await).await;
        assert_eq!(status, 400, "{checksum:?}: {error}");
    }
    for offset in ["-1", "abc", "99999999999999999999999", "0 0", ""] {
        let (status, error) = error_of(tus.patch(offset, first).await).await;
        assert_eq!(status, 400, "Upload-Offset {offset:?}: {error}");
    }
    let wrong_type = tus
        .request(reqwest::Method::PATCH)
        .header("content-type", "application/zip")
        .header("upload-offset", "0")
        .body(first.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(wrong_type).await.0, 415);
    let mut too_long = package.clone();
    too_long.push(0);
    let (status, error) = error_of(tus.patch("0", &too_long).await).await;
    assert_eq!(status, 400, "{error}");
    assert_eq!(tus.offset().await, 0);
    // A package is not split into crumbs: a chunk that is not the last has a least size
    // (here 10 KiB of a 10 MiB package), so no upload becomes millions of blobs and rows.
    let (crumbs_agent, _, crumbs_id) = running_action(&server, "tus-crumbs").await;
    let crumbs = Tus::new(&crumbs_agent, &crumbs_id);
    assert_eq!(crumbs.create(&(10u64 << 20).to_string(), &sha).await.status(), 201);
    let (status, error) = error_of(crumbs.patch("0", &[7u8; 100]).await).await;
    assert!(status == 400 && error["message"].as_str().unwrap().contains("at least 10485 bytes"), "{error}");
    assert_eq!(crumbs.offset().await, 0);

    let landed = tus.patch("0", first).await;
    assert_eq!(landed.status(), 204);
    assert_eq!(header(&landed, "upload-offset"), first.len().to_string());
    // Creating again (a restarted agent) finds the upload where it stands.
    let again = tus.create(&package.len().to_string(), &sha).await;
    assert_eq!(again.status(), 201);
    assert_eq!(header(&again, "upload-offset"), first.len().to_string());
    // The same chunk again: the offset moved on.
    let (status, _) = error_of(tus.patch("0", first).await).await;
    assert_eq!(status, 409);

    let done = tus.patch(&first.len().to_string(), rest).await;
    assert_eq!(done.status(), 204);
    assert_eq!(header(&done, "casefile-upload-stored"), sha);
    assert_eq!(server.action(&id).await.status, ActionStatus::Succeeded);
    let head = tus.head().await;
    assert_eq!(
        (header(&head, "upload-offset"), header(&head, "casefile-upload-stored")),
        (package.len().to_string(), sha)
    );
    let (status, error) = error_of(tus.patch(&package.len().to_string(), b"x").await).await;
    assert_eq!(status, 403, "a finished upload takes no more: {error}");
    assert!(chunk_files(&server).is_empty(), "the chunks went once the package was stored");
    // The stored package is the agent's.
    let collected = server.get(&format!("/api/machineactions/{id}/getPackageUri"), &server.token(ALL)).await;
    let link: Value = collected.json().await.unwrap();
    let downloaded = server.http.get(link["value"].as_str().unwrap()).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(downloaded.as_ref(), package.as_slice());
}

/// Several chunks sent at one offset at once: exactly one lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_concurrent_chunks_at_one_offset_exactly_one_lands() {
    let server = TestServer::start().await;
    let (agent, _, id) = running_action(&server, "tus-race").await;
    let tus = Tus::new(&agent, &id);
    assert_eq!(tus.create("1048576", &"ab".repeat(32)).await.status(), 201);
    let chunks: Vec<Vec<u8>> = (0..6u8).map(|i| vec![i; 256 * 1024]).collect();
    let answers = futures::future::join_all(chunks.iter().map(|c| tus.patch("0", c))).await;
    let statuses: Vec<u16> = answers.iter().map(|a| a.status().as_u16()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 204).count(), 1, "{statuses:?}");
    assert!(statuses.iter().all(|s| matches!(s, 204 | 409)), "{statuses:?}");
    assert_eq!(tus.offset().await, 256 * 1024);
    assert_eq!(chunk_files(&server).len(), 1, "the losers' chunks were removed");
}

/// A package that fails verification once its last chunk is in: the action fails and the
/// chunks go. An upload of an action that ends (here: the agent reports a failure) loses
/// its chunks too.
#[tokio::test]
async fn a_package_that_fails_verification_fails_the_action_and_leaves_no_chunks() {
    let server = TestServer::start().await;
    let (agent, key, id) = running_action(&server, "tus-smuggler").await;
    let package = signed_package(&key, true, &agent, &id);
    let sha = hex::encode(sha2::Sha256::digest(&package));
    let tus = Tus::new(&agent, &id);
    assert_eq!(tus.create(&package.len().to_string(), &sha).await.status(), 201);
    let (first, rest) = package.split_at(package.len() / 3);
    assert_eq!(tus.patch("0", first).await.status(), 204);
    assert_eq!(chunk_files(&server).len(), 1);
    let (status, error) = error_of(tus.patch(&first.len().to_string(), rest).await).await;
    assert_eq!((status, error["code"].as_str().unwrap()), (400, "InvalidInput"), "{error}");
    let action = server.action(&id).await;
    assert_eq!(action.status, ActionStatus::Failed);
    assert!(action.troubleshoot_info.unwrap_or_default().contains("rejected"));
    assert!(chunk_files(&server).is_empty());
    assert_eq!(tus.head().await.status(), 404);

    let (agent, _, id) = running_action(&server, "tus-abandoned").await;
    let tus = Tus::new(&agent, &id);
    assert_eq!(tus.create("100", &"cd".repeat(32)).await.status(), 201);
    assert_eq!(tus.patch("0", &[1u8; 40]).await.status(), 204);
    assert_eq!(chunk_files(&server).len(), 1);
    let failed = agent
        .http
        .post(format!("{}/agent/v1/actions/{id}/failure", agent.base))
        .bearer_auth(&agent.credential)
        .json(&serde_json::json!({"error_h_result": 1, "troubleshoot_info": "gave up"}))
        .send()
        .await
        .unwrap();
    assert_eq!(failed.status(), 204);
    assert!(chunk_files(&server).is_empty(), "an ended action's chunks go");
    assert_eq!(tus.head().await.status(), 404);
}

/// The package size of the large uploads: `CASEFILE_TEST_UPLOAD_BYTES`, else `default`.
fn upload_bytes(default: u64) -> u64 {
    std::env::var("CASEFILE_TEST_UPLOAD_BYTES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A seeded xorshift64*: the test's random choices, reproducible from the printed seed.
struct Rng(u64);

impl Rng {
    fn seeded() -> Self {
        let seed = std::env::var("CASEFILE_TEST_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
        });
        eprintln!("random choices from seed {seed} (CASEFILE_TEST_SEED={seed} repeats them)");
        Self(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Writes a real signed package of about `size` bytes (one incompressible file) for
/// `machine`'s action `action` to `path`, with the package writer the agent uses; returns
/// its size and SHA-256.
fn big_package(path: &Path, key: &ed25519_dalek::SigningKey, machine: &str, action: &str, size: u64) -> (u64, String) {
    let started = std::time::Instant::now();
    let mut meta = PackageMeta::detached("resumable-test");
    meta.action_id = Some(action.parse().unwrap());
    meta.host.machine_id = Some(machine.to_owned());
    let file = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
    let mut writer = PackageWriter::new(file, meta);
    writer.begin_collector("system", "Large evidence");
    let sink: &mut dyn ItemSink = &mut writer;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    sink.file("disk.img", "/dev/fixture", |w| {
        let mut buffer = vec![0u8; 1 << 20];
        let mut left = size;
        while left > 0 {
            for word in buffer.chunks_exact_mut(8) {
                word.copy_from_slice(&rng.next().to_le_bytes());
            }
            let n = left.min(buffer.len() as u64) as usize;
            w.write_all(&buffer[..n])?;
            left -= n as u64;
        }
        Ok(ItemOutcome::ok())
    })
    .unwrap();
    writer.end_collector(None);
    let (mut file, _) = writer.finish_signed(key).unwrap();
    file.flush().unwrap();
    file.into_inner().unwrap().sync_all().unwrap();
    let mut hash = sha2::Sha256::new();
    let mut reader = std::fs::File::open(path).unwrap();
    let mut buffer = vec![0u8; 1 << 20];
    let mut written = 0u64;
    loop {
        let n = std::io::Read::read(&mut reader, &mut buffer).unwrap();
        if n == 0 {
            break;
        }
        hash.update(&buffer[..n]);
        written += n as u64;
    }
    eprintln!("built a package of {written} bytes in {:.1} s", started.elapsed().as_secs_f64());
    (written, hex::encode(hash.finalize()))
}

/// A real `casefile-agent` process logging JSON; killed on drop.
struct AgentProcess {
    child: Child,
    lines: std::sync::mpsc::Receiver<Value>,
}

impl AgentProcess {
    fn start(server: &str, pin: &str, state: &Path, host: &str, enroll: Option<&str>) -> Self {
        let mut command = Command::new(agent_binary());
        command.args(["run", "--server", server, "--host-id", host, "--ca-sha256", pin, "--state-dir"]).arg(state);
        if let Some(token) = enroll {
            command.args(["--enroll-token", token]);
        }
        let mut child = command
            .env("CASEFILE_AGENT_LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        let stderr = BufReader::new(child.stderr.take().unwrap());
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                let _ = tx.send(serde_json::from_str::<Value>(&line).unwrap_or(Value::String(line)));
            }
        });
        Self { child, lines }
    }

    /// The first log line whose message starts with `prefix`; panics when the agent ends
    /// or after [`WAIT_LIMIT`].
    fn wait_log(&self, prefix: &str) -> Value {
        tokio::task::block_in_place(|| {
            loop {
                let line =
                    self.lines.recv_timeout(WAIT_LIMIT).unwrap_or_else(|e| panic!("waiting for {prefix:?}: {e}"));
                if line["fields"]["message"]
                    .as_str()
                    .or(line["message"].as_str())
                    .is_some_and(|m| m.starts_with(prefix))
                {
                    return line;
                }
            }
        })
    }

    /// The process's peak resident memory (`VmHWM`), in bytes.
    fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a large upload test needs of its server.
struct Target {
    base: String,
    pin: String,
    http: reqwest::Client,
    token: String,
    enroll: String,
}

/// An agent whose state directory holds a package owed for an `InProgress` action, as a
/// restarted agent finds it: enrolled by the real agent process (then stopped), the
/// action claimed with its credential, the package written with its key.
struct Owed {
    state: PathBuf,
    id: String,
    credential: String,
    size: u64,
}

async fn owe_a_package(target: &Target, dir: &Path, host: &str, size: u64) -> Owed {
    let state = dir.join(format!("agent-{host}"));
    let agent = AgentProcess::start(&target.base, &target.pin, &state, host, Some(&target.enroll));
    agent.wait_log("agent online");
    drop(agent);
    let identity: Value = serde_json::from_slice(&std::fs::read(state.join("identity.json")).unwrap()).unwrap();
    let machine = identity["machine_id"].as_str().unwrap().to_owned();
    let credential = identity["credential"].as_str().unwrap().to_owned();
    let created = target
        .http
        .post(format!("{}/api/machines/{machine}/collectInvestigationPackage", target.base))
        .bearer_auth(&target.token)
        .json(&serde_json::json!({"Comment": "a large package"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let id = created.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let claimed = target
        .http
        .get(format!("{}/agent/v1/actions/next?wait=0", target.base))
        .bearer_auth(&credential)
        .send()
        .await
        .unwrap();
    assert_eq!(claimed.status(), 200);
    let key = casefile_agent::identity::signing_key(&state).unwrap();
    let zip = state.join("work").join(format!("{id}.zip"));
    let (size, sha256) = tokio::task::block_in_place(|| big_package(&zip, &key, &machine, &id, size));
    let until = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 3600;
    let entry = serde_json::json!({"action_id": id, "report": {"kind": "upload", "size": size, "sha256": sha256, "until": until}});
    std::fs::write(state.join("outbox").join(format!("{id}.json")), entry.to_string()).unwrap();
    Owed { state, id, credential, size }
}

async fn action_status(target: &Target, id: &str) -> Value {
    let response =
        target.http.get(format!("{}/api/machineactions/{id}", target.base)).bearer_auth(&target.token).send().await;
    response.unwrap().json().await.unwrap()
}

/// Issue 13: a 1 GB package (`CASEFILE_TEST_UPLOAD_BYTES` to change) uploaded through a
/// relay that cuts the agent's connection at several random points (seeded, the seed
/// printed) ends `Succeeded`, having sent less than 1.1 times the package; the agent's
/// peak RSS stays under 32 MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_upload_cut_at_random_points_resumes_to_succeeded() {
    let server = TestServer::start_with(|c| c.agents.silent_timeout_seconds = 3600).await;
    let target = Target {
        base: server.base.clone(),
        pin: server.ca_pin.clone().unwrap(),
        http: server.http.clone(),
        token: server.token(ALL),
        enroll: server.enroll_token().await,
    };
    let owed = owe_a_package(&target, server.dir.path(), "large-upload", upload_bytes(1 << 30)).await;
    let mut rng = Rng::seeded();
    let cuts: Vec<u64> = (0..5).map(|_| 64 * 1024 + rng.next() % owed.size).collect();
    eprintln!("cutting the agent's connection after {cuts:?} bytes sent (package: {} bytes)", owed.size);
    let upstream = server.base.trim_start_matches("https://").parse().unwrap();
    let relay = CuttingRelay::start(upstream, cuts.clone()).await;
    let started = std::time::Instant::now();
    let agent = AgentProcess::start(&format!("https://{}", relay.addr), &target.pin, &owed.state, "large-upload", None);
    agent.wait_log("package uploaded and verified");
    let peak = agent.peak_rss();
    let seconds = started.elapsed().as_secs_f64();
    let status = action_status(&target, &owed.id).await;
    assert_eq!(status["status"], "Succeeded", "{status}");
    let sent = relay.passed_upstream();
    eprintln!(
        "uploaded {} bytes in {seconds:.1} s through {} cuts: {sent} bytes sent ({:.3}x); agent peak RSS {} KiB",
        owed.size,
        relay.cuts_made(),
        sent as f64 / owed.size as f64,
        peak / 1024
    );
    assert_eq!(relay.cuts_made() as usize, cuts.len(), "every cut happened");
    assert!((sent as f64) < owed.size as f64 * 1.1, "{sent} bytes sent for a package of {}", owed.size);
    assert!(peak < 32 << 20, "the agent's peak RSS was {peak} bytes");
    assert!(!owed.state.join("work").join(format!("{}.zip", owed.id)).exists(), "the delivered package is deleted");
    assert!(chunk_files(&server).is_empty());
}

/// A `casefile server` process on a data directory, to be killed with `kill -9`.
struct ServerProcess {
    child: Child,
    addr: std::net::SocketAddr,
}

impl ServerProcess {
    fn start(data_dir: &Path, env: &[(String, String)]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_casefile"));
        command.args(["server", "--listen", "127.0.0.1:0", "--data-dir"]).arg(data_dir).env("RUST_LOG", "info");
        command.envs(env.iter().map(|(k, v)| (k, v)));
        let mut child = command.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut said = Vec::new();
        let base = loop {
            let line = lines.next().unwrap_or_else(|| panic!("the server ended: {said:?}")).unwrap();
            said.push(line.clone());
            if let Some(at) = line.find("listening on ") {
                break line[at + "listening on ".len()..].split_whitespace().next().unwrap().to_owned();
            }
        };
        std::thread::spawn(move || for _ in lines.by_ref() {});
        let addr = base.trim_start_matches("https://").parse().unwrap();
        Self { child, addr }
    }

    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The CLI on `data_dir` (and the test's database), its output.
fn cli(data_dir: &Path, store_url: Option<&str>, args: &[&str]) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_casefile"));
    command.args(args).arg("--data-dir").arg(data_dir);
    if let Some(url) = store_url {
        command.env("CASEFILE_STORE__URL", url);
    }
    let output = command.output().unwrap();
    assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

/// A server process on a fresh data directory (and, on PostgreSQL, a fresh database).
struct Served {
    dir: tempfile::TempDir,
    _db: Option<casefile_testkit::pg::PgDatabase>,
    url: Option<String>,
}

impl Served {
    fn new() -> Self {
        let db = on_postgres().then(|| casefile_testkit::pg::database().expect("PostgreSQL for the e2e suite"));
        let url = db.as_ref().map(|d| d.url.clone());
        Self { dir: tempfile::tempdir().unwrap(), _db: db, url }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn start(&self) -> ServerProcess {
        let env: Vec<(String, String)> =
            self.url.iter().map(|u| ("CASEFILE_STORE__URL".to_owned(), u.clone())).collect();
        ServerProcess::start(&self.data(), &env)
    }

    /// Another replica, on a data directory of its own, with the first's store, package
    /// directory and TLS certificate.
    fn start_replica(&self) -> ServerProcess {
        let data = self.data();
        let store = self.url.clone().unwrap_or_else(|| format!("sqlite://{}", data.join("casefile.db").display()));
        let tls = data.join("tls");
        let env = [
            ("CASEFILE_STORE__URL", store),
            ("CASEFILE_BLOBS__URL", format!("file://{}", data.join("packages").display())),
            ("CASEFILE_TLS__CERT_FILE", tls.join("server.pem").display().to_string()),
            ("CASEFILE_TLS__KEY_FILE", tls.join("server.key").display().to_string()),
            ("CASEFILE_TLS__CA_FILE", tls.join("ca.pem").display().to_string()),
        ]
        .map(|(k, v)| (k.to_owned(), v));
        ServerProcess::start(&self.dir.path().join("replica"), &env)
    }

    fn target(&self, server: &ServerProcess) -> Target {
        let data = self.data();
        let endpoint: Value = serde_json::from_slice(&std::fs::read(data.join("endpoint.json")).unwrap()).unwrap();
        let roles = "Machine.CollectForensics,Machine.Read.All";
        Target {
            base: format!("https://{}", server.addr),
            pin: endpoint["ca_sha256"].as_str().unwrap().to_owned(),
            http: https_client(&std::fs::read_to_string(data.join("tls").join("ca.pem")).unwrap()),
            token: cli(&data, self.url.as_deref(), &["token", "--roles", roles]).trim().to_owned(),
            enroll: cli(&data, self.url.as_deref(), &["enroll-token"]).lines().next().unwrap().trim().to_owned(),
        }
    }

    /// Where the upload of `owed` stands on the server, asked as its agent.
    async fn offset(target: &Target, owed: &Owed) -> u64 {
        let head = target
            .http
            .head(format!("{}/agent/v1/actions/{}/upload", target.base, owed.id))
            .bearer_auth(&owed.credential)
            .header("tus-resumable", "1.0.0")
            .send()
            .await
            .unwrap();
        assert_eq!(head.status(), 204);
        header(&head, "upload-offset").parse().unwrap()
    }
}

/// Issue 13: the server is killed (`kill -9`) mid-upload and started again on the same
/// store and package directory: the agent resumes from the server's offset, not zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_resumes_from_the_offset_after_the_server_is_killed() {
    let served = Served::new();
    let first = served.start();
    let mut target = served.target(&first);
    let owed =
        owe_a_package(&target, served.dir.path(), "restarted-server", upload_bytes(96 << 20).min(256 << 20)).await;
    let relay = CuttingRelay::start(first.addr, Vec::new()).await;
    let agent =
        AgentProcess::start(&format!("https://{}", relay.addr), &target.pin, &owed.state, "restarted-server", None);
    relay.wait_passed(owed.size / 2).await;
    let landed = Served::offset(&target, &owed).await;
    assert!(landed > 0, "chunks landed before the kill");
    first.kill();
    let sent_before = relay.passed_upstream();
    let second = served.start();
    relay.retarget(second.addr);
    target = served.target(&second);
    agent.wait_log("package uploaded and verified");
    let status = action_status(&target, &owed.id).await;
    assert_eq!(status["status"], "Succeeded", "{status}");
    let after = relay.passed_upstream() - sent_before;
    eprintln!("{landed} of {} bytes stored before the kill; {after} bytes sent after it", owed.size);
    // From the server's offset (at least `landed`), give or take the chunks in flight.
    assert!(after <= owed.size - landed + 2 * CHUNK + (1 << 20), "{after} bytes sent after the restart");
    drop(second);
}

/// Issue 13: two replicas on one store and one package directory; the agent's connection
/// to the first is cut mid-upload and its next ones reach the second, which continues the
/// upload where the first left it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_moves_to_another_replica_midway() {
    let served = Served::new();
    let first = served.start();
    // Before the second starts: the CLI's tokens name the server it last recorded.
    let target = served.target(&first);
    let second = served.start_replica();
    let owed = owe_a_package(&target, served.dir.path(), "moving-upload", upload_bytes(96 << 20).min(256 << 20)).await;
    let half = owed.size / 2;
    let relay = CuttingRelay::start(first.addr, vec![half]).await;
    relay.retarget_at_next_cut(second.addr);
    let agent =
        AgentProcess::start(&format!("https://{}", relay.addr), &target.pin, &owed.state, "moving-upload", None);
    agent.wait_log("package uploaded and verified");
    let status = action_status(&target, &owed.id).await;
    assert_eq!(status["status"], "Succeeded", "{status}");
    let sent = relay.passed_upstream();
    eprintln!("{} bytes sent for {} (cut at {half})", sent, owed.size);
    assert_eq!(relay.cuts_made(), 1);
    assert!(sent <= owed.size + 2 * CHUNK + (1 << 20), "{sent} bytes sent: the second replica did not resume");
    drop((first, second));
}

/// An action whose agent goes silent mid-upload times out; the sweep that ends it removes
/// the upload's chunks and record.
#[tokio::test]
async fn the_sweep_removes_the_chunks_of_an_action_that_timed_out() {
    let server = TestServer::start_with_clock(|c| c.agents.silent_timeout_seconds = 60).await;
    let (agent, _, id) = running_action(&server, "tus-silent").await;
    let tus = Tus::new(&agent, &id);
    assert_eq!(tus.create("100", &"cd".repeat(32)).await.status(), 201);
    assert_eq!(tus.patch("0", &[1u8; 40]).await.status(), 204);
    assert_eq!(chunk_files(&server).len(), 1);
    server.advance(Duration::from_secs(3600));
    let swept = casefile_server::lifecycle::sweep(server.server().state()).await.unwrap();
    assert_eq!(swept.running_timed_out, 1);
    assert_eq!(server.action(&id).await.status, ActionStatus::TimeOut);
    assert!(chunk_files(&server).is_empty(), "the timed-out action's chunks went");
    assert_eq!(tus.head().await.status(), 404);
}
