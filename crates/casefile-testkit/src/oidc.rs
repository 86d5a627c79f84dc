//! A small OpenID Connect provider for tests of single sign-on: the authorization code
//! flow with PKCE (S256 only), as Keycloak and Entra ID serve it, on a free loopback port
//! over plain HTTP, stopped when dropped.
//!
//! It serves, under its issuer (`http://127.0.0.1:PORT/realms/casefile`):
//! - `/.well-known/openid-configuration`: the discovery document;
//! - `GET /authorize`: checks the client, its registered redirect URI, `response_type=code`
//!   and an S256 `code_challenge`, then shows a sign-in form (a user name field with the id
//!   `oidc-user`, buttons `oidc-sign-in` and `oidc-cancel`) a real browser can fill in;
//! - `POST /authorize`: the form; a known user gets a single-use code bound to the client,
//!   redirect URI, challenge and nonce (`303` to `redirect_uri?code=..&state=..`), an
//!   unknown one the form again with an error, Cancel `error=access_denied`;
//! - `POST /token`: the `authorization_code` grant, checking the client (and its secret,
//!   in the body or HTTP Basic, for a confidential client), the redirect URI, the code
//!   (single-use, unexpired) and `code_verifier` against the challenge;
//! - `GET /jwks`: the one public key (ES256 or RS256) with its `kid`.
//!
//! ID tokens carry `iss`, `sub`, `aud` (the client id), `iat`, `exp`, `nonce`,
//! `preferred_username`, `name`, and the user's `oid`, `groups` and extra claims.
//! [`Faults`] make it misbehave the ways a hostile or broken provider would.
//!
//! It runs on a thread and runtime of its own, so sync and async tests alike can start it,
//! and whatever runtime the test uses is never blocked by it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair, RSA_PKCS1_SHA256, RsaKeyPair};
use axum::extract::{Form, Query, State};
use axum::http::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, LOCATION};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Map, Value, json};

/// The path of the issuer on the provider's port (Keycloak's shape: an issuer with a path).
pub const ISSUER_PATH: &str = "/realms/casefile";
/// How long a code may wait for its exchange, unless [`OidcProviderBuilder::code_lifetime`] says.
pub const CODE_LIFETIME: Duration = Duration::from_secs(60);
/// How long an ID token is valid.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(300);

/// A client (relying party) registered at the provider.
#[derive(Debug, Clone)]
pub struct OidcClient {
    pub client_id: String,
    /// Exact redirect URIs; any other is refused before anything is redirected.
    pub redirect_uris: Vec<String>,
    /// `Some`: a confidential client, whose token requests must carry this secret.
    pub secret: Option<String>,
}

impl OidcClient {
    /// A public client (PKCE only).
    pub fn public(client_id: &str, redirect_uri: &str) -> Self {
        Self { client_id: client_id.to_owned(), redirect_uris: vec![redirect_uri.to_owned()], secret: None }
    }

    /// A confidential client with `secret`.
    pub fn confidential(client_id: &str, redirect_uri: &str, secret: &str) -> Self {
        Self { secret: Some(secret.to_owned()), ..Self::public(client_id, redirect_uri) }
    }
}

/// A user who can sign in by typing `name` into the form.
#[derive(Debug, Clone)]
pub struct OidcUser {
    /// What is typed into the form; the token's `preferred_username` and `name`.
    pub name: String,
    /// The token's `sub` (default: `sub-{name}`).
    pub sub: String,
    /// The token's `oid`, when set (Entra's object id).
    pub oid: Option<String>,
    /// The token's `groups`, when not empty.
    pub groups: Vec<String>,
    /// Any other claims, added last (they may replace the ones above).
    pub claims: Map<String, Value>,
}

impl OidcUser {
    pub fn new(name: &str) -> Self {
        Self { name: name.to_owned(), sub: format!("sub-{name}"), oid: None, groups: Vec::new(), claims: Map::new() }
    }

    pub fn oid(mut self, oid: &str) -> Self {
        self.oid = Some(oid.to_owned());
        self
    }

    pub fn groups(mut self, groups: &[&str]) -> Self {
        self.groups = groups.iter().map(|g| g.to_string()).collect();
        self
    }

    pub fn claim(mut self, name: &str, value: Value) -> Self {
        self.claims.insert(name.to_owned(), value);
        self
    }
}

