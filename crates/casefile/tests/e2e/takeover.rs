//! Issue 9 items 1 and 2: an enrollment token never takes over an enrolled machine, tokens
//! are counted, expire and can be revoked, and a machine's name is a reported fact, never
//! its identity.

use std::time::Duration;

use casefile_proto::ActionStatus;
use casefile_proto::agent::{EnrollRequest, EnrollResponse, HostInfo};
use casefile_store::{AuditFilter, AuditRecord, EnrollmentTokenRecord};
use ed25519_dalek::SigningKey;
use serde_json::Value;

use crate::cli::casefile;
use crate::support::*;

fn host(name: &str) -> HostInfo {
    HostInfo {
        computer_dns_name: name.to_owned(),
        os_platform: "Linux".into(),
        os_version: Some("12".into()),
        os_architecture: Some("64-bit".into()),
        os_build: None,
        agent_version: "attacker".into(),
        ip_addresses: vec![],
    }
}

/// `POST /agent/v1/enroll` by hand, as an attacker with a token would.
async fn enroll_raw(server: &TestServer, token: &str, host_id: &str, key: &SigningKey) -> reqwest::Response {
    let request = EnrollRequest {
        host_id: host_id.to_owned(),
        host: host(&format!("{host_id}.example")),
        public_key: Some(casefile_package::signature::public_key_base64(&key.verifying_key())),
        proof: None,
    };
    server.http.post(format!("{}/agent/v1/enroll", server.base)).bearer_auth(token).json(&request).send().await.unwrap()
}

/// A token and its record (for its id), made as the CLI makes them.
async fn token_with(server: &TestServer, ttl: Duration, uses: u32) -> (String, EnrollmentTokenRecord) {
    let state = server.server().state();
    casefile_server::enrollment::create_token(state.store.as_ref(), "default", ttl, uses, state.now()).await.unwrap()
}

async fn audit(server: &TestServer, event: &str) -> Vec<AuditRecord> {
    let filter = AuditFilter { event: Some(event.to_owned()), limit: 100, ..Default::default() };
    server.server().state().store.audit(&filter).await.unwrap()
}

async fn agent_key(server: &TestServer, machine_id: &str) -> Option<String> {
    server
        .server()
        .state()
        .store
        .machine(&casefile_proto::TenantId::default_tenant(), machine_id)
        .await
        .unwrap()
        .unwrap()
        .agent_public_key
}

