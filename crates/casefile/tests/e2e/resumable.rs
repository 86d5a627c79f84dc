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
