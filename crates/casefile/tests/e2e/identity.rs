//! Applications and tokens: registrations made with the CLI and the admin API, the token
//! endpoint in Entra's v2 and v1 shapes and its OAuth2 errors, discovery, signing-key
//! rotation on a running server, and delegated (user) tokens.

use std::path::Path;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::Response;
use serde_json::{Value, json};

use crate::cli::casefile;
use crate::support::*;

const AUDIENCE: &str = "https://api.securitycenter.microsoft.com";
const ADMIN: &str = "Casefile.Admin";

/// `application/x-www-form-urlencoded`, as HTTP clients encode a form.
fn form(pairs: &[(&str, &str)]) -> String {
    let encode = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
                b' ' => "+".to_owned(),
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    pairs.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect::<Vec<_>>().join("&")
}

async fn post_form(server: &TestServer, path: &str, pairs: &[(&str, &str)]) -> Response {
    server
        .http
        .post(format!("{}{path}", server.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(pairs))
        .send()
        .await
        .unwrap()
}

/// A v2 client-credentials request, as the MDE PowerShell and C# samples send it.
async fn request_v2(server: &TestServer, tenant: &str, client_id: &str, secret: &str) -> Response {
    let scope = format!("{AUDIENCE}/.default");
    let pairs = [
        ("grant_type", "client_credentials"),
        ("client_id", client_id),
        ("client_secret", secret),
        ("scope", scope.as_str()),
    ];
    post_form(server, &format!("/{tenant}/oauth2/v2.0/token"), &pairs).await
}

/// A v1 request (`resource=`), as PSMDATP and the SOAR connectors send it.
async fn request_v1(server: &TestServer, tenant: &str, client_id: &str, secret: &str) -> Response {
    let pairs = [
        ("grant_type", "client_credentials"),
        ("client_id", client_id),
        ("client_secret", secret),
        ("resource", "https://api.securitycenter.windows.com"),
    ];
    post_form(server, &format!("/{tenant}/oauth2/token"), &pairs).await
}

/// A v2 access token for the application; panics with the error body otherwise.
async fn token_of(server: &TestServer, tenant: &str, client_id: &str, secret: &str) -> String {
    let response = request_v2(server, tenant, client_id, secret).await;
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().unwrap().to_owned()
}

fn segment(token: &str, index: usize) -> Value {
    let part = token.split('.').nth(index).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

fn claims_of(token: &str) -> Value {
    segment(token, 1)
}

fn kid_of(token: &str) -> String {
    segment(token, 0)["kid"].as_str().unwrap().to_owned()
}

/// An OAuth2 error answer, checked for Entra's shape; returns its status and body.
pub(crate) async fn oauth_error(response: Response) -> (u16, Value) {
    let status = response.status().as_u16();
    assert_eq!(response.headers()["content-type"], "application/json; charset=utf-8");
    assert!(response.headers()["cache-control"].to_str().unwrap().contains("no-store"));
    let body: Value = response.json().await.unwrap();
    let code = body["error_codes"][0].as_u64().unwrap();
    let description = body["error_description"].as_str().unwrap();
    assert!(description.starts_with(&format!("AADSTS{code}: ")), "{body}");
    for field in ["error", "timestamp", "trace_id", "correlation_id"] {
        assert!(body[field].as_str().is_some_and(|v| !v.is_empty()), "{field} in {body}");
    }
    assert!(description.contains(&format!("Correlation ID: {}", body["correlation_id"].as_str().unwrap())));
    (status, body)
}

/// Asserts an OAuth2 error's status, `error` and first AADSTS code.
pub(crate) async fn assert_oauth_error(response: Response, status: u16, error: &str, code: u64) -> Value {
    let (got, body) = oauth_error(response).await;
    assert_eq!((got, body["error"].as_str().unwrap(), body["error_codes"][0].as_u64().unwrap()), (status, error, code));
    body
}

/// Runs `casefile ARGS --data-dir DIR`; returns stdout, or panics with stderr.
fn cli(data_dir: &Path, args: &[&str]) -> String {
    let out = casefile().args(args).arg("--data-dir").arg(data_dir).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Registers an application with `casefile app create --json`; returns (client id, secret).
pub(crate) fn cli_app(server: &TestServer, tenant: &str, name: &str, roles: &str) -> (String, String) {
    let out =
        cli(&data_dir(server), &["app", "create", "--json", "--tenant", tenant, "--name", name, "--roles", roles]);
    let created: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(created.as_object().unwrap().len(), 2, "{created}");
    (created["client_id"].as_str().unwrap().to_owned(), created["client_secret"].as_str().unwrap().to_owned())
}

pub(crate) fn data_dir(server: &TestServer) -> std::path::PathBuf {
    server.dir.path().join("data")
}

#[tokio::test]
async fn cli_and_admin_api_apps_get_v2_and_v1_tokens_that_work() {
    let server = TestServer::start().await;
    let (client_id, secret) = cli_app(&server, "default", "SOAR playbook", &format!("{READ},{ADMIN}"));
    assert!(secret.starts_with("cfs_"), "{secret}");
    uuid::Uuid::parse_str(&client_id).unwrap();

    // v2: numbers, Entra's keys, a token for the requested audience.
    let response = request_v2(&server, "default", &client_id, &secret).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()["cache-control"].to_str().unwrap().contains("no-store"));
    let v2: Value = response.json().await.unwrap();
    assert_eq!(v2["token_type"], "Bearer");
    assert_eq!((v2["expires_in"].as_u64(), v2["ext_expires_in"].as_u64()), (Some(3599), Some(3599)));
    let mut keys: Vec<_> = v2.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(keys, ["access_token", "expires_in", "ext_expires_in", "token_type"]);
    let token = v2["access_token"].as_str().unwrap();
    let claims = claims_of(token);
    assert_eq!(claims["aud"], AUDIENCE);
    // issue 9: the issuer is URL-shaped on the public URL (msal's OIDC-authority mode).
    assert_eq!(claims["iss"], server.base.as_str());
    assert_eq!(claims["tid"], "default");
    assert_eq!(claims["appid"], client_id.as_str());
    assert_eq!(claims["azp"], client_id.as_str());
    assert_eq!(claims["oid"], client_id.as_str());
    assert_eq!(claims["sub"], client_id.as_str());
    assert_eq!(claims["app_displayname"], "SOAR playbook");
    assert_eq!(claims["roles"], json!([READ, ADMIN]));
    assert_eq!(claims["ver"], "2.0");
    assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 3600);
    assert!(claims.get("scp").is_none());
    assert_eq!(server.get("/api/machineactions", token).await.status(), 200);

    // v1: every number a string, with expires_on, not_before and resource.
    let v1: Value = request_v1(&server, "default", &client_id, &secret).await.json().await.unwrap();
    assert_eq!(v1["token_type"], "Bearer");
    assert_eq!((v1["expires_in"].as_str(), v1["ext_expires_in"].as_str()), (Some("3599"), Some("3599")));
    assert_eq!(v1["resource"], "https://api.securitycenter.windows.com");
    let token_v1 = v1["access_token"].as_str().unwrap();
    let claims = claims_of(token_v1);
    assert_eq!(claims["ver"], "1.0");
    assert!(claims.get("azp").is_none());
    assert_eq!(claims["aud"], "https://api.securitycenter.windows.com");
    assert_eq!(v1["expires_on"].as_str().unwrap(), claims["exp"].to_string());
    assert_eq!(v1["not_before"].as_str().unwrap(), claims["nbf"].to_string());
    assert_eq!(server.get("/api/machineactions", token_v1).await.status(), 200);

    // The tenant in the path is matched without letter case; the token's tid is the app's.
    assert_eq!(claims_of(&token_of(&server, "DEFAULT", &client_id, &secret).await)["tid"], "default");
    // client_secret_basic works as well as client_secret_post.
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{client_id}:{secret}"));
    let response = server
        .http
        .post(format!("{}/default/oauth2/v2.0/token", server.base))
        .header("authorization", format!("Basic {basic}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[("grant_type", "client_credentials"), ("scope", "fc780465-2017-40d4-a0c5-307022471b92/.default")]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // The admin API registers applications too; the secret is in the answer once.
    let created = server
        .post_json("/api/admin/applications", token, &json!({"name": "Sentinel", "roles": [COLLECT, READ]}))
        .await;
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.unwrap();
    assert_eq!((created["name"].as_str(), created["enabled"].as_bool()), (Some("Sentinel"), Some(true)));
    assert_eq!(created["roles"], json!([COLLECT, READ]));
    let sentinel = created["client_id"].as_str().unwrap();
    let sentinel_token = token_of(&server, "default", sentinel, created["client_secret"].as_str().unwrap()).await;
    assert_eq!(server.get("/api/machineactions", &sentinel_token).await.status(), 200);

    // The list shows both, by name, and never a secret.
    let listed: Value = server.get("/api/admin/applications", token).await.json().await.unwrap();
    let names: Vec<_> = listed["value"].as_array().unwrap().iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["Sentinel", "SOAR playbook"]);
    assert!(!listed.to_string().contains("cfs_"), "{listed}");
    let cli_list: Value = serde_json::from_str(&cli(&data_dir(&server), &["app", "list", "--json"])).unwrap();
    assert_eq!(cli_list, listed);
    let one: Value = server.get(&format!("/api/admin/applications/{sentinel}"), token).await.json().await.unwrap();
    assert_eq!(one["name"], "Sentinel");
}

#[tokio::test]
async fn the_token_endpoint_fails_in_entra_shapes() {
    let server = TestServer::start().await;
    let (client_id, secret) = cli_app(&server, "default", "playbook", READ);
    let (other_id, other_secret) = cli_app(&server, "other", "elsewhere", READ);

    // Wrong secret, unknown client, another tenant's client: one answer, no enumeration.
    let wrong_secret = assert_oauth_error(
        request_v2(&server, "default", &client_id, "cfs_wrong").await,
        401,
        "invalid_client",
        7000215,
    )
    .await;
    let unknown_id = uuid::Uuid::new_v4().to_string();
    let unknown =
        assert_oauth_error(request_v2(&server, "default", &unknown_id, &secret).await, 401, "invalid_client", 7000215)
            .await;
    let wrong_tenant = assert_oauth_error(
        request_v2(&server, "default", &other_id, &other_secret).await,
        401,
        "invalid_client",
        7000215,
    )
    .await;
    let message = |body: &Value, id: &str| {
        body["error_description"].as_str().unwrap().split("\r\n").next().unwrap().replace(id, "<client>")
    };
    assert_eq!(message(&wrong_secret, &client_id), message(&unknown, &unknown_id));
    assert_eq!(message(&wrong_secret, &client_id), message(&wrong_tenant, &other_id));
    assert!(message(&wrong_secret, &client_id).contains("Invalid client secret provided"));
    assert_oauth_error(request_v1(&server, "default", "not-a-guid", &secret).await, 401, "invalid_client", 7000215)
        .await;
    // ... and the right tenant takes the same client.
    token_of(&server, "other", &other_id, &other_secret).await;

    let base = [
        ("grant_type", "client_credentials"),
        ("client_id", client_id.as_str()),
        ("client_secret", secret.as_str()),
        ("scope", "https://api.securitycenter.microsoft.com/.default"),
    ];
    let without = |name: &str| base.iter().copied().filter(|(k, _)| *k != name).collect::<Vec<_>>();
    let replaced = |name: &str, value: &'static str| {
        base.iter().map(|&(k, v)| if k == name { (k, value) } else { (k, v) }).collect::<Vec<_>>()
    };
    let v2 = "/default/oauth2/v2.0/token";

    let body = assert_oauth_error(
        post_form(&server, v2, &replaced("grant_type", "authorization_code")).await,
        400,
        "unsupported_grant_type",
        70003,
    )
    .await;
    assert!(body["error_description"].as_str().unwrap().contains("'authorization_code'"));
    // The password grant is casefile's CLI's only (local users), not an application's.
    let body = assert_oauth_error(
        post_form(&server, v2, &replaced("grant_type", "password")).await,
        400,
        "unauthorized_client",
        700016,
    )
    .await;
    assert!(body["error_description"].as_str().unwrap().contains("casefile-cli"));
    for missing in ["grant_type", "client_id", "scope"] {
        let body =
            assert_oauth_error(post_form(&server, v2, &without(missing)).await, 400, "invalid_request", 900144).await;
        assert!(body["error_description"].as_str().unwrap().contains(&format!("'{missing}'")), "{body}");
    }
    assert_oauth_error(post_form(&server, v2, &without("client_secret")).await, 401, "invalid_client", 7000218).await;
    let v1_without_resource =
        [("grant_type", "client_credentials"), ("client_id", client_id.as_str()), ("client_secret", secret.as_str())];
    let body = assert_oauth_error(
        post_form(&server, "/default/oauth2/token", &v1_without_resource).await,
        400,
        "invalid_request",
        900144,
    )
    .await;
    assert!(body["error_description"].as_str().unwrap().contains("'resource'"));
    // A JSON body is no form: grant_type is missing, as Entra says.
    let json_body = server.http.post(format!("{}{v2}", server.base)).json(&json!({"grant_type": "client_credentials"}));
    assert_oauth_error(json_body.send().await.unwrap(), 400, "invalid_request", 900144).await;

    // Wrong audience: unknown resource (v2 and v1); a scope without /.default.
    assert_oauth_error(
        post_form(&server, v2, &replaced("scope", "https://graph.microsoft.com/.default")).await,
        400,
        "invalid_resource",
        500011,
    )
    .await;
    let mut v1_graph = without("scope");
    v1_graph.push(("resource", "https://graph.microsoft.com"));
    assert_oauth_error(post_form(&server, "/default/oauth2/token", &v1_graph).await, 400, "invalid_resource", 500011)
        .await;
    assert_oauth_error(
        post_form(&server, v2, &replaced("scope", "https://api.securitycenter.microsoft.com/Machine.Read.All")).await,
        400,
        "invalid_scope",
        1002012,
    )
    .await;

    // A disabled application is told so (only with the right secret), and may come back.
    cli(&data_dir(&server), &["app", "disable", "--client-id", &client_id]);
    let body = assert_oauth_error(post_form(&server, v2, &base).await, 400, "unauthorized_client", 7000112).await;
    assert!(body["error_description"].as_str().unwrap().contains("is disabled"));
    assert_oauth_error(request_v2(&server, "default", &client_id, "cfs_wrong").await, 401, "invalid_client", 7000215)
        .await;
    cli(&data_dir(&server), &["app", "enable", "--client-id", &client_id]);
    let again = post_form(&server, v2, &base).await;
    let status = again.status();
    assert_eq!(status, 200, "{}", again.text().await.unwrap());

    // A parameter sent twice is a malformed request.
    let mut twice = base.to_vec();
    twice.push(("client_id", "again"));
    assert_oauth_error(post_form(&server, v2, &twice).await, 400, "invalid_request", 9002313).await;
}

#[tokio::test]
async fn rotated_secrets_disabling_and_roles_apply_to_new_tokens() {
    let server = TestServer::start().await;
    let (admin_id, admin_secret) = cli_app(&server, "default", "admin", ADMIN);
    let admin = token_of(&server, "default", &admin_id, &admin_secret).await;
    let created: Value = server
        .post_json("/api/admin/applications", &admin, &json!({"name": "reader", "roles": [READ]}))
        .await
        .json()
        .await
        .unwrap();
    let id = created["client_id"].as_str().unwrap().to_owned();
    let old_secret = created["client_secret"].as_str().unwrap().to_owned();
    let old_token = token_of(&server, "default", &id, &old_secret).await;

    // Rotation over the API: the old secret fails at once, the new one works.
    let rotated = server.post_json(&format!("/api/admin/applications/{id}/rotateSecret"), &admin, &json!({})).await;
    assert_eq!(rotated.status(), 200);
    let rotated: Value = rotated.json().await.unwrap();
    let new_secret = rotated["client_secret"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, old_secret);
    assert!(rotated["secret_rotated_at"].is_string());
    assert_oauth_error(request_v2(&server, "default", &id, &old_secret).await, 401, "invalid_client", 7000215).await;
    token_of(&server, "default", &id, &new_secret).await;
    // And with the CLI.
    let out = cli(&data_dir(&server), &["app", "rotate-secret", "--json", "--client-id", &id]);
    let cli_secret = serde_json::from_str::<Value>(&out).unwrap()["client_secret"].as_str().unwrap().to_owned();
    assert_oauth_error(request_v2(&server, "default", &id, &new_secret).await, 401, "invalid_client", 7000215).await;
    token_of(&server, "default", &id, &cli_secret).await;

    // Roles: new tokens carry the new ones; a token already issued keeps what it said.
    let machine = server.seed_machine("roles-host").await;
    let (status, _) = error_of(server.collect(&machine, &old_token).await).await;
    assert_eq!(status, 403);
    let changed = server
        .http
        .put(format!("{}/api/admin/applications/{id}/roles", server.base))
        .bearer_auth(&admin)
        .json(&json!({"roles": [COLLECT, READ]}))
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), 200);
    assert_eq!(changed.json::<Value>().await.unwrap()["roles"], json!([COLLECT, READ]));
    let new_token = token_of(&server, "default", &id, &cli_secret).await;
    assert_eq!(claims_of(&new_token)["roles"], json!([COLLECT, READ]));
    let created = server.collect(&machine, &new_token).await;
    assert_eq!(created.status(), 201);
    assert_eq!(created.json::<Value>().await.unwrap()["requestor"], "reader", "requestor is the app's name");
    let (status, _) = error_of(server.collect(&machine, &old_token).await).await;
    assert_eq!(status, 403, "the old token keeps its old roles");

    // Disabling over the API stops new tokens.
    let disabled: Value = server
        .post_json(&format!("/api/admin/applications/{id}/disable"), &admin, &json!({}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!((disabled["enabled"].as_bool(), disabled["disabled_at"].is_string()), (Some(false), true));
    assert_oauth_error(request_v2(&server, "default", &id, &cli_secret).await, 400, "unauthorized_client", 7000112)
        .await;
    let enabled = server.post_json(&format!("/api/admin/applications/{id}/enable"), &admin, &json!({})).await;
    assert_eq!(enabled.json::<Value>().await.unwrap()["enabled"], true);
    token_of(&server, "default", &id, &cli_secret).await;
}

#[tokio::test]
async fn the_admin_api_needs_casefile_admin_and_stays_in_its_tenant() {
    let server = TestServer::start().await;
    let (reader_id, reader_secret) = cli_app(&server, "default", "reader", &format!("{READ},{COLLECT}"));
    let reader = token_of(&server, "default", &reader_id, &reader_secret).await;
    for response in [
        server.get("/api/admin/applications", &reader).await,
        server.post_json("/api/admin/applications", &reader, &json!({"name": "x", "roles": [READ]})).await,
        server.post_json(&format!("/api/admin/applications/{reader_id}/disable"), &reader, &json!({})).await,
    ] {
        let (status, error) = error_of(response).await;
        assert_eq!((status, error["code"].as_str().unwrap()), (403, "Forbidden"));
        assert!(error["message"].as_str().unwrap().contains(ADMIN), "{error}");
    }

    // An admin of another tenant sees only its own tenant's applications.
    let (other_admin_id, other_admin_secret) = cli_app(&server, "other", "other admin", ADMIN);
    let other = token_of(&server, "other", &other_admin_id, &other_admin_secret).await;
    let listed: Value = server.get("/api/admin/applications", &other).await.json().await.unwrap();
    let names: Vec<_> = listed["value"].as_array().unwrap().iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["other admin"]);
    assert_eq!(listed["value"][0]["tenant_id"], "other");
    for response in [
        server.get(&format!("/api/admin/applications/{reader_id}"), &other).await,
        server.post_json(&format!("/api/admin/applications/{reader_id}/disable"), &other, &json!({})).await,
        server
            .post_json(&format!("/api/admin/applications/{reader_id}/roles"), &other, &json!({"roles": [ADMIN]}))
            .await,
    ] {
        let (status, _) = error_of(response).await;
        assert_eq!(status, 404);
    }
    token_of(&server, "default", &reader_id, &reader_secret).await;

    // Refusals name the problem: unknown roles, a taken name, a bad id, a bad body.
    let (status, error) = error_of(
        server.post_json("/api/admin/applications", &other, &json!({"name": "x", "roles": ["Machine.Read"]})).await,
    )
    .await;
    assert_eq!((status, error["code"].as_str().unwrap()), (400, "InvalidInput"));
    assert!(error["message"].as_str().unwrap().contains("'Machine.Read'"), "{error}");
    let (status, error) = error_of(
        server.post_json("/api/admin/applications", &other, &json!({"name": "OTHER ADMIN", "roles": []})).await,
    )
    .await;
    assert_eq!(status, 400);
    assert!(error["message"].as_str().unwrap().contains("already exists"), "{error}");
    let (status, _) = error_of(server.get("/api/admin/applications/not-a-guid", &other).await).await;
    assert_eq!(status, 400);
    let (status, error) =
        error_of(server.post_json("/api/admin/applications", &other, &json!({"roles": [READ]})).await).await;
    assert_eq!((status, error["code"].as_str().unwrap()), (400, "InvalidRequestBody"));
    let out = casefile()
        .args(["app", "create", "--name", "x", "--roles", "Machine.Read.All,Bogus", "--data-dir"])
        .arg(data_dir(&server))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("'Bogus'"), "{stderr}");
}

