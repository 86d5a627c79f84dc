//! The agent API: enrollment, identity, long-poll, upload verification, failures and
//! timeouts. Some tests speak the agent protocol by hand to play a misbehaving agent.

use std::time::Duration;

use casefile_package::writer::PackageMeta;
use casefile_package::{ItemOutcome, ItemSink, PackageWriter};
use casefile_proto::ActionStatus;
use casefile_proto::agent::{AgentTask, EnrollRequest, EnrollResponse, HostInfo};
use ed25519_dalek::SigningKey;
use serde_json::Value;
use sha2::Digest;

use crate::support::*;

/// A small real package of `agent`'s action `action`, signed by `key`, with one extra
/// unlisted file when `smuggle`.
pub(crate) fn signed_package(key: &SigningKey, smuggle: bool, agent: &RawAgent, action: &str) -> Vec<u8> {
    let mut meta = PackageMeta::detached("raw-agent");
    meta.action_id = Some(action.parse().unwrap());
    meta.host.machine_id = Some(agent.machine_id.clone());
    let mut writer = PackageWriter::new(std::io::Cursor::new(Vec::new()), meta);
    writer.begin_collector("system", "System information");
    let sink: &mut dyn ItemSink = &mut writer;
    sink.file("os.json", "/etc/os-release", |w| w.write_all(b"{}").map(|()| ItemOutcome::ok())).unwrap();
    if smuggle {
        // Written past the manifest's knowledge: an entry the writer does not list.
        sink.file("../../unlisted.txt", "x", |w| w.write_all(b"x").map(|()| ItemOutcome::ok())).unwrap();
    }
    writer.end_collector(None);
    let bytes = writer.finish_signed(key).unwrap().0.into_inner();
    if !smuggle {
        return bytes;
    }
    // Drop the smuggled file from the manifest's view by renaming it in the zip: the
    // manifest and signature stay intact, the file becomes unlisted.
    let needle = b"System information/unlisted.txt";
    let replacement = b"System information/unlisted.TXT";
    let mut out = bytes.clone();
    let mut i = 0;
    while let Some(pos) = out[i..].windows(needle.len()).position(|w| w == needle) {
        out[i + pos..i + pos + needle.len()].copy_from_slice(replacement);
        i += pos + needle.len();
    }
    out
}

/// An agent driven by hand over the agent API.
pub(crate) struct RawAgent {
    pub(crate) base: String,
    pub(crate) http: reqwest::Client,
    pub(crate) machine_id: String,
    pub(crate) credential: String,
}

impl RawAgent {
    pub(crate) async fn enroll(server: &TestServer, host_id: &str) -> Self {
        Self::enroll_with_key(server, host_id, None).await
    }

    /// What an agent on `host_id` sends to enroll, registering `key`'s public half.
    pub(crate) fn enroll_request(host_id: &str, key: Option<&SigningKey>) -> EnrollRequest {
        EnrollRequest {
            host_id: host_id.to_owned(),
            host: HostInfo {
                computer_dns_name: format!("{host_id}.example"),
                os_platform: "Linux".into(),
                os_version: Some("12".into()),
                os_architecture: Some("64-bit".into()),
                os_build: None,
                agent_version: "test".into(),
                ip_addresses: vec![],
            },
            public_key: key.map(|k| casefile_package::signature::public_key_base64(&k.verifying_key())),
            proof: None,
        }
    }

    /// Enrolls registering `key`'s public half as the agent key.
    pub(crate) async fn enroll_with_key(server: &TestServer, host_id: &str, key: Option<&SigningKey>) -> Self {
        let request = Self::enroll_request(host_id, key);
        let response = server
            .http
            .post(format!("{}/agent/v1/enroll", server.base))
            .bearer_auth(server.enroll_token().await)
            .json(&request)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        let enrolled: EnrollResponse = response.json().await.unwrap();
        Self {
            base: server.base.clone(),
            http: server.http.clone(),
            machine_id: enrolled.machine_id,
            credential: enrolled.credential,
        }
    }

    pub(crate) async fn poll(&self, wait: u64) -> Option<AgentTask> {
        let response = self
            .http
            .get(format!("{}/agent/v1/actions/next?wait={wait}", self.base))
            .bearer_auth(&self.credential)
            .send()
            .await
            .unwrap();
        match response.status().as_u16() {
            200 => Some(response.json().await.unwrap()),
            204 => None,
            other => panic!("poll answered {other}"),
        }
    }

