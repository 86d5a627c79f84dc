//! The smaller breaks of issue 9: each test names the defect it guards against.

use serde_json::{Value, json};

use crate::cli::casefile;
use crate::support::*;

/// Path folding lowered parameters: a role created as `SOC-Analysts` was stored as
/// `soc-analysts`, and errors echoed ids lower-cased.
#[tokio::test]
async fn path_folding_keeps_the_case_of_parameters() {
    let server = TestServer::start().await;
    let admin = server.token(&["Casefile.Admin"]);
    let role = json!({"permissions": ["ViewData"], "users": ["a@example.com"], "groups": []});
    let put = server
        .http
        .put(format!("{}/API/v1.0/Admin/Roles/SOC-Analysts/", server.base))
        .bearer_auth(&admin)
        .json(&role)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200, "{}", put.text().await.unwrap());
    let roles: Value = server.get("/api/admin/roles", &admin).await.json().await.unwrap();
    assert_eq!(roles["value"][0]["name"], "SOC-Analysts", "{roles}");

    let (status, error) = error_of(server.get("/API/Machines/Unknown-Host-ABC", &server.token(ALL)).await).await;
    assert_eq!(status, 404);
    assert!(error["message"].as_str().unwrap().contains("Unknown-Host-ABC"), "{error}");
}

/// NUL and other control characters in `Comment` were stored and echoed back.
#[tokio::test]
async fn control_characters_in_a_comment_are_refused() {
    let server = TestServer::start().await;
    let machine = server.seed_machine("host-1").await;
    let token = server.token(ALL);
    for comment in ["evil\u{0}comment", "bell\u{7}", "\u{1b}[31mred", "del\u{7f}"] {
        let response = server
            .post_json(
                &format!("/api/machines/{machine}/collectInvestigationPackage"),
                &token,
                &json!({"Comment": comment}),
            )
            .await;
        let (status, error) = error_of(response).await;
        assert_eq!((status, error["code"].as_str().unwrap()), (400, "InvalidInput"), "{comment:?}: {error}");
        assert!(error["message"].as_str().unwrap().contains("control character"), "{error}");
    }
    let pending = server
        .seed_action(
            &machine,
            casefile_proto::ActionStatus::Pending,
            casefile_proto::ActionType::CollectInvestigationPackage,
            "x",
            chrono::Utc::now(),
        )
        .await;
    let cancel = server
        .post_json(&format!("/api/machineactions/{pending}/cancel"), &token, &json!({"Comment": "a\u{0}b"}))
        .await;
    assert_eq!(error_of(cancel).await.0, 400);
    // Tabs and line breaks are text.
    let multi_line = json!({"Comment": "line one\r\nline two\tand a tab"});
    let path = format!("/api/machines/{machine}/collectInvestigationPackage");
    let created = server.post_json(&path, &token, &multi_line).await;
    // The seeded action is still pending: a second collection is refused for that, not the text.
    let (status, error) = error_of(created).await;
    assert_eq!((status, error["code"].as_str().unwrap()), (400, "ActiveRequestAlreadyExists"));
}

/// `now + ttl` overflowed for a huge `--ttl`.
#[test]
fn a_huge_token_lifetime_is_refused_not_wrapped() {
    let dir = tempfile::tempdir().unwrap();
    let output = casefile()
        .args(["token", "--roles", "Machine.Read.All", "--ttl", "18446744073709551615", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("lifetime"), "{stderr}");
    assert!(output.stdout.is_empty(), "no token was printed");
}

/// A silent-agent window shorter than the long-poll wait timed out healthy agents; huge
/// link and token lifetimes overflowed.
#[tokio::test]
async fn settings_that_break_promises_refuse_to_start() {
    type Tweak = fn(&mut casefile_server::ServerConfig);
    let cases: [(&str, Tweak); 3] = [
        ("silent_timeout_seconds", |c| {
            c.agents.poll_wait_seconds = 25;
            c.agents.silent_timeout_seconds = 20;
        }),
        ("link_ttl_seconds", |c| c.packages.link_ttl_seconds = u64::MAX),
        ("token_ttl_seconds", |c| c.auth.token_ttl_seconds = u64::MAX),
    ];
    for (setting, tweak) in cases {
        let dir = tempfile::tempdir().unwrap();
        let mut config = casefile_server::ServerConfig { data_dir: dir.path().join("data"), ..Default::default() };
        tweak(&mut config);
        let error = casefile_server::Server::open(config).await.err().expect("refused");
        assert!(error.to_string().contains(setting), "{setting}: {error}");
    }
}

/// PostgreSQL cannot store the NUL character in text and answered 500 wherever a request
/// carried one to the database (a lookup by name, a filter literal, a tag). Each is now a
/// clear error in MDE's shape, or on SQLite, which stores it, an ordinary answer.
#[tokio::test]
async fn a_nul_character_in_any_input_never_answers_500() {
    let server = TestServer::start().await;
    let machine = server.seed_machine("host-1").await;
    let token = server.token(ALL);
    let reads = [
        "/api/machines/host-1%00x".to_owned(),
        "/api/machines?$filter=computerDnsName%20eq%20'host%001'".to_owned(),
        "/api/machineactions?$filter=requestor%20eq%20'a%00b'".to_owned(),
        "/api/machines/host%001/machineactions".to_owned(),
        "/api/admin/roles/a%00b".to_owned(),
    ];
    let admin = server.token(&["Casefile.Admin"]);
    for path in reads {
        let caller = if path.starts_with("/api/admin") { &admin } else { &token };
        let response = server.get(&path, caller).await;
        let status = response.status().as_u16();
        if status >= 400 {
            let (status, error) = error_of(response).await;
            assert!(status < 500, "{path}: {status} {error}");
        }
    }
    let tag = server
        .post_json(&format!("/api/machines/{machine}/tags"), &token, &json!({"Value": "a\u{0}b", "Action": "Add"}))
        .await;
    let status = tag.status().as_u16();
    if status >= 400 {
        let (status, error) = error_of(tag).await;
        assert!(status < 500, "tag: {status} {error}");
    }
    // Nothing half-written: the machine answers as before.
    assert_eq!(server.get(&format!("/api/machines/{machine}"), &token).await.status(), 200);
}
