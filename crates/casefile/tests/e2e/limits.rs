//! Call quotas at their exact boundaries, on a server whose clock the test moves: the
//! call over the limit gets `429` with an honest `Retry-After`, and the call made after
//! waiting that long gets through.

use std::time::Duration;

use casefile_server::config::Quota;

use crate::support::*;

/// `Retry-After` of a 429 in the API's error shape.
async fn throttled(response: reqwest::Response) -> u64 {
    let retry_after = response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
    let (status, error) = error_of(response).await;
    assert_eq!((status, error["code"].as_str().unwrap()), (429, "TooManyRequests"));
    retry_after.expect("Retry-After header").parse().expect("Retry-After in whole seconds")
}

#[tokio::test]
async fn the_101st_call_in_a_minute_is_throttled_until_retry_after() {
    let server = TestServer::start_with_clock(|c| c.rate_limits.enabled = true).await;
    let token = server.token(ALL);
    for call in 1..=100 {
        assert_eq!(server.get("/api/machineactions", &token).await.status(), 200, "call {call}");
    }
    let wait = throttled(server.get("/api/machineactions", &token).await).await;
    assert_eq!(wait, 60);
    // Other APIs and other applications have their own quotas.
    assert_eq!(server.get("/api/machines", &token).await.status(), 200);
    assert_eq!(server.get("/api/machineactions", &server.token_as("other app", ALL)).await.status(), 200);

    server.advance(Duration::from_secs(wait - 1));
    assert_eq!(throttled(server.get("/api/machineactions", &token).await).await, 1);
    server.advance(Duration::from_secs(1));
    assert_eq!(server.get("/api/machineactions", &token).await.status(), 200);
}

#[tokio::test]
async fn get_package_uri_allows_two_calls_a_minute_and_refused_calls_count() {
    let server = TestServer::start_with_clock(|c| c.rate_limits.enabled = true).await;
    let token = server.token(ALL);
    let path = format!("/api/machineactions/{}/getPackageUri", uuid::Uuid::new_v4());
    for _ in 0..2 {
        assert_eq!(server.get(&path, &token).await.status(), 404);
    }
    let wait = throttled(server.get(&path, &token).await).await;
    server.advance(Duration::from_secs(wait));
    assert_eq!(server.get(&path, &token).await.status(), 404, "through to the handler again");
}

#[tokio::test]
async fn the_hourly_quota_holds_across_minutes() {
    let server = TestServer::start_with_clock(|c| {
        c.rate_limits.enabled = true;
        c.rate_limits.apis.insert("ListMachines".into(), Quota { per_minute: 5, per_hour: 7 });
    })
    .await;
    let token = server.token(ALL);
    for _ in 0..5 {
        assert_eq!(server.get("/api/machines", &token).await.status(), 200);
    }
    let wait = throttled(server.get("/api/machines", &token).await).await;
    assert_eq!(wait, 60);
    server.advance(Duration::from_secs(60));
    assert_eq!(server.get("/api/machines", &token).await.status(), 200, "7th call of the hour (the 6th was refused)");
    let wait = throttled(server.get("/api/machines", &token).await).await;
    assert_eq!(wait, 3600 - 60, "the hour's quota is spent: wait for the hour to end");
    server.advance(Duration::from_secs(wait));
    assert_eq!(server.get("/api/machines", &token).await.status(), 200);
}

#[tokio::test]
async fn a_quota_for_an_unknown_api_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = casefile_server::ServerConfig { data_dir: dir.path().join("data"), ..Default::default() };
    config.rate_limits.apis.insert("GetPackageURL".into(), Quota { per_minute: 1, per_hour: 1 });
    let error = casefile_server::Server::open(config).await.err().expect("refused");
    assert!(error.to_string().contains("GetPackageURL"), "{error}");
}