    pub(crate) async fn upload(&self, action: &str, body: impl Into<reqwest::Body>, sha256: &str) -> reqwest::Response {
        self.http
            .put(format!("{}/agent/v1/actions/{action}/package", self.base))
            .bearer_auth(&self.credential)
            .header("x-casefile-sha256", sha256)
            .body(body)
            .send()
            .await
            .unwrap()
    }
}

fn action_id(task: AgentTask) -> String {
    match task {
        AgentTask::CollectInvestigationPackage { action_id, .. } => action_id.to_string(),
        other => panic!("expected a collection, got {other:?}"),
    }
}

#[tokio::test]
async fn a_pending_action_wakes_a_waiting_poll() {
    let server = TestServer::start().await;
    let agent = RawAgent::enroll(&server, "wake").await;
    // The poll waits up to 25 s; only a wake-up can answer it with the task.
    let mut parked = server.server().state().dispatcher.watch_parked();
    let poll = tokio::spawn({
        let agent = RawAgent {
            base: agent.base.clone(),
            http: agent.http.clone(),
            machine_id: agent.machine_id.clone(),
            credential: agent.credential.clone(),
        };
        async move { agent.poll(25).await }
    });
    // Create the action once the poll has found nothing and is parked on the server.
    parked.wait_for(|n| *n >= 1).await.unwrap();
    let created: Value = server.collect(&agent.machine_id, &server.token(ALL)).await.json().await.unwrap();
    let task = poll.await.unwrap().expect("the parked poll is woken with the task");
    assert_eq!(action_id(task), created["id"].as_str().unwrap());
    assert_eq!(server.action(created["id"].as_str().unwrap()).await.status, ActionStatus::InProgress);
}

#[tokio::test]
async fn a_package_that_does_not_match_its_hash_fails_the_action() {
    let server = TestServer::start().await;
    let agent = RawAgent::enroll(&server, "badhash").await;
    let created: Value = server.collect(&agent.machine_id, &server.token(ALL)).await.json().await.unwrap();
    let id = action_id(agent.poll(0).await.unwrap());
    assert_eq!(id, created["id"].as_str().unwrap());

    let (status, error) =
        error_of(agent.upload(&id, b"not the package you announced".as_slice(), &"0".repeat(64)).await).await;
    assert_eq!((status, error["code"].as_str().unwrap()), (400, "InvalidInput"));
    let action = server.action(&id).await;
    assert_eq!(action.status, ActionStatus::Failed);
    assert_ne!(action.error_h_result, 0);
    assert!(action.troubleshoot_info.unwrap().contains("SHA-256"));
    let (status, _) =
        error_of(server.get(&format!("/api/machineactions/{id}/getPackageUri"), &server.token(ALL)).await).await;
    assert_eq!(status, 404);
    // Nothing was kept in package storage.
    let stored = walk(&server.dir.path().join("data/packages"));
    assert!(stored.is_empty(), "{stored:?}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() { files.extend(walk(&path)) } else { files.push(path) }
        }
    }
    files
}