#[tokio::test]
async fn discovery_points_at_the_token_endpoint_and_the_keys() {
    let server = TestServer::start().await;
    let get = |path: String| {
        let http = server.http.clone();
        let url = format!("{}{path}", server.base);
        async move { http.get(url).send().await.unwrap() }
    };
    let v2: Value = get("/contoso/v2.0/.well-known/openid-configuration".into()).await.json().await.unwrap();
    assert_eq!(v2["issuer"], server.base.as_str());
    assert_eq!(v2["token_endpoint"], format!("{}/contoso/oauth2/v2.0/token", server.base));
    assert_eq!(v2["jwks_uri"], format!("{}/.well-known/jwks.json", server.base));
    assert_eq!(v2["id_token_signing_alg_values_supported"], json!(["EdDSA"]));
    assert_eq!(v2["grant_types_supported"], json!(["client_credentials", "password"]));
    assert!(v2["scopes_supported"].as_array().unwrap().contains(&json!(format!("{AUDIENCE}/.default"))));
    assert!(v2["authorization_endpoint"].is_string());
    let v1: Value = get("/contoso/.well-known/openid-configuration".into()).await.json().await.unwrap();
    assert_eq!(v1["token_endpoint"], format!("{}/contoso/oauth2/token", server.base));

    let jwks: Value = get(v2["jwks_uri"].as_str().unwrap().replace(&server.base, "")).await.json().await.unwrap();
    assert_eq!(jwks["keys"][0]["kty"], "OKP");
    for alias in ["/discovery/v2.0/keys", "/contoso/discovery/v2.0/keys", "/contoso/discovery/keys"] {
        assert_eq!(get(alias.into()).await.json::<Value>().await.unwrap(), jwks, "{alias}");
    }
    // A token endpoint takes POST only; a malformed tenant has no discovery document.
    assert_oauth_error(get("/contoso/oauth2/v2.0/token".into()).await, 405, "invalid_request", 900561).await;
    assert_oauth_error(
        get("/bad%20tenant/v2.0/.well-known/openid-configuration".into()).await,
        400,
        "invalid_tenant",
        90002,
    )
    .await;
    assert_oauth_error(get("/contoso/oauth2/v2.0/authorize".into()).await, 400, "unsupported_response_type", 70000)
        .await;
}

