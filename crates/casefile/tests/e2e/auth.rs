//! Tokens and permissions on the public API.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

use crate::support::*;

async fn code_of(server: &TestServer, token: &str) -> (u16, String) {
    let (status, error) = error_of(server.get("/api/machineactions", token).await).await;
    (status, error["message"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn requests_without_a_valid_token_are_401() {
    let server = TestServer::start().await;

    let response = server.http.get(format!("{}/api/machineactions", server.base)).send().await.unwrap();
    assert!(response.headers()["www-authenticate"].to_str().unwrap().starts_with("Bearer"));
    let (status, error) = error_of(response).await;
    assert_eq!((status, error["code"].as_str().unwrap()), (401, "Unauthorized"));

    // Bad signature: a valid token with its signature replaced by another token's.
    let good = server.token(ALL);
    let other = server.token(&[READ]);
    let signed_part = good.rsplit_once('.').unwrap().0;
    let other_signature = other.rsplit_once('.').unwrap().1;
    let forged = format!("{signed_part}.{other_signature}");
    let (status, message) = code_of(&server, &forged).await;
    assert_eq!(status, 401);
    assert!(message.contains("signature"), "{message}");

    let mut claims = server.claims(ALL);
    claims.exp = chrono::Utc::now().timestamp() - 3600;
    let (status, message) = code_of(&server, &server.sign(&claims)).await;
    assert_eq!(status, 401);
    assert!(message.contains("expired"), "{message}");

    let mut claims = server.claims(ALL);
    claims.nbf = chrono::Utc::now().timestamp() + 3600;
    let (status, message) = code_of(&server, &server.sign(&claims)).await;
    assert_eq!(status, 401);
    assert!(message.contains("not valid yet"), "{message}");

    let mut claims = server.claims(ALL);
    claims.aud = "https://graph.microsoft.com".into();
    let (status, message) = code_of(&server, &server.sign(&claims)).await;
    assert_eq!(status, 401);
    assert!(message.contains("audience"), "{message}");

    let mut claims = server.claims(ALL);
    claims.iss = "https://sts.windows.net/someone-else/".into();
    let (status, message) = code_of(&server, &server.sign(&claims)).await;
    assert_eq!(status, 401);
    assert!(message.contains("issuer"), "{message}");

    // alg "none": the claims are fine, the signature is absent.
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&server.claims(ALL)).unwrap());
    let (status, _) = code_of(&server, &format!("{header}.{payload}.")).await;
    assert_eq!(status, 401);

    let (status, _) = code_of(&server, "not-a-jwt").await;
    assert_eq!(status, 401);

    // Every MDE audience is accepted.
    let mut claims = server.claims(ALL);
    claims.aud = "https://api.securitycenter.windows.com".into();
    assert_eq!(server.get("/api/machineactions", &server.sign(&claims)).await.status(), 200);
}

#[tokio::test]
async fn each_api_needs_its_permission() {
    let server = TestServer::start().await;
    let mut agent = server.start_agent("host-perm").await;
    agent.stop().await;
    let machine = agent.identity.machine_id.clone();

    // Reading does not allow collecting.
    let (status, error) = error_of(server.collect(&machine, &server.token(&[READ])).await).await;
    assert_eq!((status, error["code"].as_str().unwrap()), (403, "Forbidden"));
    assert!(error["message"].as_str().unwrap().contains("Machine.CollectForensics"));

    // Collecting does not allow reading.
    let collector = server.token(&[COLLECT]);
    let created = server.collect(&machine, &collector).await;
    assert_eq!(created.status(), 201);
    let id = created.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    for path in [
        "/api/machines".to_owned(),
        format!("/api/machines/{machine}"),
        "/api/machineactions".to_owned(),
        format!("/api/machineactions/{id}"),
        format!("/api/machineactions/{id}/getPackageUri"),
    ] {
        let (status, error) = error_of(server.get(&path, &collector).await).await;
        assert_eq!((status, error["code"].as_str().unwrap()), (403, "Forbidden"), "{path}");
    }
    // ReadWrite reads too.
    assert_eq!(
        server.get(&format!("/api/machineactions/{id}"), &server.token(&["Machine.ReadWrite.All"])).await.status(),
        200
    );
}

#[tokio::test]
async fn tenants_do_not_see_each_other() {
    let server = TestServer::start().await;
    let mut agent = server.start_agent("host-tenant").await;
    agent.stop().await;
    let created: Value = server.collect(&agent.identity.machine_id, &server.token(ALL)).await.json().await.unwrap();
    let id = created["id"].as_str().unwrap();

    let other = server.token_for("other-tenant", ALL);
    assert_eq!(server.get(&format!("/api/machineactions/{id}"), &other).await.status(), 404);
    assert_eq!(server.get(&format!("/api/machines/{}", agent.identity.machine_id), &other).await.status(), 404);
    let (status, _) = error_of(server.collect(&agent.identity.machine_id, &other).await).await;
    assert_eq!(status, 404);
    let machines: Value = server.get("/api/machines", &other).await.json().await.unwrap();
    assert_eq!(machines["value"].as_array().unwrap().len(), 0);
    let actions: Value = server.get("/api/machineactions", &other).await.json().await.unwrap();
    assert_eq!(actions["value"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn jwks_publishes_the_signing_key() {
    let server = TestServer::start().await;
    let jwks: Value =
        server.http.get(format!("{}/.well-known/jwks.json", server.base)).send().await.unwrap().json().await.unwrap();
    let key = &jwks["keys"][0];
    assert_eq!(key["kty"], "OKP");
    assert_eq!(key["crv"], "Ed25519");
    let token = server.token(ALL);
    let header: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(token.split('.').next().unwrap()).unwrap()).unwrap();
    assert_eq!(header["kid"], key["kid"]);
    assert_eq!(header["alg"], "EdDSA");
}