/// Ways to make the provider misbehave; [`OidcProvider::set_faults`] applies them to
/// what it does next. The default is none.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// `GET /authorize` sends the browser straight back with `error=access_denied` (as
    /// when the user cancels or an administrator refused consent).
    pub deny: bool,
    /// ID tokens are signed by a key that is not in the JWKS, under the published key's
    /// `kid`: only the signature check can tell.
    pub unpublished_key: bool,
    /// ID tokens are signed by a key that is not in the JWKS, under a `kid` of its own.
    pub unknown_kid: bool,
    /// ID tokens carry this `aud` instead of the client id.
    pub aud: Option<String>,
    /// ID tokens carry this `nonce` instead of the one asked for.
    pub nonce: Option<String>,
    /// ID tokens carry this `iss` instead of the issuer.
    pub iss: Option<String>,
    /// ID tokens expired ten minutes ago (issued an hour ago), beyond any usual leeway.
    pub expired: bool,
}

/// The signing key's algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Es256,
    Rs256,
}

/// Configures and starts an [`OidcProvider`].
pub struct OidcProviderBuilder {
    clients: Vec<OidcClient>,
    users: Vec<OidcUser>,
    algorithm: Algorithm,
    code_lifetime: Duration,
}

impl OidcProviderBuilder {
    pub fn client(mut self, client: OidcClient) -> Self {
        self.clients.push(client);
        self
    }

    pub fn user(mut self, user: OidcUser) -> Self {
        self.users.push(user);
        self
    }

    /// ES256 (P-256) by default.
    pub fn algorithm(mut self, algorithm: Algorithm) -> Self {
        self.algorithm = algorithm;
        self
    }

    /// How long a code may wait for its exchange ([`CODE_LIFETIME`] by default; zero: every
    /// code has expired by the time it is exchanged).
    pub fn code_lifetime(mut self, lifetime: Duration) -> Self {
        self.code_lifetime = lifetime;
        self
    }

    /// Binds a free loopback port and serves on a thread of its own until dropped.
    pub fn start(self) -> OidcProvider {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free loopback port");
        listener.set_nonblocking(true).expect("a non-blocking listener");
        let addr = listener.local_addr().expect("the listener's address");
        let issuer = format!("http://{addr}{ISSUER_PATH}");
        let shared = Arc::new(Shared {
            issuer: issuer.clone(),
            clients: self.clients,
            users: self.users,
            key: SigningKey::generate(self.algorithm, "casefile-test-1"),
            unpublished: SigningKey::generate(self.algorithm, "casefile-test-1"),
            stranger: SigningKey::generate(self.algorithm, "casefile-test-unknown"),
            code_lifetime: self.code_lifetime,
            codes: Mutex::default(),
            faults: Mutex::default(),
            log: Mutex::default(),
        });
        let app = router(shared.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("oidc-provider".into())
            .spawn(move || {
                let runtime =
                    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("the provider's runtime");
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).expect("a tokio listener");
                    tokio::select! {
                        served = axum::serve(listener, app) => served.expect("the provider serves"),
                        _ = stopped => {}
                    }
                });
                // Dropping the runtime here ends every open connection's task.
            })
            .expect("the provider's thread");
        OidcProvider { addr, issuer, shared, stop: Some(stop), thread: Some(thread) }
    }
}

/// A running provider; stops (its port closed, its thread joined) when dropped.
pub struct OidcProvider {
    pub addr: SocketAddr,
    issuer: String,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl OidcProvider {
    pub fn builder() -> OidcProviderBuilder {
        OidcProviderBuilder {
            clients: Vec::new(),
            users: Vec::new(),
            algorithm: Algorithm::Es256,
            code_lifetime: CODE_LIFETIME,
        }
    }

    /// A provider with these clients and users, signing with ES256.
    pub fn start(clients: Vec<OidcClient>, users: Vec<OidcUser>) -> Self {
        let mut builder = Self::builder();
        builder.clients = clients;
        builder.users = users;
        builder.start()
    }

    /// The issuer (`iss`), without a trailing slash.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn jwks_url(&self) -> String {
        format!("{}/jwks", self.issuer)
    }

    pub fn authorization_endpoint(&self) -> String {
        format!("{}/authorize", self.issuer)
    }

    pub fn token_endpoint(&self) -> String {
        format!("{}/token", self.issuer)
    }

    /// Applies `faults` to everything the provider does from now on.
    pub fn set_faults(&self, faults: Faults) {
        *lock(&self.shared.faults) = faults;
    }

    /// The query of every `GET /authorize` so far, oldest first.
    pub fn authorize_requests(&self) -> Vec<HashMap<String, String>> {
        lock(&self.shared.log).authorize.clone()
    }

    /// What every `POST /token` was answered: `Ok(user name)` for tokens issued, else
    /// `Err(OAuth error code)` (`invalid_grant`, `invalid_client`, ...), oldest first.
    pub fn token_answers(&self) -> Vec<Result<String, String>> {
        lock(&self.shared.log).token.clone()
    }

