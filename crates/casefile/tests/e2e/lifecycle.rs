//! Lifecycle windows, checked exactly on a server whose clock the test moves: nothing
//! waits forever (pending and running actions time out) and nothing is kept forever
//! (packages are deleted after their retention).

use std::time::Duration;

use casefile_proto::ActionStatus;
use serde_json::Value;

use crate::support::*;

const DAY: Duration = Duration::from_secs(24 * 3600);

#[tokio::test]
async fn a_pending_action_no_agent_takes_times_out_after_three_days() {
    let server = TestServer::start_with_clock(|_| {}).await;
    let machine = server.seed_machine("offline.example").await;
    let created: Value = server.collect(&machine, &server.token(ALL)).await.json().await.unwrap();
    let id = created["id"].as_str().unwrap().to_owned();

    server.advance(3 * DAY - Duration::from_secs(1));
    server.server().sweep_now().await.unwrap();
    assert_eq!(server.action(&id).await.status, ActionStatus::Pending, "one second before the window ends");

    server.advance(Duration::from_secs(2));
    server.server().sweep_now().await.unwrap();
    let action = server.action(&id).await;
    assert_eq!(action.status, ActionStatus::TimeOut);
    assert!(action.troubleshoot_info.unwrap().contains("No agent picked up"));
    assert!(action.error_h_result != 0);
    assert!(action.last_update_date_time_utc > action.creation_date_time_utc);
    // Final is final: a late cancel is refused.
    let (status, _) = error_of(
        server.post_json(&format!("/api/machineactions/{id}/cancel"), &server.token(ALL), &serde_json::json!({})).await,
    )
    .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn packages_are_deleted_after_their_retention_and_links_then_refuse() {
    let server = TestServer::start_with_clock(|c| c.packages.retention_seconds = 30 * 24 * 3600).await;
    let Collected { mut agent, token, id, url } = server.succeeded_collection("retained").await;
    agent.stop().await;
    let package = server
        .server()
        .state()
        .store
        .package(&casefile_proto::TenantId::default_tenant(), id.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    let file = server.dir.path().join("data/packages").join(&package.blob_key);
    assert!(file.exists());

    server.advance(30 * DAY - Duration::from_secs(1));
    server.server().sweep_now().await.unwrap();
    assert!(file.exists(), "kept until the retention ends");

    server.advance(Duration::from_secs(2));
    server.server().sweep_now().await.unwrap();
    assert!(!file.exists(), "the bytes are gone");
    let (status, error) = error_of(server.get(&format!("/api/machineactions/{id}/getPackageUri"), &token).await).await;
    assert_eq!((status, error["code"].as_str().unwrap()), (404, "ResourceNotFound"));
    assert!(error["message"].as_str().unwrap().contains("retention period (30 days)"), "{error}");
    let (status, _) = error_of(server.http.get(&url).send().await.unwrap()).await;
    assert_eq!(status, 404, "a link issued before the deletion no longer works");
    // The action keeps its history.
    assert_eq!(server.action(&id).await.status, ActionStatus::Succeeded);
}