#[tokio::test]
async fn agents_only_touch_their_own_actions() {
    let server = TestServer::start().await;
    let owner = RawAgent::enroll(&server, "owner").await;
    let intruder = RawAgent::enroll(&server, "intruder").await;
    server.collect(&owner.machine_id, &server.token(ALL)).await;
    assert!(intruder.poll(0).await.is_none(), "another machine's action is not handed out");
    let id = action_id(owner.poll(0).await.unwrap());
    let (status, _) = error_of(intruder.upload(&id, b"x".as_slice(), &"0".repeat(64)).await).await;
    assert_eq!(status, 404);
    let response = intruder
        .http
        .post(format!("{}/agent/v1/actions/{id}/failure", server.base))
        .bearer_auth(&intruder.credential)
        .json(&serde_json::json!({"error_h_result": 1, "troubleshoot_info": "sabotage"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(server.action(&id).await.status, ActionStatus::InProgress);

    let response = server
        .http
        .get(format!("{}/agent/v1/actions/next", server.base))
        .bearer_auth("cfa_forged")
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(response).await.0, 401);
    // An API token is not an agent credential, and an agent credential is not an API token.
    let response = server
        .http
        .get(format!("{}/agent/v1/actions/next", server.base))
        .bearer_auth(server.token(ALL))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(server.get("/api/machines", &owner.credential).await.status(), 401);
}

#[tokio::test]
async fn enrollment_needs_a_valid_token_and_keeps_the_machine_id() {
    let server = TestServer::start().await;
    let response = server
        .http
        .post(format!("{}/agent/v1/enroll", server.base))
        .bearer_auth("cfe_not-a-token")
        .json(&serde_json::json!({"host_id": "x", "host": {"computer_dns_name": "x", "os_platform": "Linux", "agent_version": "t"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(response).await.0, 401);

    let mut first = server.start_agent("stable-host").await;
    let state_dir = first.state_dir.clone();
    let machine_id = first.identity.machine_id.clone();
    let credential = first.identity.credential.clone();
    first.stop().await;

    // A restart reuses the saved identity, without any enrollment token.
    let mut restarted = server.start_agent_in("stable-host", state_dir, None).await;
    assert_eq!(restarted.identity.machine_id, machine_id);
    assert_eq!(restarted.identity.credential, credential);
    restarted.stop().await;

    // Enrolling the same host again from scratch, with its key (issue 9 item 1: a token alone
    // never re-keys an enrolled machine), gives the same machine id, a new credential.
    let fresh_state = server.dir.path().join("fresh-state");
    std::fs::create_dir_all(&fresh_state).unwrap();
    std::fs::copy(first.state_dir.join("agent.key"), fresh_state.join("agent.key")).unwrap();
    let mut fresh = server.start_agent_in("stable-host", fresh_state, Some(server.enroll_token().await)).await;
    assert_eq!(fresh.identity.machine_id, machine_id);
    assert_ne!(fresh.identity.credential, credential);
    fresh.stop().await;

    // The old credential no longer works; the server never stored it in clear.
    let response = server
        .http
        .get(format!("{}/agent/v1/actions/next?wait=0", server.base))
        .bearer_auth(&credential)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let mut stored = Vec::new();
    for suffix in ["", "-wal"] {
        stored.extend(std::fs::read(server.dir.path().join(format!("data/casefile.db{suffix}"))).unwrap_or_default());
    }
    assert!(!stored.windows(credential.len()).any(|w| w == credential.as_bytes()));
}

/// An agent's polls keep its `lastSeen` current to within a few seconds without writing
/// it on every poll (most polls are empty: they write nothing at all).
#[tokio::test]
async fn last_seen_follows_the_polls_to_within_seconds_not_a_write_per_poll() {
    let server = TestServer::start_with_clock(|_| {}).await;
    let agent = RawAgent::enroll(&server, "seen").await;
    let token = server.token(ALL);
    let seen = || async {
        let response = server.get(&format!("/api/machines/{}", agent.machine_id), &token).await;
        assert_eq!(response.status(), 200);
        let machine: Value = response.json().await.unwrap();
        let at = chrono::DateTime::parse_from_rfc3339(machine["lastSeen"].as_str().unwrap()).unwrap();
        (at, machine["lastIpAddress"].clone())
    };
    // Enrolling records the agent as seen, from its address.
    let (enrolled, ip) = seen().await;
    assert_eq!(ip, "127.0.0.1");
    server.advance(Duration::from_secs(3));
    assert!(agent.poll(0).await.is_none());
    assert_eq!(seen().await.0, enrolled, "3 s later, from the same address: not written again");
    server.advance(Duration::from_secs(3));
    assert!(agent.poll(0).await.is_none());
    assert_eq!((seen().await.0 - enrolled).num_seconds(), 6, "6 s later: written");
}

#[tokio::test]
async fn a_silent_agent_times_out() {
    let server = TestServer::start_with_clock(|c| c.agents.silent_timeout_seconds = 600).await;
    let silent = RawAgent::enroll(&server, "silent").await;
    server.collect(&silent.machine_id, &server.token(ALL)).await;
    let id = action_id(silent.poll(0).await.unwrap());

    server.advance(Duration::from_secs(599));
    server.server().sweep_now().await.unwrap();
    assert_eq!(server.action(&id).await.status, ActionStatus::InProgress, "silent, but within the window");
    server.advance(Duration::from_secs(2));
    server.server().sweep_now().await.unwrap();
    let action = server.action(&id).await;
    assert_eq!(action.status, ActionStatus::TimeOut);
    assert!(action.troubleshoot_info.unwrap().contains("stopped reporting"));
}

#[tokio::test]
async fn a_collection_running_past_the_longest_allowed_times_out_though_its_agent_polls() {
    let server = TestServer::start_with_clock(|c| c.agents.max_collection_seconds = 3600).await;
    let stuck = RawAgent::enroll(&server, "stuck").await;
    server.collect(&stuck.machine_id, &server.token(ALL)).await;
    let id = action_id(stuck.poll(0).await.unwrap());
    for _ in 0..3 {
        // The agent keeps polling every 20 minutes: never silent.
        server.advance(Duration::from_secs(20 * 60));
        assert!(stuck.poll(0).await.is_none());
        server.server().sweep_now().await.unwrap();
    }
    assert_eq!(server.action(&id).await.status, ActionStatus::InProgress, "exactly one hour is allowed");
    server.advance(Duration::from_secs(1));
    server.server().sweep_now().await.unwrap();
    let action = server.action(&id).await;
    assert_eq!(action.status, ActionStatus::TimeOut);
    assert!(action.troubleshoot_info.unwrap().contains("longer than 3600 seconds"));
}

#[tokio::test]
async fn a_restarted_agent_fails_the_action_it_abandoned() {
    let server = TestServer::start().await;
    let restarting = RawAgent::enroll(&server, "restarting").await;
    server.collect(&restarting.machine_id, &server.token(ALL)).await;
    let id = action_id(restarting.poll(0).await.unwrap());
    let hello = restarting
        .http
        .post(format!("{}/agent/v1/hello", server.base))
        .bearer_auth(&restarting.credential)
        .json(&serde_json::json!({"host": {"computer_dns_name": "restarting.example", "os_platform": "Linux", "agent_version": "t"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(hello.status(), 200);
    let hello: Value = hello.json().await.unwrap();
    assert_eq!(hello["abandoned_actions"][0], id.as_str());
    let action = server.action(&id).await;
    assert_eq!(action.status, ActionStatus::Failed);
    assert!(action.troubleshoot_info.unwrap().contains("restarted"));
}

#[tokio::test]
async fn uploads_are_checked_file_by_file_and_against_the_enrolled_key() {
    let server = TestServer::start().await;
    let key = SigningKey::from_bytes(&[3; 32]);
    let agent = RawAgent::enroll_with_key(&server, "checked", Some(&key)).await;
    let token = server.token(ALL);

    // Signed by another key: refused, the action fails with the reason.
    server.collect(&agent.machine_id, &token).await;
    let id = action_id(agent.poll(0).await.unwrap());
    let foreign = signed_package(&SigningKey::from_bytes(&[4; 32]), false, &agent, &id);
    let sha = hex::encode(sha2::Sha256::digest(&foreign));
    let (status, error) = error_of(agent.upload(&id, foreign, &sha).await).await;
    assert_eq!((status, error["code"].as_str().unwrap()), (400, "InvalidInput"));
    let action = server.action(&id).await;
    assert_eq!(action.status, ActionStatus::Failed);
    assert!(action.troubleshoot_info.unwrap().contains("not the expected key"));

    // A file the manifest does not list: refused, named.
    server.collect(&agent.machine_id, &token).await;
    let id = action_id(agent.poll(0).await.unwrap());
    let smuggled = signed_package(&key, true, &agent, &id);
    let sha = hex::encode(sha2::Sha256::digest(&smuggled));
    let (status, _) = error_of(agent.upload(&id, smuggled, &sha).await).await;
    assert_eq!(status, 400);
    let info = server.action(&id).await.troubleshoot_info.unwrap();
    assert!(info.contains("unlisted.TXT: present but not in the manifest"), "{info}");

    // Not a zip at all: refused.
    server.collect(&agent.machine_id, &token).await;
    let id = action_id(agent.poll(0).await.unwrap());
    let garbage = b"certainly not a zip".to_vec();
    let sha = hex::encode(sha2::Sha256::digest(&garbage));
    let (status, _) = error_of(agent.upload(&id, garbage, &sha).await).await;
    assert_eq!(status, 400);
    assert!(server.action(&id).await.troubleshoot_info.unwrap().contains("not a readable casefile package"));

    // The right key and an intact package: Succeeded.
    server.collect(&agent.machine_id, &token).await;
    let id = action_id(agent.poll(0).await.unwrap());
    let good = signed_package(&key, false, &agent, &id);
    let sha = hex::encode(sha2::Sha256::digest(&good));
    assert_eq!(agent.upload(&id, good, &sha).await.status(), 200);
    assert_eq!(server.action(&id).await.status, ActionStatus::Succeeded);
    let staged = std::fs::read_dir(server.dir.path().join("data/incoming")).unwrap().count();
    assert_eq!(staged, 0, "no staging file is left behind");
}