    /// Every ID token issued so far, oldest first.
    pub fn id_tokens(&self) -> Vec<String> {
        lock(&self.shared.log).id_tokens.clone()
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

struct Shared {
    issuer: String,
    clients: Vec<OidcClient>,
    users: Vec<OidcUser>,
    key: SigningKey,
    /// Same `kid` as `key`, never published.
    unpublished: SigningKey,
    /// A `kid` of its own, never published.
    stranger: SigningKey,
    code_lifetime: Duration,
    codes: Mutex<HashMap<String, Grant>>,
    faults: Mutex<Faults>,
    log: Mutex<Log>,
}

#[derive(Default)]
struct Log {
    authorize: Vec<HashMap<String, String>>,
    token: Vec<Result<String, String>>,
    id_tokens: Vec<String>,
}

/// What a code was issued for.
struct Grant {
    client_id: String,
    redirect_uri: String,
    challenge: String,
    nonce: Option<String>,
    user: usize,
    expires: Instant,
}

enum Signer {
    Ec(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

struct SigningKey {
    kid: String,
    signer: Signer,
}

impl SigningKey {
    fn generate(algorithm: Algorithm, kid: &str) -> Self {
        let signer = match algorithm {
            Algorithm::Es256 => {
                Signer::Ec(EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("a P-256 key"))
            }
            Algorithm::Rs256 => {
                Signer::Rsa(RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("an RSA key"))
            }
        };
        Self { kid: kid.to_owned(), signer }
    }

    fn alg(&self) -> &'static str {
        match self.signer {
            Signer::Ec(_) => "ES256",
            Signer::Rsa(_) => "RS256",
        }
    }

    fn jwk(&self) -> Value {
        let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
        match &self.signer {
            Signer::Ec(pair) => {
                // The uncompressed point: 0x04 || x || y.
                let point = pair.public_key().as_ref();
                json!({"kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": self.kid,
                       "x": b64(&point[1..33]), "y": b64(&point[33..])})
            }
            Signer::Rsa(pair) => {
                let public = pair.public_key();
                json!({"kty": "RSA", "use": "sig", "alg": "RS256", "kid": self.kid,
                       "n": b64(public.modulus().big_endian_without_leading_zero()),
                       "e": b64(public.exponent().big_endian_without_leading_zero())})
            }
        }
    }

    fn sign(&self, claims: &Value) -> String {
        let part = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).expect("JSON"));
        let header = json!({"alg": self.alg(), "typ": "JWT", "kid": self.kid});
        let input = format!("{}.{}", part(&header), part(claims));
        let rng = SystemRandom::new();
        let signature = match &self.signer {
            Signer::Ec(pair) => pair.sign(&rng, input.as_bytes()).expect("an ES256 signature").as_ref().to_vec(),
            Signer::Rsa(pair) => {
                let mut out = vec![0; pair.public_modulus_len()];
                pair.sign(&RSA_PKCS1_SHA256, &rng, input.as_bytes(), &mut out).expect("an RS256 signature");
                out
            }
        };
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(&format!("{ISSUER_PATH}/.well-known/openid-configuration"), get(discovery))
        .route(&format!("{ISSUER_PATH}/authorize"), get(authorize_page).post(authorize_form))
        .route(&format!("{ISSUER_PATH}/token"), axum::routing::post(token))
        .route(&format!("{ISSUER_PATH}/jwks"), get(jwks))
        .with_state(shared)
}

async fn discovery(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let issuer = &shared.issuer;
    Json(json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
        "jwks_uri": format!("{issuer}/jwks"),
        "response_types_supported": ["code"],
        "grant_types_supported": ["authorization_code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [shared.key.alg()],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["none", "client_secret_post", "client_secret_basic"],
        "scopes_supported": ["openid", "profile", "email"],
    }))
}

async fn jwks(State(shared): State<Arc<Shared>>) -> Json<Value> {
    Json(json!({"keys": [shared.key.jwk()]}))
}

type Params = HashMap<String, String>;

fn param<'a>(params: &'a Params, name: &str) -> &'a str {
    params.get(name).map(String::as_str).unwrap_or_default()
}

/// An authorization request checked as far as a redirect back is safe: the client and its
/// redirect URI. `Err` is the message of the page to show instead (HTML; never a redirect
/// to an unknown URI).
fn trusted_redirect(shared: &Shared, params: &Params) -> Result<String, String> {
    let client_id = param(params, "client_id");
    let Some(client) = shared.clients.iter().find(|c| c.client_id == client_id) else {
        return Err(format!("Unknown client: '{}'.", escape(client_id)));
    };
    let redirect_uri = param(params, "redirect_uri");
    if !client.redirect_uris.iter().any(|u| u == redirect_uri) {
        return Err(format!("The redirect URI '{}' is not registered for this client.", escape(redirect_uri)));
    }
    Ok(redirect_uri.to_owned())
}

