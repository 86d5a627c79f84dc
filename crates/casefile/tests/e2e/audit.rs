//! The audit trail and a package's chain of custody, as a SOC lead reads them: who asked,
//! which agent collected, what was verified, who downloaded, from where; refused calls too.

use serde_json::Value;

use crate::support::*;

fn events(custody: &Value) -> Vec<(String, String, String)> {
    custody["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["event"].as_str().unwrap().to_owned(),
                e["actorKind"].as_str().unwrap().to_owned(),
                e["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_package_has_its_whole_chain_of_custody() {
    let server = TestServer::start().await;
    let Collected { mut agent, token, id, url } = server.succeeded_collection("custody").await;
    let download = server.http.get(&url).send().await.unwrap();
    assert_eq!(download.status(), 200);
    let bytes = download.bytes().await.unwrap();
    agent.stop().await;

    let response = server.get(&format!("/api/machineactions/{id}/custody"), &token).await;
    assert_eq!(response.status(), 200);
    let custody: Value = response.json().await.unwrap();
    assert_eq!(custody["requestedBy"], "e2e tests");
    assert_eq!(custody["requestComment"], "e2e collection");
    assert_eq!(custody["status"], "Succeeded");
    use sha2::Digest;
    let sha = hex::encode(sha2::Sha256::digest(&bytes));
    assert_eq!(custody["package"]["sha256"], sha.as_str());
    assert_eq!(
        events(&custody),
        [
            ("collect".into(), "application".into(), "ok".into()),
            ("action.dispatch".into(), "agent".into(), "ok".into()),
            ("action.accept".into(), "agent".into(), "ok".into()),
            ("package.upload".into(), "agent".into(), "ok".into()),
            ("link.issue".into(), "application".into(), "ok".into()),
            ("package.download".into(), "link".into(), "ok".into()),
        ]
    );
    let all = custody["events"].as_array().unwrap();
    assert_eq!(all[0]["actor"], "e2e tests");
    assert_eq!(all[1]["actor"], agent.identity.machine_id.as_str());
    let upload = &all[3]["detail"];
    assert_eq!(upload["sha256"], sha.as_str());
    assert_eq!(upload["manifestSha256"].as_str().unwrap().len(), 64);
    let enrolled = server
        .server()
        .state()
        .store
        .machine(&casefile_proto::TenantId::default_tenant(), &agent.identity.machine_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(upload["signedBy"].as_str(), enrolled.agent_public_key.as_deref(), "signed by the enrolled key");
    assert_eq!(all[5]["actor"], "e2e tests", "the download is attributed to whoever asked for the link");
    assert_eq!(all[5]["sourceIp"], "127.0.0.1");
    for event in all {
        assert!(event["correlationId"].is_string() || event["event"] == "action.dispatch", "{event}");
    }

    // An id in another spelling (32 hex digits) is still this action's custody.
    let simple = uuid::Uuid::parse_str(&id).unwrap().simple().to_string();
    let response = server.get(&format!("/api/machineactions/{simple}/getPackageUri"), &token).await;
    assert_eq!(response.status(), 200);
    let again: Value = server.get(&format!("/api/machineactions/{id}/custody"), &token).await.json().await.unwrap();
    assert_eq!(events(&again).last().unwrap().0, "link.issue");

    // Another tenant learns nothing.
    let (status, _) =
        error_of(server.get(&format!("/api/machineactions/{id}/custody"), &server.token_for("other", ALL)).await).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn refused_calls_are_in_the_trail_with_their_source() {
    let server = TestServer::start().await;
    let response = server.get("/api/machineactions", "not-a-token").await;
    let correlation = response.headers()["x-correlation-id"].to_str().unwrap().to_owned();
    assert_eq!(response.status(), 401);
    let machine = server.seed_machine("audited.example").await;
    let (status, _) = error_of(server.collect(&machine, &server.token(&[READ])).await).await;
    assert_eq!(status, 403);

    let trail = server
        .server()
        .state()
        .store
        .audit(&casefile_store::AuditFilter { limit: 100, ..Default::default() })
        .await
        .unwrap();
    let refused = trail.iter().find(|r| r.entry.correlation_id.as_deref() == Some(correlation.as_str())).unwrap();
    assert_eq!(refused.entry.event, "access.refused");
    assert_eq!(refused.entry.http_status, Some(401));
    assert_eq!(refused.entry.source_ip.as_deref(), Some("127.0.0.1"));
    let forbidden = trail.iter().find(|r| r.entry.event == "collect").unwrap();
    assert_eq!((forbidden.entry.outcome.as_str(), forbidden.entry.actor.as_str()), ("refused (403)", "e2e tests"));
    assert_eq!(forbidden.entry.tenant_id.as_deref(), Some("default"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trail_is_read_by_the_cli_and_the_admin_api_per_tenant() {
    let server = TestServer::start().await;
    let machine = server.seed_machine("trail.example").await;
    let created: Value = server.collect(&machine, &server.token(ALL)).await.json().await.unwrap();
    let other = server.seed_machine("other-tenant.example").await;
    let _ = server.collect(&other, &server.token_for("other", ALL)).await;

    let out = tokio::task::block_in_place(|| {
        crate::cli::casefile()
            .args(["audit", "--tenant", "default", "--event", "collect", "--json", "--data-dir"])
            .arg(server.dir.path().join("data"))
            .output()
            .unwrap()
    });
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["target"], created["id"]);
    assert_eq!(lines[0]["actor"], "e2e tests");
    assert_eq!(lines[0]["detail"]["comment"], "e2e collection");

    let admin = server.token(&["Casefile.Admin"]);
    let page: Value = server.get("/api/admin/audit?event=collect&top=10", &admin).await.json().await.unwrap();
    let entries = page["value"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "only the caller's tenant: {page}");
    assert_eq!(entries[0]["tenantId"], "default");
    let (status, _) = error_of(server.get("/api/admin/audit", &server.token(ALL)).await).await;
    assert_eq!(status, 403, "reading the trail takes Casefile.Admin");
    let (status, error) = error_of(server.get("/api/admin/audit?since=yesterday", &admin).await).await;
    assert_eq!((status, error["code"].as_str().unwrap()), (400, "InvalidInput"));
}

#[tokio::test]
async fn token_requests_are_audited_granted_or_refused() {
    let server = TestServer::start().await;
    let admin = server.token(&["Casefile.Admin"]);
    let created: Value = server
        .post_json("/api/admin/applications", &admin, &serde_json::json!({"name": "SOAR", "roles": [READ]}))
        .await
        .json()
        .await
        .unwrap();
    let client_id = created["client_id"].as_str().unwrap();
    // Every value here is form-safe as it is (a GUID, a base64url secret, a URL).
    let request = |secret: &str| {
        let body = format!(
            "grant_type=client_credentials&client_id={client_id}&client_secret={secret}\
             &scope=https://api.securitycenter.microsoft.com/.default"
        );
        server
            .http
            .post(format!("{}/default/oauth2/v2.0/token", server.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
    };
    assert_eq!(request("wrong").await.unwrap().status(), 401);
    assert_eq!(request(created["client_secret"].as_str().unwrap()).await.unwrap().status(), 200);

    let filter = casefile_store::AuditFilter { event: Some("token.issue".into()), limit: 10, ..Default::default() };
    let trail = server.server().state().store.audit(&filter).await.unwrap();
    let outcomes: Vec<(&str, &str, Option<&str>)> = trail
        .iter()
        .map(|r| (r.entry.outcome.as_str(), r.entry.actor.as_str(), r.entry.tenant_id.as_deref()))
        .collect();
    assert_eq!(outcomes, [("refused (401)", client_id, Some("default")), ("ok", client_id, Some("default"))]);
}

#[tokio::test]
async fn another_tenant_learns_nothing_through_a_filter() {
    let server = TestServer::start().await;
    let machine = server.seed_machine("tenant-a.example").await;
    let created: Value = server.collect(&machine, &server.token(ALL)).await.json().await.unwrap();
    let other = server.token_for("other", ALL);
    for query in [
        format!("$filter=machineId eq '{machine}'&$count=true"),
        format!("$filter=id eq {}&$count=true", created["id"].as_str().unwrap()),
    ] {
        let page: Value = server.get(&format!("/api/machineactions?{query}"), &other).await.json().await.unwrap();
        assert_eq!((page["@odata.count"].as_u64(), page["value"].as_array().unwrap().len()), (Some(0), 0), "{query}");
    }
    let machines: Value =
        server.get("/api/machines?$filter=startswith(computerDnsName,'tenant-a')", &other).await.json().await.unwrap();
    assert!(machines["value"].as_array().unwrap().is_empty());
}
