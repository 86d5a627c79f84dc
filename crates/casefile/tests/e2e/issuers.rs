//! Tokens from external identity providers (`[[auth.trusted_issuers]]`): Entra ID v1 and
//! v2, Keycloak. The provider is played by keys made here (RSA and EC P-256) and a real
//! JWKS server on port 0, or a JWKS file; tokens are built and signed by hand, so nothing
//! of the server's own signing code is trusted by these tests.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair, RSA_PKCS1_SHA256, RsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use casefile_server::config::TrustedIssuerConfig;
use casefile_server::{Server, ServerConfig};
use serde_json::{Value, json};

use crate::support::*;

const MDE_AUDIENCE: &str = "https://api.securitycenter.microsoft.com";
/// The WindowsDefenderATP application id: the `aud` of Entra v2 tokens for MDE.
const MDE_APP_ID: &str = "fc780465-2017-40d4-a0c5-307022471b92";
const ENTRA_V1: &str = "https://sts.windows.net/{tenantid}/";
const ENTRA_V2: &str = "https://login.microsoftonline.com/{tenantid}/v2.0";
/// The customer's Entra tenant (made up).
const TID: &str = "5e1c9c2a-7d0b-4c7e-9a51-3f1d2b8e6c40";
const OTHER_TID: &str = "0b4f7d1e-2c3a-4e5f-8a9b-c0d1e2f3a4b5";

/// A signing key of the identity provider.
enum Signer {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
}

struct ProviderKey {
    kid: String,
    signer: Signer,
}

impl ProviderKey {
    fn rsa(kid: &str) -> Self {
        let pair = RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        Self { kid: kid.to_owned(), signer: Signer::Rsa(pair) }
    }

    fn ec(kid: &str) -> Self {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        Self { kid: kid.to_owned(), signer: Signer::Ec(pair) }
    }

    fn alg(&self) -> &'static str {
        match self.signer {
            Signer::Rsa(_) => "RS256",
            Signer::Ec(_) => "ES256",
        }
    }

    /// The public key as a JWKS entry, shaped as Entra publishes them (no `alg`: the
    /// server must derive it from the key type).
    fn jwk(&self) -> Value {
        let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
        match &self.signer {
            Signer::Rsa(pair) => {
                let public = pair.public_key();
                json!({
                    "kty": "RSA", "use": "sig", "kid": self.kid, "x5t": self.kid,
                    "n": b64(public.modulus().big_endian_without_leading_zero()),
                    "e": b64(public.exponent().big_endian_without_leading_zero()),
                })
            }
            Signer::Ec(pair) => {
                // Uncompressed point: 0x04 || x || y.
                let point = pair.public_key().as_ref();
                json!({"kty": "EC", "crv": "P-256", "use": "sig", "kid": self.kid, "x": b64(&point[1..33]), "y": b64(&point[33..])})
            }
        }
    }

    /// The public key's bytes: what an attacker uses as the HMAC secret.
    fn public_bytes(&self) -> Vec<u8> {
        match &self.signer {
            Signer::Rsa(pair) => pair.public_key().as_ref().to_vec(),
            Signer::Ec(pair) => pair.public_key().as_ref().to_vec(),
        }
    }

    /// A token with the header `{"alg", "typ": "JWT", "kid"}` and `claims`.
    fn sign(&self, claims: &Value) -> String {
        self.sign_with(&json!({"alg": self.alg(), "typ": "JWT", "kid": self.kid}), claims)
    }

    fn sign_with(&self, header: &Value, claims: &Value) -> String {
        let input = signing_input(header, claims);
        let rng = SystemRandom::new();
        let signature = match &self.signer {
            Signer::Rsa(pair) => {
                let mut out = vec![0; pair.public_modulus_len()];
                pair.sign(&RSA_PKCS1_SHA256, &rng, input.as_bytes(), &mut out).unwrap();
                out
            }
            Signer::Ec(pair) => pair.sign(&rng, input.as_bytes()).unwrap().as_ref().to_vec(),
        };
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }
}

fn signing_input(header: &Value, claims: &Value) -> String {
    let part = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap());
    format!("{}.{}", part(header), part(claims))
}