/// The rest of an authorization request: an OAuth error code to send back, if any.
fn request_error(params: &Params) -> Option<(&'static str, &'static str)> {
    if param(params, "response_type") != "code" {
        return Some(("unsupported_response_type", "only response_type=code"));
    }
    if !param(params, "scope").split(' ').any(|s| s == "openid") {
        return Some(("invalid_scope", "the scope must include openid"));
    }
    let challenge = param(params, "code_challenge");
    if param(params, "code_challenge_method") != "S256" || challenge.len() != 43 {
        return Some(("invalid_request", "PKCE with code_challenge_method=S256 is required"));
    }
    None
}

/// `redirect_uri` with `pairs` added to its query, and `state` when the request had one.
fn back_to(redirect_uri: &str, params: &Params, pairs: &[(&str, &str)]) -> Response {
    let mut url = url::Url::parse(redirect_uri).expect("a registered redirect URI is a URL");
    {
        let mut query = url.query_pairs_mut();
        for (k, v) in pairs {
            query.append_pair(k, v);
        }
        if let Some(state) = params.get("state") {
            query.append_pair("state", state);
        }
    }
    let mut response = StatusCode::SEE_OTHER.into_response();
    response.headers_mut().insert(LOCATION, HeaderValue::from_str(url.as_str()).expect("a URL is a header value"));
    response
}

async fn authorize_page(State(shared): State<Arc<Shared>>, Query(params): Query<Params>) -> Response {
    lock(&shared.log).authorize.push(params.clone());
    let redirect_uri = match trusted_redirect(&shared, &params) {
        Ok(uri) => uri,
        Err(message) => return page(StatusCode::BAD_REQUEST, &message),
    };
    if lock(&shared.faults).deny {
        return back_to(&redirect_uri, &params, &[("error", "access_denied"), ("error_description", "refused")]);
    }
    if let Some((error, why)) = request_error(&params) {
        return back_to(&redirect_uri, &params, &[("error", error), ("error_description", why)]);
    }
    form(&params, StatusCode::OK, None)
}

/// The sign-in form, carrying the request's parameters to its POST.
fn form(params: &Params, status: StatusCode, message: Option<&str>) -> Response {
    let hidden: String = [
        "client_id",
        "redirect_uri",
        "response_type",
        "scope",
        "state",
        "nonce",
        "code_challenge",
        "code_challenge_method",
    ]
    .iter()
    .filter_map(|name| params.get(*name).map(|v| (name, v)))
    .map(|(name, value)| format!("<input type=\"hidden\" name=\"{name}\" value=\"{}\">\n", escape(value)))
    .collect();
    let message =
        message.map(|m| format!("<p role=\"alert\" id=\"oidc-error\">{}</p>\n", escape(m))).unwrap_or_default();
    let body = format!(
        "<h1>Sign in</h1>\n<p>to <strong>{client}</strong> at the test identity provider</p>\n{message}\
         <form method=\"post\" action=\"{ISSUER_PATH}/authorize\">\n{hidden}\
         <label for=\"oidc-user\">User name</label>\n\
         <input id=\"oidc-user\" name=\"username\" autocomplete=\"username\" required autofocus>\n\
         <button type=\"submit\" id=\"oidc-sign-in\" name=\"decision\" value=\"allow\">Sign in</button>\n\
         <button type=\"submit\" id=\"oidc-cancel\" name=\"decision\" value=\"deny\" formnovalidate>Cancel</button>\n\
         </form>",
        client = escape(param(params, "client_id")),
    );
    page_with(status, &body)
}

async fn authorize_form(State(shared): State<Arc<Shared>>, Form(params): Form<Params>) -> Response {
    let redirect_uri = match trusted_redirect(&shared, &params) {
        Ok(uri) => uri,
        Err(message) => return page(StatusCode::BAD_REQUEST, &message),
    };
    if param(&params, "decision") == "deny" {
        return back_to(&redirect_uri, &params, &[("error", "access_denied"), ("error_description", "cancelled")]);
    }
    if let Some((error, why)) = request_error(&params) {
        return back_to(&redirect_uri, &params, &[("error", error), ("error_description", why)]);
    }
    let name = param(&params, "username");
    let Some(user) = shared.users.iter().position(|u| u.name == name) else {
        return form(&params, StatusCode::UNAUTHORIZED, Some(&format!("No such user: '{name}'.")));
    };
    let code = random();
    let grant = Grant {
        client_id: param(&params, "client_id").to_owned(),
        redirect_uri: redirect_uri.clone(),
        challenge: param(&params, "code_challenge").to_owned(),
        nonce: params.get("nonce").cloned(),
        user,
        expires: Instant::now() + shared.code_lifetime,
    };
    lock(&shared.codes).insert(code.clone(), grant);
    back_to(&redirect_uri, &params, &[("code", &code)])
}

