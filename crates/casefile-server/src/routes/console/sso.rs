//! Single sign-on: OpenID Connect's authorization code flow with PKCE (S256), against the
//! providers of `[[console.sso]]`. The flow's secrets (state, nonce, code verifier, where
//! to go after) wait in a short-lived cookie of their own; the ID token is verified with
//! the trusted issuer's keys for the console's client id, and its tenant mapped as an
//! access token's is.

use std::time::Duration;

use axum::http::header::LOCATION;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use casefile_proto::TenantId;
use casefile_store::SessionIdentity;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::signin::set_cookie;
use super::{BaseUrl, Failure, cookie, safe_next};
use crate::config::SsoConfig;
use crate::state::AppState;

pub(super) const FLOW_COOKIE: &str = "__Host-casefile-sso";
/// How long a browser may take at the provider.
const FLOW_SECONDS: u32 = 600;
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest discovery document or token answer read.
const MAX_ANSWER_BYTES: usize = 256 << 10;

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
}

#[derive(Deserialize)]
pub(crate) struct Callback {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_description: Option<String>,
}

fn refused(message: impl Into<String>) -> Failure {
    Failure { status: StatusCode::UNAUTHORIZED, code: "Unauthorized".into(), message: message.into() }
}

fn unavailable(message: impl Into<String>) -> Failure {
    tracing::warn!("single sign-on: {}", message.into());
    Failure {
        status: StatusCode::BAD_GATEWAY,
        code: "ServiceUnavailable".into(),
        message: "The identity provider could not be reached or answered wrongly; the server's log says why.".into(),
    }
}

fn client() -> Result<reqwest::Client, Failure> {
    reqwest::Client::builder()
        .timeout(FETCH_TIMEOUT)
        .connect_timeout(FETCH_TIMEOUT / 2)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("casefile/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(Failure::internal)
}

/// A bounded answer's status and body.
async fn read_body(mut response: reqwest::Response, what: &str) -> Result<(StatusCode, Vec<u8>), Failure> {
    let status = response.status();
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| unavailable(format!("{what}: {e}")))? {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_ANSWER_BYTES {
            return Err(unavailable(format!("{what}: the answer is larger than {MAX_ANSWER_BYTES} bytes")));
        }
    }
    Ok((status, body))
}

fn parse_json<T: serde::de::DeserializeOwned>(status: StatusCode, body: &[u8], what: &str) -> Result<T, Failure> {
    if !status.is_success() {
        return Err(unavailable(format!("{what}: HTTP {status}: {}", String::from_utf8_lossy(body))));
    }
    serde_json::from_slice(body).map_err(|e| unavailable(format!("{what}: {e}")))
}

async fn read_json<T: serde::de::DeserializeOwned>(response: reqwest::Response, what: &str) -> Result<T, Failure> {
    let (status, body) = read_body(response, what).await?;
    parse_json(status, &body, what)
}

/// The token endpoint's answer. `invalid_grant` (RFC 6749 §5.2: a code used twice,
/// expired, or whose verifier is not the challenge's) refuses the sign-in; any other
/// failure (`invalid_client`: a wrong client secret) is the configuration's or the
/// provider's, for the log.
async fn read_tokens(response: reqwest::Response) -> Result<TokenAnswer, Failure> {
    #[derive(Deserialize)]
    struct OAuthError {
        error: String,
    }
    let (status, body) = read_body(response, "token endpoint").await?;
    if status == StatusCode::BAD_REQUEST
        && serde_json::from_slice::<OAuthError>(&body).is_ok_and(|refusal| refusal.error == "invalid_grant")
    {
        crate::audit::note_detail(serde_json::json!({
            "reason": "the identity provider refused the code: invalid_grant",
            "error": "invalid_grant",
        }));
        return Err(refused(
            "The identity provider refused this sign-in's code (used already, expired, or not this browser's). Start again.",
        ));
    }
    parse_json(status, &body, "token endpoint")
}

async fn discover(provider: &SsoConfig) -> Result<Discovery, Failure> {
    let url = format!("{}/.well-known/openid-configuration", provider.issuer.trim_end_matches('/'));
    let url = crate::auth::issuers::check_fetch_url(&url).map_err(unavailable)?;
    let response = client()?.get(url).send().await.map_err(|e| unavailable(format!("discovery: {e}")))?;
    let found: Discovery = read_json(response, "discovery").await?;
    if found.issuer != provider.issuer {
        return Err(unavailable(format!(
            "discovery of {} names the issuer {}; they must be the same",
            provider.issuer, found.issuer
        )));
    }
    for endpoint in [&found.authorization_endpoint, &found.token_endpoint] {
        crate::auth::issuers::check_fetch_url(endpoint).map_err(unavailable)?;
    }
    Ok(found)
}

fn random() -> String {
    crate::secrets::generate("")
}

fn callback_url(base: &BaseUrl) -> String {
    format!("{}/console/signin/callback", base.0)
}

