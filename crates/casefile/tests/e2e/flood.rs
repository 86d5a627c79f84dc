//! Floods from outside (issue 9, item 15): refused calls stay visible but cost one audit
//! row per source and minute and are limited per source; the token endpoint is limited
//! per source and per client id, and a real client still gets its token.

use std::net::IpAddr;
use std::time::Duration;

use casefile_store::AuditFilter;
use serde_json::{Value, json};

use crate::support::*;

/// A client of `server` whose requests come from `source` (any 127.x address reaches it).
fn client_from(server: &TestServer, source: &str) -> reqwest::Client {
    server.client_builder().local_address(source.parse::<IpAddr>().unwrap()).build().unwrap()
}

async fn refusals(server: &TestServer) -> Vec<casefile_store::AuditRecord> {
    let filter = AuditFilter { event: Some("access.refused".into()), limit: 10_000, ..Default::default() };
    server.server().state().store.audit(&filter).await.unwrap()
}

#[tokio::test]
async fn refused_calls_are_aggregated_per_source_and_minute_and_limited() {
    let server = TestServer::start_with_clock(|c| {
        c.rate_limits.enabled = true;
        c.rate_limits.refusals_per_source_per_minute = 20;
    })
    .await;
    let outsider = client_from(&server, "127.0.0.2");
    // A 10 KB id: what the trail keeps of it is capped.
    let path = format!("{}/api/machines/{}", server.base, "a".repeat(10_000));
    let mut statuses = Vec::new();
    for _ in 0..100 {
        let response = outsider.get(&path).bearer_auth("not-a-token").send().await.unwrap();
        if response.status() == 429 {
            let wait: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
            assert!((1..=60).contains(&wait), "{wait}");
        }
        statuses.push(response.status().as_u16());
    }
    assert!(statuses[..20].iter().all(|s| *s == 401), "{statuses:?}");
    assert!(statuses[20..].iter().all(|s| *s == 429), "past the quota the source waits: {statuses:?}");
    // Another source is not held back by this one.
    let token = server.token(ALL);
    assert_eq!(server.get("/api/machines", &token).await.status(), 200);

    let written = refusals(&server).await;
    assert_eq!(written.len(), 1, "one row at once for the source's first refusal: {written:?}");
    assert_eq!(written[0].entry.source_ip.as_deref(), Some("127.0.0.2"));
    assert!(written[0].entry.target.as_ref().unwrap().chars().count() <= 201, "targets are capped");

    // When the minute is over, one row counts the rest.
    server.advance(Duration::from_secs(61));
    casefile_server::audit::write_refusal_summaries(server.server().state(), false).await;
    let written = refusals(&server).await;
    assert_eq!(written.len(), 2, "{written:?}");
    assert_eq!(written[1].entry.detail.as_ref().unwrap()["aggregated"], 99);
    assert_eq!(written[1].entry.source_ip.as_deref(), Some("127.0.0.2"));
    // A new minute: the source may try again.
    assert_eq!(outsider.get(&path).bearer_auth("not-a-token").send().await.unwrap().status(), 401);
}

fn token_form(client_id: &str, secret: &str) -> String {
    format!(
        "grant_type=client_credentials&client_id={client_id}&client_secret={secret}\
         &scope=https%3A%2F%2Fapi.securitycenter.microsoft.com%2F.default"
    )
}

async fn request_token(http: &reqwest::Client, base: &str, client_id: &str, secret: &str) -> reqwest::Response {
    http.post(format!("{base}/default/oauth2/v2.0/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(token_form(client_id, secret))
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_client_gets_its_token_while_an_outsider_floods_the_token_endpoint() {
    let server = TestServer::start_with_clock(|c| c.rate_limits.enabled = true).await;
    let admin = server.token(&["Casefile.Admin"]);
    let app: Value = server
        .post_json("/api/admin/applications", &admin, &json!({"name": "playbook", "roles": [READ]}))
        .await
        .json()
        .await
        .unwrap();
    let (client_id, secret) = (app["client_id"].as_str().unwrap(), app["client_secret"].as_str().unwrap());

    let outsider = client_from(&server, "127.0.0.2");
    let mut flood = tokio::task::JoinSet::new();
    for _ in 0..300 {
        let (http, base) = (outsider.clone(), server.base.clone());
        flood.spawn(async move {
            let response = request_token(&http, &base, &uuid::Uuid::new_v4().to_string(), "guess").await;
            response.status().as_u16()
        });
    }
    let real = request_token(&server.http, &server.base, client_id, secret).await;
    assert_eq!(real.status(), 200, "{}", real.text().await.unwrap());
    let mut statuses = Vec::new();
    while let Some(status) = flood.join_next().await {
        statuses.push(status.unwrap());
    }
    let throttled = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(throttled, 240, "60 tries a minute from one source, the rest refused unchecked: {statuses:?}");
    assert!(statuses.iter().all(|s| matches!(s, 401 | 429)));

    // The flood left a handful of rows, not one per request.
    let filter = AuditFilter { limit: 10_000, ..Default::default() };
    let trail = server.server().state().store.audit(&filter).await.unwrap();
    let from_outsider = trail.iter().filter(|r| r.entry.source_ip.as_deref() == Some("127.0.0.2")).count();
    assert_eq!(from_outsider, 1, "{trail:#?}");
}

#[tokio::test]
async fn one_client_id_is_limited_whatever_the_source() {
    let server = TestServer::start_with_clock(|c| {
        c.rate_limits.enabled = true;
        c.rate_limits.token_requests_per_client_per_minute = 5;
    })
    .await;
    let target = uuid::Uuid::new_v4().to_string();
    for i in 0..5 {
        let http = client_from(&server, &format!("127.0.1.{}", i + 1));
        assert_eq!(request_token(&http, &server.base, &target, "guess").await.status(), 401);
    }
    let response = request_token(&client_from(&server, "127.0.1.9"), &server.base, &target, "guess").await;
    assert_eq!(response.status(), 429);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "temporarily_unavailable", "Entra's error shape: {body}");
    // Another client id from the same source is not affected.
    let (again, other_id) = (client_from(&server, "127.0.1.9"), uuid::Uuid::new_v4().to_string());
    assert_eq!(request_token(&again, &server.base, &other_id, "x").await.status(), 401);
}