/// An OAuth error answer of the token endpoint.
fn oauth_error(shared: &Shared, status: StatusCode, error: &str, why: &str) -> Response {
    lock(&shared.log).token.push(Err(error.to_owned()));
    let mut response = (status, Json(json!({"error": error, "error_description": why}))).into_response();
    response.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The client's id and secret from HTTP Basic, if the request used it.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let raw = headers.get(AUTHORIZATION)?.to_str().ok()?.strip_prefix("Basic ")?;
    let decoded = String::from_utf8(STANDARD.decode(raw.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    let unescape =
        |s: &str| url::form_urlencoded::parse(format!("x={s}").as_bytes()).next().map(|(_, v)| v.into_owned());
    Some((unescape(id)?, unescape(secret)?))
}

async fn token(State(shared): State<Arc<Shared>>, headers: HeaderMap, Form(params): Form<Params>) -> Response {
    let bad = |status, error, why| oauth_error(&shared, status, error, why);
    if param(&params, "grant_type") != "authorization_code" {
        return bad(StatusCode::BAD_REQUEST, "unsupported_grant_type", "only authorization_code");
    }
    let (client_id, secret) = match basic_credentials(&headers) {
        Some((id, secret)) => (id, Some(secret)),
        None => (param(&params, "client_id").to_owned(), params.get("client_secret").cloned()),
    };
    let Some(client) = shared.clients.iter().find(|c| c.client_id == client_id) else {
        return bad(StatusCode::UNAUTHORIZED, "invalid_client", "unknown client");
    };
    if let Some(expected) = &client.secret
        && secret.as_deref() != Some(expected.as_str())
    {
        return bad(StatusCode::UNAUTHORIZED, "invalid_client", "the client secret is missing or wrong");
    }
    // Taken out at once: a code is spent by its first use, whatever that use's fate.
    let Some(grant) = lock(&shared.codes).remove(param(&params, "code")) else {
        return bad(StatusCode::BAD_REQUEST, "invalid_grant", "unknown or used code");
    };
    if grant.client_id != client.client_id {
        return bad(StatusCode::BAD_REQUEST, "invalid_grant", "the code was issued to another client");
    }
    if Instant::now() >= grant.expires {
        return bad(StatusCode::BAD_REQUEST, "invalid_grant", "the code has expired");
    }
    if param(&params, "redirect_uri") != grant.redirect_uri {
        return bad(StatusCode::BAD_REQUEST, "invalid_grant", "redirect_uri is not the authorization request's");
    }
    let verifier = param(&params, "code_verifier");
    let well_formed = (43..=128).contains(&verifier.len())
        && verifier.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    if !well_formed || s256(verifier) != grant.challenge {
        return bad(StatusCode::BAD_REQUEST, "invalid_grant", "code_verifier does not match the code_challenge");
    }
    let user = &shared.users[grant.user];
    let faults = lock(&shared.faults).clone();
    let mut now = SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_secs();
    if faults.expired {
        now -= TOKEN_LIFETIME.as_secs() + 600;
    }
    let mut claims = json!({
        "iss": faults.iss.clone().unwrap_or_else(|| shared.issuer.clone()),
        "sub": user.sub,
        "aud": faults.aud.clone().unwrap_or_else(|| client.client_id.clone()),
        "iat": now,
        "exp": now + TOKEN_LIFETIME.as_secs(),
        "auth_time": now,
        "azp": client.client_id,
        "preferred_username": user.name,
        "name": user.name,
    });
    let object = claims.as_object_mut().expect("an object");
    if let Some(nonce) = faults.nonce.clone().or(grant.nonce) {
        object.insert("nonce".into(), nonce.into());
    }
    if let Some(oid) = &user.oid {
        object.insert("oid".into(), oid.clone().into());
    }
    if !user.groups.is_empty() {
        object.insert("groups".into(), json!(user.groups));
    }
    object.extend(user.claims.clone());
    let key = if faults.unpublished_key {
        &shared.unpublished
    } else if faults.unknown_kid {
        &shared.stranger
    } else {
        &shared.key
    };
    let id_token = key.sign(&claims);
    {
        let mut log = lock(&shared.log);
        log.token.push(Ok(user.name.clone()));
        log.id_tokens.push(id_token.clone());
    }
    let mut response = Json(json!({
        "id_token": id_token,
        "access_token": random(),
        "token_type": "Bearer",
        "expires_in": TOKEN_LIFETIME.as_secs(),
        "scope": "openid profile email",
    }))
    .into_response();
    response.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// BASE64URL(SHA-256(verifier)): the S256 challenge.
pub fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes()))
}