/// The identity provider's JWKS endpoint: a real HTTP server on port 0 that counts its
/// fetches and can be taken down or given new keys.
struct Provider {
    url: String,
    keys: Arc<Mutex<Vec<Value>>>,
    fetches: Arc<AtomicUsize>,
    down: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct ProviderState {
    keys: Arc<Mutex<Vec<Value>>>,
    fetches: Arc<AtomicUsize>,
    down: Arc<AtomicBool>,
}

impl Provider {
    async fn serve(keys: &[&ProviderKey]) -> Self {
        let state = ProviderState {
            keys: Arc::new(Mutex::new(keys.iter().map(|k| k.jwk()).collect())),
            fetches: Arc::default(),
            down: Arc::default(),
        };
        async fn jwks(
            axum::extract::State(state): axum::extract::State<ProviderState>,
        ) -> Result<axum::Json<Value>, axum::http::StatusCode> {
            state.fetches.fetch_add(1, Ordering::SeqCst);
            if state.down.load(Ordering::SeqCst) {
                return Err(axum::http::StatusCode::SERVICE_UNAVAILABLE);
            }
            Ok(axum::Json(json!({"keys": *state.keys.lock().unwrap()})))
        }
        let app = axum::Router::new().route("/discovery/v2.0/keys", axum::routing::get(jwks)).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            url: format!("http://{addr}/discovery/v2.0/keys"),
            keys: state.keys,
            fetches: state.fetches,
            down: state.down,
            task,
        }
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    fn publish(&self, keys: &[&ProviderKey]) {
        *self.keys.lock().unwrap() = keys.iter().map(|k| k.jwk()).collect();
    }

    fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// A trusted issuer whose keys are this provider's.
    fn issuer(&self, issuer: &str) -> TrustedIssuerConfig {
        TrustedIssuerConfig {
            issuer: issuer.to_owned(),
            jwks_url: Some(self.url.clone()),
            tenant: Some("default".to_owned()),
            ..Default::default()
        }
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// An Entra ID v1 application token for MDE, as in the observed fixture (§6.2).
fn entra_v1_app(tid: &str) -> Value {
    let now = now();
    json!({
        "aud": MDE_AUDIENCE, "iss": format!("https://sts.windows.net/{tid}/"),
        "iat": now, "nbf": now, "exp": now + 3600,
        "aio": "E2ZgYJi", "appid": "a1b2c3d4-0000-4000-8000-000000000001", "app_displayname": "Sentinel playbook",
        "appidacr": "1", "idp": format!("https://sts.windows.net/{tid}/"),
        "oid": "0f0e0d0c-0000-4000-8000-000000000002", "rh": "0.AQ", "roles": [READ, COLLECT],
        "sub": "0f0e0d0c-0000-4000-8000-000000000002", "tenant_region_scope": "EU", "tid": tid,
        "uti": "x", "ver": "1.0",
    })
}

/// An Entra ID v2 user (delegated) token: `scp`, and the name in `preferred_username`.
fn entra_v2_user(tid: &str, name: &str) -> Value {
    let now = now();
    json!({
        "aud": MDE_APP_ID, "iss": format!("https://login.microsoftonline.com/{tid}/v2.0"),
        "iat": now, "nbf": now, "exp": now + 3600,
        "azp": "b2c3d4e5-0000-4000-8000-000000000003", "azpacr": "0", "name": "Alice Analyst",
        "oid": "1a2b3c4d-0000-4000-8000-000000000004", "preferred_username": name,
        "scp": "Machine.Read Machine.ReadWrite Machine.CollectForensics", "sub": "pairwise-subject",
        "tid": tid, "ver": "2.0",
    })
}

/// What the server answers `token` on a read API: the status and, for an error, its message.
async fn answer(server: &TestServer, token: &str) -> (u16, String) {
    let response = server.get("/api/machineactions", token).await;
    if response.status() == 200 {
        return (200, String::new());
    }
    let (status, error) = error_of(response).await;
    (status, error["message"].as_str().unwrap().to_owned())
}

/// Asserts that `token` is accepted.
async fn accepts(server: &TestServer, token: &str) {
    assert_eq!(answer(server, token).await, (200, String::new()));
}

/// Asserts a 401 whose message contains `says`.
async fn refused(server: &TestServer, token: &str, says: &str) {
    let (status, message) = answer(server, token).await;
    assert_eq!(status, 401, "{says}: {message}");
    assert!(message.contains(says), "expected '{says}' in: {message}");
}

/// Grants `upn` every role permission: under RBAC a delegated user needs a role.
async fn grant_roles(server: &TestServer, upn: &str) {
    let admin = server.token(&["Casefile.Admin"]);
    let body = json!({"name": "issuer-users", "permissions": ["Administrator"], "users": [upn], "groups": []});
    let response = server
        .http
        .put(format!("{}/api/admin/roles/issuer-users", server.base))
        .bearer_auth(&admin)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

/// A casefile server that trusts `issuer` besides itself.
async fn trusting(issuer: TrustedIssuerConfig) -> TestServer {
    TestServer::start_with(|config| config.auth.trusted_issuers.push(issuer)).await
}

async fn collect_as(server: &TestServer, machine: &str, token: &str) -> Value {
    let response = server.collect(machine, token).await;
    assert_eq!(response.status(), 201);
    response.json().await.unwrap()
}

#[tokio::test]
async fn entra_v1_application_tokens_are_accepted_with_keys_from_a_jwks_url() {
    let key = ProviderKey::rsa("entra-key-1");
    let provider = Provider::serve(&[&key]).await;
    let server = trusting(provider.issuer(ENTRA_V1)).await;
    assert_eq!(provider.fetches(), 1, "fetched once at start");
    let machine = server.seed_machine("web-01.contoso.example").await;

    let token = key.sign(&entra_v1_app(TID));
    accepts(&server, &token).await;
    let created = collect_as(&server, &machine, &token).await;
    assert_eq!(created["requestor"], "Sentinel playbook");
    // Verified once, then from the cache; a known kid never fetches again.
    accepts(&server, &token).await;
    assert_eq!(provider.fetches(), 1);

    // Every MDE audience, and v1 tokens of the same tenant from another app.
    let mut claims = entra_v1_app(TID);
    claims["aud"] = "https://api.securitycenter.windows.com".into();
    claims["app_displayname"] = Value::Null;
    let created = collect_as(&server, &server.seed_machine("web-02.contoso.example").await, &key.sign(&claims)).await;
    assert_eq!(created["requestor"], "a1b2c3d4-0000-4000-8000-000000000001", "no display name: the appid");
    // The server's own tokens still work beside the issuer's.
    accepts(&server, &server.token(ALL)).await;
}

#[tokio::test]
async fn entra_v2_tokens_work_with_keys_from_a_file_and_users_are_named_by_preferred_username() {
    let key = ProviderKey::ec("entra-ec-1");
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, serde_json::to_vec(&json!({"keys": [key.jwk()]})).unwrap()).unwrap();
    let issuer = TrustedIssuerConfig {
        issuer: ENTRA_V2.to_owned(),
        jwks_file: Some(jwks),
        tenant: Some("default".to_owned()),
        allowed_tids: Some(vec![TID.to_owned()]),
        ..Default::default()
    };
    let server = trusting(issuer).await;
    let machine = server.seed_machine("db-01.contoso.example").await;

    // A user: `scp` makes it delegated; no `upn` in v2, so `preferred_username` names them.
    grant_roles(&server, "alice@contoso.example").await;
    let user = key.sign(&entra_v2_user(TID, "alice@contoso.example"));
    let created = collect_as(&server, &machine, &user).await;
    assert_eq!(created["requestor"], "alice@contoso.example");

    // A v2 application token names its client in `azp` only.
    let now = now();
    let app = json!({
        "aud": MDE_APP_ID, "iss": format!("https://login.microsoftonline.com/{TID}/v2.0"),
        "iat": now, "nbf": now, "exp": now + 3600, "azp": "c3d4e5f6-0000-4000-8000-000000000005", "azpacr": "1",
        "oid": "c3d4e5f6-0000-4000-8000-000000000006", "roles": [READ, COLLECT], "sub": "s", "tid": TID, "ver": "2.0",
    });
    let other = server.seed_machine("db-02.contoso.example").await;
    let created = collect_as(&server, &other, &key.sign(&app)).await;
    assert_eq!(created["requestor"], "c3d4e5f6-0000-4000-8000-000000000005");

    // A tenant the issuer is not trusted for, with a matching iss and tid.
    let mut claims = entra_v2_user(OTHER_TID, "mallory@fabrikam.example");
    claims["tid"] = OTHER_TID.into();
    refused(&server, &key.sign(&claims), "allowed_tids").await;
}

#[tokio::test]
async fn every_claim_of_an_issuers_token_is_checked() {
    let key = ProviderKey::rsa("entra-key-1");
    let provider = Provider::serve(&[&key]).await;
    let server = trusting(provider.issuer(ENTRA_V1)).await;
    let with = |change: &dyn Fn(&mut Value)| {
        let mut claims = entra_v1_app(TID);
        change(&mut claims);
        key.sign(&claims)
    };

    // Within the leeway (60 s) on both ends: accepted.
    accepts(&server, &with(&|c| c["exp"] = (now() - 30).into())).await;
    accepts(&server, &with(&|c| c["nbf"] = (now() + 30).into())).await;
    // Past it: refused.
    refused(&server, &with(&|c| c["exp"] = (now() - 3600).into()), "has expired").await;
    refused(&server, &with(&|c| c["nbf"] = (now() + 3600).into()), "not valid yet").await;
    refused(&server, &with(&|c| _ = c.as_object_mut().unwrap().remove("exp")), "lacks a required claim").await;

    // An issuer nobody configured, and the configured one naming another tenant than `tid`.
    refused(&server, &with(&|c| c["iss"] = "https://sts.windows.net.evil.example/x/".into()), "not trusted").await;
    refused(&server, &with(&|c| c["iss"] = format!("https://sts.windows.net/{OTHER_TID}/").into()), "tenant it names")
        .await;
    refused(&server, &with(&|c| _ = c.as_object_mut().unwrap().remove("tid")), "tenant it names").await;

    // Audiences: an MDE one is accepted (above); another is not.
    refused(&server, &with(&|c| c["aud"] = "https://graph.microsoft.com".into()), "audience (aud)").await;
    accepts(&server, &with(&|c| c["aud"] = MDE_APP_ID.into())).await;

    // A bad signature: the claims of one token with the signature of another.
    let good = key.sign(&entra_v1_app(TID));
    let mut other_claims = entra_v1_app(TID);
    other_claims["roles"] = json!(["Machine.Read.All", "Machine.Isolate"]);
    let other = key.sign(&other_claims);
    let forged = format!("{}.{}", good.rsplit_once('.').unwrap().0, other.rsplit_once('.').unwrap().1);
    refused(&server, &forged, "signature is invalid").await;

    // `alg: none`, unsigned.
    let unsigned =
        format!("{}.", signing_input(&json!({"alg": "none", "typ": "JWT", "kid": key.kid}), &entra_v1_app(TID)));
    refused(&server, &unsigned, "alg none").await;
    // HS256 with the provider's public key as the HMAC secret.
    let header = json!({"alg": "HS256", "typ": "JWT", "kid": key.kid});
    let input = signing_input(&header, &entra_v1_app(TID));
    let secret = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &key.public_bytes());
    let mac = aws_lc_rs::hmac::sign(&secret, input.as_bytes());
    refused(&server, &format!("{input}.{}", URL_SAFE_NO_PAD.encode(mac.as_ref())), "not the algorithm of the key")
        .await;
    // Another asymmetric algorithm than the key's (RS384 for an RS256 key).
    let rs384 = key.sign_with(&json!({"alg": "RS384", "typ": "JWT", "kid": key.kid}), &entra_v1_app(TID));
    refused(&server, &rs384, "not the algorithm of the key").await;
    // No kid at all.
    refused(
        &server,
        &key.sign_with(&json!({"alg": "RS256", "typ": "JWT"}), &entra_v1_app(TID)),
        "names no signing key",
    )
    .await;
    refused(&server, "a.b.c", "malformed").await;

    // None of these made the server fetch the keys again: every kid was known.
    assert_eq!(provider.fetches(), 1);
}

#[tokio::test]
async fn an_unknown_kid_fetches_the_keys_once_then_is_refused() {
    let key = ProviderKey::rsa("entra-key-1");
    let provider = Provider::serve(&[&key]).await;
    let server = trusting(provider.issuer(ENTRA_V1)).await;
    assert_eq!(provider.fetches(), 1);

    let rogue = ProviderKey::ec("not-published");
    let token = rogue.sign(&entra_v1_app(TID));
    refused(&server, &token, "signing key is unknown").await;
    assert_eq!(provider.fetches(), 2, "the unknown kid fetched the keys again");
    // Within the minute, more unknown kids do not fetch again.
    refused(&server, &token, "signing key is unknown").await;
    refused(&server, &ProviderKey::ec("another").sign(&entra_v1_app(TID)), "signing key is unknown").await;
    assert_eq!(provider.fetches(), 2);
    accepts(&server, &key.sign(&entra_v1_app(TID))).await;
}

#[tokio::test]
async fn a_key_the_provider_rotates_in_works_at_once() {
    let old = ProviderKey::rsa("2026-10");
    let provider = Provider::serve(&[&old]).await;
    let server = trusting(provider.issuer(ENTRA_V1)).await;
    accepts(&server, &old.sign(&entra_v1_app(TID))).await;

    // The provider publishes a new key and signs with it; the server has the old set.
    let new = ProviderKey::rsa("2026-11");
    provider.publish(&[&new, &old]);
    accepts(&server, &new.sign(&entra_v1_app(TID))).await;
    assert_eq!(provider.fetches(), 2);
    accepts(&server, &old.sign(&entra_v1_app(TID))).await;
}

#[tokio::test]
async fn a_jwks_url_down_at_start_is_retried_and_a_removed_key_stops_verifying() {
    let key = ProviderKey::rsa("k1");
    let provider = Provider::serve(&[&key]).await;
    provider.set_down(true);
    // The server starts anyway: its own tokens and agents do not wait for the provider.
    let mut issuer = provider.issuer(ENTRA_V1);
    issuer.refresh_seconds = 1;
    let server = trusting(issuer).await;
    accepts(&server, &server.token(ALL)).await;
    let token = key.sign(&entra_v1_app(TID));
    refused(&server, &token, "could not be fetched yet").await;
    assert!(provider.fetches() >= 2, "at start, and for the first token");

    // Back up: the retries in the background find it.
    provider.set_down(false);
    eventually(|| async { answer(&server, &token).await.0 == 200 }).await;

    // The provider withdraws the key: its tokens stop verifying, even those verified before.
    let next = ProviderKey::rsa("k2");
    provider.publish(&[&next]);
    eventually(|| async { answer(&server, &token).await.0 == 401 }).await;
    refused(&server, &token, "signing key is unknown").await;
    accepts(&server, &next.sign(&entra_v1_app(TID))).await;
}

/// Waits until `check` holds (10 s at most).
async fn eventually<F, Fut>(check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "the condition never held");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn keycloak_tokens_use_azp_and_top_level_roles_and_the_issuers_own_audiences() {
    let key = ProviderKey::rsa("keycloak-rs256");
    let provider = Provider::serve(&[&key]).await;
    let realm = "https://keycloak.example/realms/soc";
    let issuer = TrustedIssuerConfig { audiences: Some(vec!["casefile".to_owned()]), ..provider.issuer(realm) };
    let server = trusting(issuer).await;
    let machine = server.seed_machine("k8s-node-1").await;
    let now = now();
    // A client-credentials token: no `nbf`, no `tid`, `aud` a list, roles put at the top
    // level by a mapper (Keycloak's own `realm_access.roles` are not read).
    let claims = |roles: Option<Value>, aud: Value| {
        let mut claims = json!({
            "exp": now + 300, "iat": now, "jti": "j", "iss": realm, "aud": aud, "sub": "7c1d",
            "typ": "Bearer", "azp": "soar-bot", "scope": "profile email", "clientHost": "10.0.0.7",
            "preferred_username": "service-account-soar-bot", "realm_access": {"roles": [READ, COLLECT]},
        });
        if let Some(roles) = roles {
            claims["roles"] = roles;
        }
        claims
    };
    let token = key.sign(&claims(Some(json!([READ, COLLECT])), json!(["casefile", "account"])));
    let created = collect_as(&server, &machine, &token).await;
    assert_eq!(created["requestor"], "soar-bot");

    let without_roles = key.sign(&claims(None, json!(["casefile", "account"])));
    let (status, _) = error_of(server.collect(&machine, &without_roles).await).await;
    assert_eq!(status, 403, "realm_access.roles are not permissions");
    // The issuer's audiences replace the MDE ones.
    refused(&server, &key.sign(&claims(Some(json!([READ])), json!(MDE_AUDIENCE))), "audience (aud)").await;
}

#[tokio::test]
async fn without_a_tenant_mapping_the_tokens_tid_is_its_tenant() {
    let key = ProviderKey::ec("k");
    let provider = Provider::serve(&[&key]).await;
    let server = TestServer::start_with(|config| {
        config.auth.trusted_issuers.push(TrustedIssuerConfig { tenant: None, ..provider.issuer(ENTRA_V1) });
        let exact = TrustedIssuerConfig { tenant: None, ..provider.issuer("https://idp.example/") };
        config.auth.trusted_issuers.push(exact);
    })
    .await;
    server.seed_machine("only-in-default").await;
    let machines = |token: String| {
        let server = &server;
        async move {
            let response = server.get("/api/machines", &token).await;
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.unwrap()["value"].as_array().unwrap().len()
        }
    };
    assert_eq!(machines(key.sign(&entra_v1_app(TID))).await, 0, "the customer tenant is its own");
    assert_eq!(machines(key.sign(&entra_v1_app("default"))).await, 1);

    let mut claims = entra_v1_app(TID);
    claims["iss"] = "https://idp.example/".into();
    claims["tid"] = "not a tenant/".into();
    let (status, error) = error_of(server.get("/api/machines", &key.sign(&claims)).await).await;
    assert_eq!(status, 401);
    assert!(error["message"].as_str().unwrap().contains("tenant id (tid) is invalid"), "{error}");
    claims.as_object_mut().unwrap().remove("tid");
    refused(&server, &key.sign(&claims), "no tenant id").await;
}

#[tokio::test]
async fn a_misconfigured_issuer_stops_the_server_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let open = |issuer: TrustedIssuerConfig| {
        let mut config = ServerConfig { data_dir: dir.path().join("data"), ..Default::default() };
        config.auth.trusted_issuers.push(issuer);
        async move {
            match Server::open(config).await {
                Ok(_) => panic!("the server started"),
                Err(e) => e.to_string(),
            }
        }
    };
    let base = TrustedIssuerConfig { issuer: ENTRA_V1.to_owned(), ..Default::default() };
    let both = TrustedIssuerConfig {
        jwks_file: Some("jwks.json".into()),
        jwks_url: Some("https://login.microsoftonline.com/common/discovery/keys".into()),
        ..base.clone()
    };
    assert!(open(both).await.contains("auth.trusted_issuers[0] ('https://sts.windows.net/{tenantid}/'): set one of"));
    assert!(open(base.clone()).await.contains("set jwks_file or jwks_url"));
    let url = |u: &str| TrustedIssuerConfig { jwks_url: Some(u.into()), ..base.clone() };
    assert!(open(url("login.microsoftonline.com/keys")).await.contains("is not a URL"));
    assert!(open(url("http://login.microsoftonline.com/keys")).await.contains("must be https"));
    let file = |path: std::path::PathBuf| TrustedIssuerConfig { jwks_file: Some(path), ..base.clone() };
    assert!(open(file(dir.path().join("missing.json"))).await.contains("cannot read jwks_file"));
    let invalid = dir.path().join("invalid.json");
    std::fs::write(&invalid, b"{\"keys\": [{\"kty\": \"oct\", \"kid\": \"s\", \"k\": \"c2VjcmV0\"}]}").unwrap();
    assert!(open(file(invalid)).await.contains("no usable signing key"));
}

#[test]
fn the_documented_configuration_parses() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let section = &readme[readme.find("### Tokens from your identity provider").unwrap()..];
    let block = &section[section.find("```toml\n").unwrap() + 8..];
    let toml = &block[..block.find("```").unwrap()];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("casefile.toml");
    std::fs::write(&path, toml).unwrap();
    let config = ServerConfig::load(&path).unwrap();
    let issuers = &config.auth.trusted_issuers;
    assert_eq!(issuers.len(), 3);
    assert_eq!((issuers[0].issuer.as_str(), issuers[1].issuer.as_str()), (ENTRA_V1, ENTRA_V2));
    assert_eq!(issuers[0].refresh_seconds, 3600);
    assert_eq!(issuers[2].audiences.as_deref(), Some(&["casefile".to_owned()][..]));
    assert_eq!(issuers[2].refresh_seconds, 900);

    std::fs::write(&path, format!("{toml}jwks = \"typo\"\n")).unwrap();
    assert!(ServerConfig::load(&path).unwrap_err().to_string().contains("unknown field `jwks`"));
}
