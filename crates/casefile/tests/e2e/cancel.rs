//! `POST /api/machineactions/{id}/cancel`: a pending action ends at once; a running
//! collection is stopped on the agent, which confirms, and nothing of it is kept.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use casefile_collectors::{CollectError, Collector, Context};
use casefile_package::{ItemOutcome, ItemSink};
use casefile_proto::ActionStatus;
use serde_json::{Value, json};

use crate::support::*;

#[tokio::test]
async fn a_pending_action_is_cancelled_at_once() {
    let server = TestServer::start().await;
    let machine = server.seed_machine("idle.example").await;
    let created: Value = server.collect(&machine, &server.token(ALL)).await.json().await.unwrap();
    let id = created["id"].as_str().unwrap().to_owned();

    let canceller = server.token_as("SOAR playbook", &["Machine.Isolate"]);
    let response = server
        .post_json(&format!("/api/machineactions/{id}/cancel"), &canceller, &json!({"Comment": "not needed"}))
        .await;
    assert_eq!(response.status(), 200);
    let cancelled: Value = response.json().await.unwrap();
    assert_eq!(cancelled["status"], "Cancelled");
    assert_eq!(cancelled["cancellationRequestor"], "SOAR playbook");
    assert_eq!(cancelled["cancellationComment"], "not needed");
    assert_eq!(cancelled["cancellationDateTimeUtc"], cancelled["lastUpdateDateTimeUtc"]);
    assert!(cancelled["lastUpdateDateTimeUtc"].as_str() > created["lastUpdateDateTimeUtc"].as_str());

    // A final action cannot be cancelled again.
    let (status, error) =
        error_of(server.post_json(&format!("/api/machineactions/{id}/cancel"), &canceller, &json!({})).await).await;
    assert_eq!((status, error["code"].as_str().unwrap()), (400, "BadRequest"));
    assert!(error["message"].as_str().unwrap().contains("Cancelled"), "{error}");

    // The machine is free for a new collection; a cancel without any body works too.
    let again: Value = server.collect(&machine, &server.token(ALL)).await.json().await.unwrap();
    let response = server
        .http
        .post(format!("{}/api/machineactions/{}/Cancel", server.base, again["id"].as_str().unwrap()))
        .bearer_auth(server.token(&[COLLECT]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let cancelled: Value = response.json().await.unwrap();
    assert_eq!((cancelled["status"].as_str(), cancelled["cancellationComment"].as_str()), (Some("Cancelled"), None));
}

#[tokio::test]
async fn cancel_checks_ids_permissions_and_bodies() {
    let server = TestServer::start().await;
    let machine = server.seed_machine("checks.example").await;
    let created: Value = server.collect(&machine, &server.token(ALL)).await.json().await.unwrap();
    let id = created["id"].as_str().unwrap();
    let path = format!("/api/machineactions/{id}/cancel");

    let (status, error) = error_of(server.post_json(&path, &server.token(&[READ]), &json!({})).await).await;
    assert_eq!((status, error["code"].as_str().unwrap()), (403, "Forbidden"));
    assert!(error["message"].as_str().unwrap().contains("Machine.CollectForensics"));

    let unknown = format!("/api/machineactions/{}/cancel", uuid::Uuid::new_v4());
    let (status, _) = error_of(server.post_json(&unknown, &server.token(ALL), &json!({})).await).await;
    assert_eq!(status, 404);
    let (status, error) =
        error_of(server.post_json("/api/machineactions/not-a-guid/cancel", &server.token(ALL), &json!({})).await).await;
    assert_eq!((status, error["code"].as_str().unwrap()), (400, "BadRequest"));
    let (status, error) = error_of(server.post_json(&path, &server.token(ALL), &json!({"Comment": 7})).await).await;
    assert_eq!((status, error["code"].as_str().unwrap()), (400, "InvalidRequestBody"));

    // Another tenant cannot see it, let alone cancel it.
    let (status, _) = error_of(server.post_json(&path, &server.token_for("other", ALL), &json!({})).await).await;
    assert_eq!(status, 404);
    assert_eq!(server.action(id).await.status, ActionStatus::Pending);
}

/// A collector that blocks until its collection is cancelled, and says when it started
/// and whether it saw the cancellation.
struct Gate {
    started: Arc<tokio::sync::Notify>,
    stopped: Arc<AtomicBool>,
}

impl Collector for Gate {
    fn name(&self) -> &'static str {
        "gate"
    }

    fn folder(&self) -> &'static str {
        "Gate"
    }

    fn collect(&self, ctx: &Context, sink: &mut dyn ItemSink) -> Result<(), CollectError> {
        sink.file("started.txt", "test", |w| w.write_all(b"collecting").map(|()| ItemOutcome::ok()))?;
        self.started.notify_one();
        // Collectors run on plain threads: wait for the cancellation on a runtime of its own.
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(ctx.cancel.cancelled());
        self.stopped.store(true, Ordering::SeqCst);
        Err(CollectError::Cancelled)
    }
}

#[tokio::test]
async fn a_running_collection_is_stopped_on_the_agent_and_nothing_is_kept() {
    let server = TestServer::start().await;
    let started = Arc::new(tokio::sync::Notify::new());
    let stopped = Arc::new(AtomicBool::new(false));
    let gate = Gate { started: started.clone(), stopped: stopped.clone() };
    let state_dir = server.dir.path().join("agent-gated");
    let mut agent = server
        .start_agent_with("gated", state_dir.clone(), Some(server.enroll_token().await), |config| {
            config.collectors = Some(casefile_agent::Collectors(Arc::new(vec![Box::new(gate)])));
        })
        .await;
    let token = server.token(ALL);
    let created: Value = server.collect(&agent.identity.machine_id, &token).await.json().await.unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    started.notified().await;
    assert_eq!(server.action(&id).await.status, ActionStatus::InProgress);

    let response =
        server.post_json(&format!("/api/machineactions/{id}/cancel"), &token, &json!({"Comment": "wrong host"})).await;
    assert_eq!(response.status(), 200);
    let requested: Value = response.json().await.unwrap();
    // Until the agent confirms, the action runs on, marked with who asked to stop it.
    assert_eq!(requested["cancellationRequestor"], "e2e tests");
    assert_eq!(requested["cancellationComment"], "wrong host");

    let done = server.wait_final(&id).await;
    assert_eq!(done.status, ActionStatus::Cancelled, "{:?}", done.troubleshoot_info);
    assert_eq!(done.cancellation_comment.as_deref(), Some("wrong host"));
    assert!(done.cancellation_date_time_utc.is_some());
    assert!(stopped.load(Ordering::SeqCst), "the collector saw the cancellation and returned");

    let (status, _) = error_of(server.get(&format!("/api/machineactions/{id}/getPackageUri"), &token).await).await;
    assert_eq!(status, 404);
    let stored = std::fs::read_dir(server.dir.path().join("data/packages")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(stored, 0, "no package reached storage");
    let left = std::fs::read_dir(state_dir.join("work")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(left, 0, "the agent removed its partial package");
    agent.stop().await;
}