fn random() -> String {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).expect("random bytes");
    URL_SAFE_NO_PAD.encode(bytes)
}

fn escape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// An error page (`message` is HTML, already escaped).
fn page(status: StatusCode, message: &str) -> Response {
    page_with(status, &format!("<h1>Sign-in error</h1>\n<p role=\"alert\" id=\"oidc-error\">{message}</p>"))
}

fn page_with(status: StatusCode, body: &str) -> Response {
    let html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\"><title>Test identity provider</title></head>\n\
         <body>\n<main>\n{body}\n</main>\n</body>\n</html>\n"
    );
    let mut response = (status, html).into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT: &str = "casefile-console";
    const BACK: &str = "https://casefile.example/console/signin/callback";
    const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

    fn provider() -> OidcProvider {
        OidcProvider::start(
            vec![OidcClient::public(CLIENT, BACK), OidcClient::confidential("confidential", BACK, "s3cret")],
            vec![OidcUser::new("ana@corp.example").oid("oid-ana").groups(&["soc", "web-team"])],
        )
    }

    /// reqwest is built here without its `form` feature.
    trait FormBody {
        fn form_body<K: AsRef<str>, V: AsRef<str>>(self, pairs: &[(K, V)]) -> Self;
    }

    impl FormBody for reqwest::RequestBuilder {
        fn form_body<K: AsRef<str>, V: AsRef<str>>(self, pairs: &[(K, V)]) -> Self {
            let body = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(pairs.iter().map(|(k, v)| (k.as_ref(), v.as_ref())))
                .finish();
            self.header(CONTENT_TYPE, "application/x-www-form-urlencoded").body(body)
        }
    }

    fn http() -> reqwest::Client {
        reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
    }

    fn request(client_id: &str) -> Vec<(&'static str, String)> {
        vec![
            ("client_id", client_id.to_owned()),
            ("redirect_uri", BACK.to_owned()),
            ("response_type", "code".to_owned()),
            ("scope", "openid profile".to_owned()),
            ("state", "st-1".to_owned()),
            ("nonce", "n-1".to_owned()),
            ("code_challenge", s256(VERIFIER)),
            ("code_challenge_method", "S256".to_owned()),
        ]
    }

    fn location(response: &reqwest::Response) -> url::Url {
        assert_eq!(response.status(), 303);
        url::Url::parse(response.headers()[LOCATION.as_str()].to_str().unwrap()).unwrap()
    }

    fn query(url: &url::Url) -> HashMap<String, String> {
        url.query_pairs().into_owned().collect()
    }

    /// Signs `user` in through the form; the code the provider sent back.
    async fn sign_in(provider: &OidcProvider, client_id: &str, user: &str) -> String {
        let mut form = request(client_id);
        form.push(("username", user.to_owned()));
        form.push(("decision", "allow".to_owned()));
        let answer = http().post(provider.authorization_endpoint()).form_body(&form).send().await.unwrap();
        let back = location(&answer);
        assert_eq!(back.as_str().split('?').next().unwrap(), BACK);
        let q = query(&back);
        assert_eq!(q["state"], "st-1");
        q["code"].clone()
    }

    async fn exchange(provider: &OidcProvider, form: &[(&str, &str)]) -> (u16, Value) {
        let answer = http().post(provider.token_endpoint()).form_body(form).send().await.unwrap();
        (answer.status().as_u16(), answer.json().await.unwrap())
    }

    fn exchange_form<'a>(code: &'a str, client_id: &'a str, verifier: &'a str) -> Vec<(&'a str, &'a str)> {
        vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", BACK),
            ("client_id", client_id),
            ("code_verifier", verifier),
        ]
    }

    /// Verifies an ID token with the provider's published JWKS, as a relying party does.
    async fn verify(provider: &OidcProvider, token: &str, aud: &str) -> Result<Value, jsonwebtoken::errors::Error> {
        let set: jsonwebtoken::jwk::JwkSet =
            http().get(provider.jwks_url()).send().await.unwrap().json().await.unwrap();
        let header = jsonwebtoken::decode_header(token)?;
        let Some(jwk) = set.find(header.kid.as_deref().unwrap_or_default()) else {
            return Err(jsonwebtoken::errors::ErrorKind::InvalidKeyFormat.into());
        };
        let mut validation = jsonwebtoken::Validation::new(header.alg);
        validation.set_issuer(&[provider.issuer()]);
        validation.set_audience(&[aud]);
        Ok(jsonwebtoken::decode::<Value>(token, &jsonwebtoken::DecodingKey::from_jwk(jwk)?, &validation)?.claims)
    }

    #[tokio::test]
    async fn the_code_flow_gives_a_verifiable_id_token_once() {
        let provider = provider();
        let discovery: Value = http()
            .get(format!("{}/.well-known/openid-configuration", provider.issuer()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(discovery["issuer"], provider.issuer());
        assert_eq!(discovery["authorization_endpoint"], provider.authorization_endpoint());
        assert_eq!(discovery["token_endpoint"], provider.token_endpoint());
        assert_eq!(discovery["jwks_uri"], provider.jwks_url());

        let page = http().get(provider.authorization_endpoint()).query(&request(CLIENT)).send().await.unwrap();
        assert_eq!(page.status(), 200);
        let html = page.text().await.unwrap();
        for part in ["<label for=\"oidc-user\">", "id=\"oidc-user\"", "id=\"oidc-sign-in\"", "value=\"st-1\""] {
            assert!(html.contains(part), "{part} in {html}");
        }
        assert_eq!(provider.authorize_requests()[0]["nonce"], "n-1");

        let code = sign_in(&provider, CLIENT, "ana@corp.example").await;
        let (status, answer) = exchange(&provider, &exchange_form(&code, CLIENT, VERIFIER)).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!((answer["token_type"].as_str(), answer["expires_in"].as_u64()), (Some("Bearer"), Some(300)));
        let claims = verify(&provider, answer["id_token"].as_str().unwrap(), CLIENT).await.unwrap();
        assert_eq!(claims["sub"], "sub-ana@corp.example");
        assert_eq!(claims["preferred_username"], "ana@corp.example");
        assert_eq!(claims["oid"], "oid-ana");
        assert_eq!(claims["nonce"], "n-1");
        assert_eq!(claims["groups"], json!(["soc", "web-team"]));

        let (status, again) = exchange(&provider, &exchange_form(&code, CLIENT, VERIFIER)).await;
        assert_eq!((status, again["error"].as_str()), (400, Some("invalid_grant")), "a code is single-use");
        assert_eq!(provider.token_answers(), [Ok("ana@corp.example".to_owned()), Err("invalid_grant".to_owned())]);
    }

    #[tokio::test]
    async fn bad_requests_are_refused_and_never_redirected_to_unregistered_uris() {
        let provider = provider();
        let get = |pairs: Vec<(&'static str, String)>| {
            let provider = provider.authorization_endpoint();
            async move { http().get(provider).query(&pairs).send().await.unwrap() }
        };
        let with = |name: &'static str, value: &str| {
            let mut pairs = request(CLIENT);
            pairs.retain(|(n, _)| *n != name);
            pairs.push((name, value.to_owned()));
            pairs
        };
        for (name, value) in [("client_id", "stranger"), ("redirect_uri", "https://evil.example/cb")] {
            let answer = get(with(name, value)).await;
            assert_eq!(answer.status(), 400, "{name}");
            assert!(answer.headers().get(LOCATION).is_none());
        }
        for (name, value, error) in [
            ("response_type", "token", "unsupported_response_type"),
            ("code_challenge_method", "plain", "invalid_request"),
            ("scope", "profile", "invalid_scope"),
        ] {
            let q = query(&location(&get(with(name, value)).await));
            assert_eq!((q["error"].as_str(), q["state"].as_str()), (error, "st-1"), "{name}");
        }

        // An unknown user gets the form again; Cancel sends access_denied back.
        let mut form = request(CLIENT);
        form.push(("username", "mallory".to_owned()));
        let answer = http().post(provider.authorization_endpoint()).form_body(&form).send().await.unwrap();
        assert_eq!(answer.status(), 401);
        assert!(answer.text().await.unwrap().contains("No such user"));
        form.push(("decision", "deny".to_owned()));
        let q =
            query(&location(&http().post(provider.authorization_endpoint()).form_body(&form).send().await.unwrap()));
        assert_eq!(q["error"], "access_denied");
        provider.set_faults(Faults { deny: true, ..Faults::default() });
        assert_eq!(query(&location(&get(request(CLIENT)).await))["error"], "access_denied");
        provider.set_faults(Faults::default());

        // Each exchange below spends its code, whatever was wrong with it.
        let wrong_verifier = "x".repeat(43);
        for (form, error) in [
            (("code_verifier", wrong_verifier.as_str()), "invalid_grant"),
            (("code_verifier", "short"), "invalid_grant"),
            (("redirect_uri", "https://casefile.example/other"), "invalid_grant"),
            (("client_id", "stranger"), "invalid_client"),
        ] {
            let code = sign_in(&provider, CLIENT, "ana@corp.example").await;
            let mut exchange_form = exchange_form(&code, CLIENT, VERIFIER);
            exchange_form.retain(|(n, _)| *n != form.0);
            exchange_form.push(form);
            let (status, answer) = exchange(&provider, &exchange_form).await;
            assert_eq!(answer["error"], error, "{form:?}");
            assert_eq!(status, if error == "invalid_client" { 401 } else { 400 });
        }
        // A code is the client's it was issued to.
        let code_of_public = sign_in(&provider, CLIENT, "ana@corp.example").await;
        let mut stolen = exchange_form(&code_of_public, "confidential", VERIFIER);
        stolen.push(("client_secret", "s3cret"));
        assert_eq!(exchange(&provider, &stolen).await.1["error"], "invalid_grant");

        // A confidential client needs its secret, in the body or HTTP Basic.
        let code = sign_in(&provider, "confidential", "ana@corp.example").await;
        assert_eq!(exchange(&provider, &exchange_form(&code, "confidential", VERIFIER)).await.0, 401);
        let code = sign_in(&provider, "confidential", "ana@corp.example").await;
        let answer = http()
            .post(provider.token_endpoint())
            .basic_auth("confidential", Some("s3cret"))
            .form_body(&exchange_form(&code, "confidential", VERIFIER))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
    }

    #[tokio::test]
    async fn expired_codes_are_refused() {
        let provider = OidcProvider::builder()
            .client(OidcClient::public(CLIENT, BACK))
            .user(OidcUser::new("ana"))
            .code_lifetime(Duration::ZERO)
            .start();
        let code = sign_in(&provider, CLIENT, "ana").await;
        let (status, answer) = exchange(&provider, &exchange_form(&code, CLIENT, VERIFIER)).await;
        assert_eq!((status, answer["error_description"].as_str()), (400, Some("the code has expired")));
    }

    #[tokio::test]
    async fn faults_break_exactly_what_they_name() {
        for algorithm in [Algorithm::Es256, Algorithm::Rs256] {
            let provider = OidcProvider::builder()
                .client(OidcClient::public(CLIENT, BACK))
                .user(OidcUser::new("ana").claim("tid", json!("t-1")))
                .algorithm(algorithm)
                .start();
            let token = |faults: Faults| {
                provider.set_faults(faults);
                let provider = &provider;
                async move {
                    let code = sign_in(provider, CLIENT, "ana").await;
                    let (_, answer) = exchange(provider, &exchange_form(&code, CLIENT, VERIFIER)).await;
                    answer["id_token"].as_str().unwrap().to_owned()
                }
            };
            let good = verify(&provider, &token(Faults::default()).await, CLIENT).await.unwrap();
            assert_eq!(good["tid"], "t-1");
            let unpublished = token(Faults { unpublished_key: true, ..Faults::default() }).await;
            assert_eq!(
                jsonwebtoken::decode_header(&unpublished).unwrap().kid,
                jsonwebtoken::decode_header(&token(Faults::default()).await).unwrap().kid
            );
            for bad in [unpublished, token(Faults { unknown_kid: true, ..Faults::default() }).await] {
                assert!(verify(&provider, &bad, CLIENT).await.is_err(), "{algorithm:?}");
            }
            let wrong_aud = token(Faults { aud: Some("someone-else".into()), ..Faults::default() }).await;
            assert!(verify(&provider, &wrong_aud, CLIENT).await.is_err());
            assert!(verify(&provider, &wrong_aud, "someone-else").await.is_ok());
            let wrong_iss = token(Faults { iss: Some("https://evil.example".into()), ..Faults::default() }).await;
            assert!(verify(&provider, &wrong_iss, CLIENT).await.is_err());
            let expired = token(Faults { expired: true, ..Faults::default() }).await;
            assert_eq!(
                *verify(&provider, &expired, CLIENT).await.unwrap_err().kind(),
                jsonwebtoken::errors::ErrorKind::ExpiredSignature
            );
            let wrong_nonce = token(Faults { nonce: Some("other".into()), ..Faults::default() }).await;
            assert_eq!(verify(&provider, &wrong_nonce, CLIENT).await.unwrap()["nonce"], "other");
        }
    }

    #[tokio::test]
    async fn a_dropped_provider_stops_listening() {
        let provider = provider();
        let addr = provider.addr;
        assert!(http().get(provider.jwks_url()).send().await.unwrap().status().is_success());
        drop(provider);
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }
}