/// `GET /console/signin/sso/{provider}`: to the provider's sign-in page.
pub(super) async fn start(state: &AppState, base: &BaseUrl, index: usize, next: &str) -> Result<Response, Failure> {
    let provider = state.config.console.sso.get(index).ok_or_else(|| Failure::not_found("No such sign-in provider"))?;
    let found = discover(provider).await?;
    let (flow_state, nonce, verifier) = (random(), random(), random());
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let scope =
        std::iter::once("openid").chain(provider.scopes.iter().map(String::as_str)).collect::<Vec<_>>().join(" ");
    let mut url = url::Url::parse(&found.authorization_endpoint).map_err(|e| unavailable(e.to_string()))?;
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &provider.client_id)
        .append_pair("redirect_uri", &callback_url(base))
        .append_pair("scope", &scope)
        .append_pair("state", &flow_state)
        .append_pair("nonce", &nonce)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");
    let flow = format!("{index}.{flow_state}.{nonce}.{verifier}.{}", URL_SAFE_NO_PAD.encode(next));
    let mut response = StatusCode::SEE_OTHER.into_response();
    response.headers_mut().insert(LOCATION, HeaderValue::from_str(url.as_str()).map_err(Failure::internal)?);
    super::secure_headers(response.headers_mut(), "text/plain; charset=utf-8");
    // Lax: the provider sends the browser back with a top-level GET from its own site.
    set_cookie(
        &mut response,
        &format!("{FLOW_COOKIE}={flow}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age={FLOW_SECONDS}"),
    );
    Ok(response)
}

struct Flow {
    provider: usize,
    state: String,
    nonce: String,
    verifier: String,
    next: String,
}

fn read_flow(raw: &str) -> Option<Flow> {
    let mut parts = raw.split('.');
    let flow = Flow {
        provider: parts.next()?.parse().ok()?,
        state: parts.next()?.to_owned(),
        nonce: parts.next()?.to_owned(),
        verifier: parts.next()?.to_owned(),
        next: String::from_utf8(URL_SAFE_NO_PAD.decode(parts.next()?).ok()?).ok()?,
    };
    parts.next().is_none().then_some(flow)
}

#[derive(Deserialize)]
struct TokenAnswer {
    id_token: String,
}

/// `GET /console/signin/callback`: the provider's answer, checked end to end.
pub(super) async fn finish(
    state: &AppState,
    base: &BaseUrl,
    headers: &HeaderMap,
    answer: Callback,
) -> Result<(TenantId, SessionIdentity, String), Failure> {
    let flow = cookie(headers, FLOW_COOKIE).and_then(|raw| read_flow(&raw)).ok_or_else(|| {
        crate::audit::note_detail(serde_json::json!({"reason": "no sign-in flow cookie, or a malformed one"}));
        refused("This sign-in started elsewhere or took too long. Start again from the sign-in page.")
    })?;
    let provider = state.config.console.sso.get(flow.provider).ok_or_else(|| refused("No such sign-in provider"))?;
    if answer.state.as_deref() != Some(flow.state.as_str()) {
        crate::audit::note_detail(serde_json::json!({"reason": "the sign-in answer's state is not this browser's"}));
        return Err(refused("The identity provider's answer does not belong to this sign-in. Start again."));
    }
    if let Some(error) = answer.error {
        let why = answer.error_description.unwrap_or_default();
        crate::audit::note_detail(serde_json::json!({"reason": "the identity provider refused", "error": error}));
        return Err(refused(format!("{} refused the sign-in: {error} {why}", provider.name)));
    }
    let code = answer.code.ok_or_else(|| refused("The identity provider's answer has no code"))?;
    let found = discover(provider).await?;
    let mut form = vec![
        ("grant_type", "authorization_code".to_owned()),
        ("code", code),
        ("redirect_uri", callback_url(base)),
        ("client_id", provider.client_id.clone()),
        ("code_verifier", flow.verifier.clone()),
    ];
    if let Some(path) = &provider.client_secret_file {
        let secret = tokio::fs::read_to_string(path)
            .await
            .map_err(|e| Failure::internal(format!("console.sso client_secret_file {}: {e}", path.display())))?;
        form.push(("client_secret", secret.trim().to_owned()));
    }
    let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(form.iter()).finish();
    let response = client()?
        .post(&found.token_endpoint)
        .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .map_err(|e| unavailable(format!("token endpoint: {e}")))?;
    let tokens = read_tokens(response).await?;
    let (claims, nonce) =
        crate::auth::issuers::verify_id_token(state, &provider.issuer, &tokens.id_token, &provider.client_id)
            .await
            .map_err(|e| {
                crate::audit::note_detail(serde_json::json!({"reason": format!("the ID token was refused: {e:?}")}));
                refused("The identity provider's ID token could not be verified.")
            })?;
    if nonce.as_deref() != Some(flow.nonce.as_str()) {
        crate::audit::note_detail(serde_json::json!({"reason": "the ID token's nonce is not this sign-in's"}));
        return Err(refused("The ID token does not belong to this sign-in."));
    }
    let tenant =
        TenantId::parse(&claims.tid).ok_or_else(|| refused("The ID token's tenant is not a valid tenant id"))?;
    if claims.sub.is_empty() {
        return Err(refused("The ID token names no subject (sub)"));
    }
    if let Err(e) = crate::auth::caller::not_a_local_name(state, &claims).await {
        crate::audit::note_detail(serde_json::json!({"reason": e.message}));
        return Err(refused(
            "Your identity provider's user name is the name of a local user of this tenant, so it cannot be used \
             to sign in here. Ask an administrator.",
        ));
    }
    let identity = SessionIdentity {
        issuer: claims.iss,
        subject: claims.sub,
        upn: claims.upn.or(claims.unique_name),
        oid: claims.oid,
        groups: claims.groups,
    };
    Ok((tenant, identity, safe_next(Some(&flow.next))))
}