#[tokio::test]
async fn rotated_keys_verify_until_retired_without_a_restart() {
    let server = TestServer::start_with(|c| c.auth.key_refresh_seconds = 1).await;
    let dir = data_dir(&server);
    let (client_id, secret) = cli_app(&server, "default", "rotation", READ);
    let before = token_of(&server, "default", &client_id, &secret).await;
    let old_kid = kid_of(&before);

    let rotated: Value = serde_json::from_str(&cli(&dir, &["keys", "rotate", "--json"])).unwrap();
    let new_kid = rotated["kid"].as_str().unwrap().to_owned();
    assert_ne!(new_kid, old_kid);
    assert_eq!(server.get("/api/machineactions", &before).await.status(), 200, "the old key still verifies");

    // A token signed by the new key is accepted at once: the unknown kid reloads the keys.
    let cli_token = cli(&dir, &["token", "--roles", READ, "--requestor", "after rotation"]).trim().to_owned();
    assert_eq!(kid_of(&cli_token), new_kid);
    assert_eq!(server.get("/api/machineactions", &cli_token).await.status(), 200);
    // From then on the server signs with the new key, and publishes both.
    let after = token_of(&server, "default", &client_id, &secret).await;
    assert_eq!(kid_of(&after), new_kid);
    let jwks: Value =
        server.http.get(format!("{}/.well-known/jwks.json", server.base)).send().await.unwrap().json().await.unwrap();
    let kids: Vec<_> = jwks["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap()).collect();
    assert_eq!(kids, [new_kid.as_str(), old_kid.as_str()]);
    assert_eq!(server.get("/api/machineactions", &before).await.status(), 200);

    // The newest key cannot be retired; the old one can, and its tokens then fail.
    let out = casefile().args(["keys", "retire", "--kid", &new_kid, "--data-dir"]).arg(&dir).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stderr).trim().lines().count(), 1);
    cli(&dir, &["keys", "retire", "--kid", &old_kid]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let status = server.get("/api/machineactions", &before).await.status();
        if status == 401 {
            break;
        }
        assert_eq!(status, 200);
        assert!(tokio::time::Instant::now() < deadline, "the running server never noticed the retirement");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, error) = error_of(server.get("/api/machineactions", &before).await).await;
    assert!(error["message"].as_str().unwrap().contains("signing key is unknown"), "{error}");
    assert_eq!(server.get("/api/machineactions", &after).await.status(), 200);
    let listed: Value = serde_json::from_str(&cli(&dir, &["keys", "list", "--json"])).unwrap();
    let states: Vec<_> = listed["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (k["kid"].as_str().unwrap(), k["signing"].as_bool().unwrap(), k["retired_at"].is_string()))
        .collect();
    assert_eq!(states, [(new_kid.as_str(), true, false), (old_kid.as_str(), false, true)]);
}