/// Issue 9 item 1 (machine takeover): a token plus the victim's machine-id used to re-key
/// the victim's machine, locking its agent out and handing its collections to the attacker.
#[tokio::test]
async fn machine_takeover_with_a_token_and_the_victims_machine_id_is_refused() {
    let server = TestServer::start().await;
    let mut victim = server.start_agent("victim-host").await;
    let victim_key = agent_key(&server, &victim.identity.machine_id).await;

    // By hand: the token alone.
    let (token, record) = token_with(&server, Duration::from_secs(600), 5).await;
    let attacker = SigningKey::from_bytes(&[66; 32]);
    let (status, error) = error_of(enroll_raw(&server, &token, "victim-host", &attacker).await).await;
    assert_eq!((status, error["code"].as_str().unwrap()), (403, "Forbidden"), "{error}");
    assert!(error["message"].as_str().unwrap().contains("reset-identity"), "{error}");

    // By hand: a real challenge, signed by the attacker's own key.
    let challenge: Value = server
        .post_json("/agent/v1/enroll/challenge", &token, &serde_json::json!({"host_id": "victim-host"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(challenge["machine_id"], victim.identity.machine_id.as_str());
    let forged = casefile_agent::identity::prove(
        &attacker,
        &serde_json::from_value(challenge).unwrap(),
        Some(&casefile_package::signature::public_key_base64(&attacker.verifying_key())),
    );
    let request = EnrollRequest {
        host_id: "victim-host".into(),
        host: host("victim-host.example"),
        public_key: Some(casefile_package::signature::public_key_base64(&attacker.verifying_key())),
        proof: Some(forged),
    };
    let response =
        server.http.post(format!("{}/agent/v1/enroll", server.base)).bearer_auth(&token).json(&request).send().await;
    assert_eq!(error_of(response.unwrap()).await.0, 401, "a proof by another key");

    // A real agent with the token and the victim's host id, in its own state directory: it
    // answers the challenge with its own key, which proves nothing.
    let mut config = server.agent_config(Some(token.clone()), server.dir.path().join("attacker-state"));
    config.host_id = Some("victim-host".to_owned());
    let refused = casefile_agent::run(config, tokio_util::sync::CancellationToken::new()).await;
    assert!(matches!(refused, Err(casefile_agent::AgentError::Refused(_))), "{refused:?}");

    // Nothing changed: same key, no use of the token taken, and every attempt is on record
    // naming the token by its id.
    assert_eq!(agent_key(&server, &victim.identity.machine_id).await, victim_key);
    let after = server.server().state().store.enrollment_token_by_hash(&record.token_hash).await.unwrap().unwrap();
    assert_eq!(after.uses, 0);
    let refusals: Vec<_> =
        audit(&server, "agent.enroll").await.into_iter().filter(|r| r.entry.outcome.starts_with("refused")).collect();
    assert_eq!(refusals.len(), 3, "{refusals:?}");
    for refusal in &refusals {
        assert_eq!(refusal.entry.actor, record.id.to_string());
        assert_eq!(refusal.entry.target.as_deref(), Some(victim.identity.machine_id.as_str()));
        let detail = refusal.entry.detail.as_ref().unwrap();
        assert_eq!(detail["enrollmentToken"], record.id.to_string());
        assert!(!detail.to_string().contains(&token), "the secret is never recorded");
    }

    // The real agent keeps working and receives the next collection.
    let all = server.token(ALL);
    let created: Value = server.collect(&victim.identity.machine_id, &all).await.json().await.unwrap();
    let done = server.wait_final(created["id"].as_str().unwrap()).await;
    assert_eq!(done.status, ActionStatus::Succeeded, "{:?}", done.troubleshoot_info);
    victim.stop().await;
}

/// Issue 9 item 1: an agent whose credential is refused re-enrolls by proving the key it
/// registered, and keeps its machine.
#[tokio::test]
async fn reenrollment_proving_the_registered_key_keeps_the_machine() {
    let server = TestServer::start().await;
    let mut first = server.start_agent("rekey-host").await;
    let machine_id = first.identity.machine_id.clone();
    let key = agent_key(&server, &machine_id).await;
    first.stop().await;

    // The saved credential no longer works (e.g. a lost or damaged identity file).
    let path = first.state_dir.join("identity.json");
    let mut saved: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let old_credential = saved["credential"].as_str().unwrap().to_owned();
    saved["credential"] = "cfa_not-the-credential".into();
    std::fs::write(&path, serde_json::to_vec(&saved).unwrap()).unwrap();

    let mut again =
        server.start_agent_in("rekey-host", first.state_dir.clone(), Some(server.enroll_token().await)).await;
    assert_eq!(again.identity.machine_id, machine_id);
    assert_ne!(again.identity.credential, old_credential);
    assert_eq!(agent_key(&server, &machine_id).await, key, "the same key, proven");
    let enrolled = audit(&server, "agent.enroll").await;
    let last = &enrolled.last().unwrap().entry;
    assert_eq!(last.outcome, "ok");
    assert!(last.detail.as_ref().unwrap()["requested"].as_str().unwrap().contains("re-key"), "{last:?}");

    let all = server.token(ALL);
    let created: Value = server.collect(&machine_id, &all).await.json().await.unwrap();
    let done = server.wait_final(created["id"].as_str().unwrap()).await;
    assert_eq!(done.status, ActionStatus::Succeeded, "{:?}", done.troubleshoot_info);
    again.stop().await;
}

/// Issue 9 item 1: an administrator's `casefile machine reset-identity` voids the key and
/// credential (audited); the next enrollment by token makes the identity afresh.
#[tokio::test]
async fn reset_identity_voids_the_old_key_and_the_next_enrollment_starts_afresh() {
    let server = TestServer::start().await;
    let mut agent = server.start_agent("reset-host").await;
    let machine_id = agent.identity.machine_id.clone();
    let old_credential = agent.identity.credential.clone();
    agent.stop().await;
    let data_dir = server.dir.path().join("data");

    let out = casefile()
        .args(["machine", "reset-identity", &machine_id.to_uppercase(), "--actor", "soc-lead", "--data-dir"])
        .arg(&data_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = casefile().args(["machine", "reset-identity", "0000", "--data-dir"]).arg(&data_dir).output().unwrap();
    assert!(!out.status.success(), "an unknown machine");

    let resets = audit(&server, "machine.reset-identity").await;
    assert_eq!(resets.len(), 1);
    assert_eq!(
        (resets[0].entry.actor.as_str(), resets[0].entry.target.as_deref()),
        ("cli:soc-lead", Some(&*machine_id))
    );
    assert_eq!(agent_key(&server, &machine_id).await, None, "the old key is void");
    let refused = server
        .http
        .get(format!("{}/agent/v1/actions/next?wait=0", server.base))
        .bearer_auth(&old_credential)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401, "the old credential is void");

    // A new agent (a new key) for the same host enrolls with a token: same machine, history kept.
    let mut fresh = server
        .start_agent_in("reset-host", server.dir.path().join("rebuilt-host"), Some(server.enroll_token().await))
        .await;
    assert_eq!(fresh.identity.machine_id, machine_id);
    let new_key = agent_key(&server, &machine_id).await.unwrap();
    let all = server.token(ALL);
    let created: Value = server.collect(&machine_id, &all).await.json().await.unwrap();
    let done = server.wait_final(created["id"].as_str().unwrap()).await;
    assert_eq!(done.status, ActionStatus::Succeeded, "{:?}", done.troubleshoot_info);
    fresh.stop().await;

    // The reset allowed one enrollment: the next token-only one is refused again.
    let (token, _) = token_with(&server, Duration::from_secs(600), 1).await;
    let (status, _) =
        error_of(enroll_raw(&server, &token, "reset-host", &SigningKey::from_bytes(&[9; 32])).await).await;
    assert_eq!(status, 403);
    assert_eq!(agent_key(&server, &machine_id).await.as_deref(), Some(new_key.as_str()));
}

/// Issue 9 item 1: a token is single-use unless made with more uses.
#[tokio::test]
async fn a_single_use_enrollment_token_is_refused_the_second_time() {
    let server = TestServer::start().await;
    let key = SigningKey::from_bytes(&[1; 32]);
    let token = server.enroll_token().await;
    assert_eq!(enroll_raw(&server, &token, "first", &key).await.status(), 201);
    let (status, error) = error_of(enroll_raw(&server, &token, "second", &key).await).await;
    assert_eq!(status, 401);
    assert!(error["message"].as_str().unwrap().contains("used up"), "{error}");

    let (two, _) = token_with(&server, Duration::from_secs(600), 2).await;
    assert_eq!(enroll_raw(&server, &two, "a", &key).await.status(), 201);
    assert_eq!(enroll_raw(&server, &two, "b", &key).await.status(), 201);
    assert_eq!(error_of(enroll_raw(&server, &two, "c", &key).await).await.0, 401);
}

/// Issue 9 item 1: consuming a use is atomic: of racing enrollments with a single-use
/// token, exactly one wins.
#[tokio::test]
async fn racing_enrollments_with_a_single_use_token_exactly_one_wins() {
    let server = std::sync::Arc::new(TestServer::start().await);
    let token = server.enroll_token().await;
    let mut racers = tokio::task::JoinSet::new();
    for i in 0..24 {
        let (server, token) = (server.clone(), token.clone());
        racers.spawn(async move {
            let key = SigningKey::from_bytes(&[i as u8; 32]);
            enroll_raw(&server, &token, &format!("racer-{i}"), &key).await.status().as_u16()
        });
    }
    let mut statuses = racers.join_all().await;
    statuses.sort();
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 1, "{statuses:?}");
    assert!(statuses.iter().all(|s| *s == 201 || *s == 401), "{statuses:?}");
    let machines: Value = server.get("/api/machines?$count=true", &server.token(ALL)).await.json().await.unwrap();
    assert_eq!(machines["@odata.count"], 1);
}

/// Issue 9 item 1: expired and revoked tokens enroll nothing; lifetimes are bounded.
#[tokio::test]
async fn expired_and_revoked_enrollment_tokens_are_refused() {
    let server = TestServer::start_with_clock(|_| {}).await;
    let key = SigningKey::from_bytes(&[2; 32]);
    let (short, _) = token_with(&server, Duration::from_secs(60), 5).await;
    server.advance(Duration::from_secs(61));
    let (status, error) = error_of(enroll_raw(&server, &short, "late", &key).await).await;
    assert_eq!(status, 401);
    assert!(error["message"].as_str().unwrap().contains("expired"), "{error}");

    let (revocable, record) = token_with(&server, Duration::from_secs(600), 5).await;
    let state = server.server().state();
    casefile_server::enrollment::revoke_token(state.store.as_ref(), "default", &record.id.to_string(), state.now())
        .await
        .unwrap();
    let (status, error) = error_of(enroll_raw(&server, &revocable, "revoked", &key).await).await;
    assert_eq!(status, 401);
    assert!(error["message"].as_str().unwrap().contains("revoked"), "{error}");

    // A huge lifetime is refused, not wrapped or saturated into "forever".
    for ttl in [u64::MAX, 366 * 24 * 3600, 0] {
        let made = server.server().create_enrollment_token_with("default", Some(Duration::from_secs(ttl)), 1).await;
        assert!(made.is_err(), "ttl {ttl}");
    }
    assert!(server.server().create_enrollment_token_with("default", None, 0).await.is_err(), "zero uses");
}

/// Issue 9 item 1: `casefile enroll-token list|revoke`, with `--json`, never showing secrets.
#[tokio::test]
async fn enroll_tokens_are_listed_and_revoked_on_the_command_line() {
    let server = TestServer::start().await;
    let data_dir = server.dir.path().join("data");
    let out = casefile().args(["enroll-token", "--uses", "3", "--data-dir"]).arg(&data_dir).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).unwrap().lines().next().unwrap().trim().to_owned();
    let key = SigningKey::from_bytes(&[3; 32]);
    assert_eq!(enroll_raw(&server, &token, "listed", &key).await.status(), 201);

    let list = |json: bool| {
        let mut command = casefile();
        command.args(["enroll-token", "list", "--data-dir"]).arg(&data_dir);
        if json {
            command.arg("--json");
        }
        let out = command.output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let listed: Value = serde_json::from_str(&list(true)).unwrap();
    let tokens = listed["value"].as_array().unwrap();
    assert_eq!(tokens.len(), 1);
    let id = tokens[0]["id"].as_str().unwrap().to_owned();
    assert_eq!((tokens[0]["usesAllowed"].as_u64(), tokens[0]["uses"].as_u64()), (Some(3), Some(1)));
    assert_eq!(tokens[0]["state"], "usable");
    let text = list(false);
    assert!(text.contains(&id) && text.contains("used 1/3"), "{text}");
    assert!(!text.contains(&token) && !listed.to_string().contains(&token), "never the secret");

    let out = casefile().args(["enroll-token", "revoke", &id, "--json", "--data-dir"]).arg(&data_dir).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let revoked: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(revoked["state"], "revoked");
    assert_eq!(error_of(enroll_raw(&server, &token, "after", &key).await).await.0, 401);
    let out = casefile().args(["enroll-token", "revoke", "not-an-id", "--data-dir"]).arg(&data_dir).output().unwrap();
    assert!(!out.status.success());
    let out = casefile().args(["enroll-token", "--ttl", "99999999999", "--data-dir"]).arg(&data_dir).output().unwrap();
    assert!(!out.status.success(), "a lifetime past the maximum is refused");
    assert!(String::from_utf8_lossy(&out.stderr).contains("lifetime"));
}

/// Issue 9 item 2 (name hijack): an agent reporting another host's name used to take over
/// lookups and collections by that name. Now the name is ambiguous: `400` listing both ids,
/// while ids keep working.
#[tokio::test]
async fn an_ambiguous_machine_name_answers_400_listing_the_candidate_ids() {
    let server = TestServer::start().await;
    let mut victim = server.start_agent("named-victim").await;
    let token = server.token(ALL);
    let victim_machine: Value =
        server.get(&format!("/api/machines/{}", victim.identity.machine_id), &token).await.json().await.unwrap();
    let name = victim_machine["computerDnsName"].as_str().unwrap().to_owned();
    assert_eq!(server.get(&format!("/api/machines/{name}"), &token).await.status(), 200, "one machine, one name");

    // Another enrolled agent reports the victim's name at its start.
    let key = SigningKey::from_bytes(&[4; 32]);
    let enrolled: EnrollResponse =
        enroll_raw(&server, &server.enroll_token().await, "hijacker", &key).await.json().await.unwrap();
    let hello = server
        .post_json("/agent/v1/hello", &enrolled.credential, &serde_json::json!({"host": host(&name.to_uppercase())}))
        .await;
    assert_eq!(hello.status(), 200);

    for response in [
        server.get(&format!("/api/machines/{name}"), &token).await,
        server.collect(&name, &token).await,
        server.get(&format!("/api/machines/{name}/machineactions"), &token).await,
    ] {
        let (status, error) = error_of(response).await;
        assert_eq!((status, error["code"].as_str().unwrap()), (400, "InvalidInput"), "{error}");
        let message = error["message"].as_str().unwrap();
        assert!(message.contains(&victim.identity.machine_id) && message.contains(&enrolled.machine_id), "{message}");
    }
    // An id always wins, and the victim still collects.
    let created: Value = server.collect(&victim.identity.machine_id, &token).await.json().await.unwrap();
    let done = server.wait_final(created["id"].as_str().unwrap()).await;
    assert_eq!(done.status, ActionStatus::Succeeded, "{:?}", done.troubleshoot_info);
    victim.stop().await;
}

/// Issue 9 item 2: a name change reported in `hello` is on record, old and new name.
#[tokio::test]
async fn a_name_change_reported_in_hello_is_audited() {
    let server = TestServer::start().await;
    let key = SigningKey::from_bytes(&[5; 32]);
    let enrolled: EnrollResponse =
        enroll_raw(&server, &server.enroll_token().await, "renamer", &key).await.json().await.unwrap();
    let say = |name: &str| {
        let body = serde_json::json!({"host": host(name)});
        let credential = enrolled.credential.clone();
        let server = &server;
        async move { server.post_json("/agent/v1/hello", &credential, &body).await }
    };
    assert_eq!(say("renamer.example").await.status(), 200);
    assert!(audit(&server, "machine.rename").await.is_empty(), "the same name is no change");
    assert_eq!(say("ceo-laptop").await.status(), 200);
    let renames = audit(&server, "machine.rename").await;
    assert_eq!(renames.len(), 1);
    let entry = &renames[0].entry;
    assert_eq!((entry.actor_kind.as_str(), entry.actor.as_str()), ("agent", enrolled.machine_id.as_str()));
    assert_eq!(entry.target.as_deref(), Some(enrolled.machine_id.as_str()));
    assert_eq!(entry.detail.as_ref().unwrap(), &serde_json::json!({"from": "renamer.example", "to": "ceo-laptop"}));
    let (status, _) = error_of(say("").await).await;
    assert_eq!(status, 400, "an empty name is refused");
}

/// Issue 9 item 1: a re-enrollment challenge works once, expires (server clock), and its
/// signature covers the key registered next.
#[tokio::test]
async fn a_reenrollment_challenge_is_single_use_expires_and_binds_the_new_key() {
    let server = TestServer::start_with_clock(|_| {}).await;
    let (token, _) = token_with(&server, Duration::from_secs(3600), 10).await;
    let key = SigningKey::from_bytes(&[7; 32]);
    let public = casefile_package::signature::public_key_base64(&key.verifying_key());
    assert_eq!(enroll_raw(&server, &token, "proving", &key).await.status(), 201);

    let challenge = || async {
        let response =
            server.post_json("/agent/v1/enroll/challenge", &token, &serde_json::json!({"host_id": "proving"})).await;
        assert_eq!(response.status(), 200);
        response.json::<casefile_proto::agent::EnrollChallenge>().await.unwrap()
    };
    let enroll = |signed_for: String, sent: String, challenge: casefile_proto::agent::EnrollChallenge| {
        let request = EnrollRequest {
            host_id: "proving".into(),
            host: host("proving.example"),
            public_key: Some(sent),
            proof: Some(casefile_agent::identity::prove(&key, &challenge, Some(&signed_for))),
        };
        let post = server.http.post(format!("{}/agent/v1/enroll", server.base)).bearer_auth(&token).json(&request);
        async move { post.send().await.unwrap() }
    };

    let first = challenge().await;
    assert_eq!(enroll(public.clone(), public.clone(), first.clone()).await.status(), 201);
    let (status, error) = error_of(enroll(public.clone(), public.clone(), first).await).await;
    assert_eq!(status, 401, "replayed: {error}");

    let late = challenge().await;
    server.advance(Duration::from_secs(late.expires_in_seconds + 1));
    let (status, error) = error_of(enroll(public.clone(), public.clone(), late).await).await;
    assert_eq!(status, 401, "expired: {error}");

    let other = casefile_package::signature::public_key_base64(&SigningKey::from_bytes(&[8; 32]).verifying_key());
    let bound = challenge().await;
    let (status, _) = error_of(enroll(public.clone(), other, bound).await).await;
    assert_eq!(status, 401, "signed for one key, sent with another");

    let unknown =
        server.post_json("/agent/v1/enroll/challenge", &token, &serde_json::json!({"host_id": "nobody"})).await;
    assert_eq!(error_of(unknown).await.0, 404, "no registered key to prove");
}