#[tokio::test]
async fn delegated_tokens_are_checked_by_scp_and_requested_by_the_user() {
    let server = TestServer::start().await;
    let machine = server.seed_machine("delegated-host").await;
    let user = |scp: &str| {
        let mut claims = server.claims(&[]);
        claims.scp = Some(scp.to_owned());
        claims.upn = Some("alice@contoso.com".into());
        claims.oid = Some("1b2c3d4e-0000-0000-0000-00000000a11c".into());
        claims.app_displayname = Some("Analyst portal".into());
        server.sign(&claims)
    };
    // Under RBAC a user also needs a role (see rbac.rs); this one may read and collect.
    let role =
        json!({"permissions": ["ViewData", "AlertsInvestigation"], "users": ["alice@contoso.com", "bob@contoso.com"]});
    let granted = server
        .http
        .put(format!("{}/api/admin/roles/analysts", server.base))
        .bearer_auth(server.token(&["Casefile.Admin"]))
        .json(&role)
        .send()
        .await
        .unwrap();
    assert_eq!(granted.status(), 200);

    // Machine.Read lists, but does not collect, whatever roles the app has.
    let reader = user("Machine.Read");
    assert_eq!(server.get("/api/machineactions", &reader).await.status(), 200);
    assert_eq!(server.get(&format!("/api/machines/{machine}"), &reader).await.status(), 200);
    let (status, error) = error_of(server.collect(&machine, &reader).await).await;
    assert_eq!(status, 403);
    assert!(error["message"].as_str().unwrap().contains("delegated permissions (Machine.CollectForensics)"), "{error}");
    // Application permission names are not delegated ones.
    let (status, _) = error_of(server.get("/api/machineactions", &user(READ)).await).await;
    assert_eq!(status, 403);

    // With Machine.CollectForensics the action's requestor is the user, not the app.
    let collector = user("Machine.Read Machine.CollectForensics");
    let created = server.collect(&machine, &collector).await;
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.unwrap();
    assert_eq!(created["requestor"], "alice@contoso.com");
    // Cancelling takes any of the cancel permissions; the canceller is the user as well.
    let id = created["id"].as_str().unwrap();
    let cancelled = server.post_json(&format!("/api/machineactions/{id}/cancel"), &collector, &json!({})).await;
    assert_eq!(cancelled.json::<Value>().await.unwrap()["cancellationRequestor"], "alice@contoso.com");

    // Without upn, unique_name names the user.
    let mut claims = server.claims(&[]);
    claims.scp = Some("Machine.CollectForensics".into());
    claims.unique_name = Some("bob@contoso.com".into());
    let created: Value = server.collect(&machine, &server.sign(&claims)).await.json().await.unwrap();
    assert_eq!(created["requestor"], "bob@contoso.com");
}
