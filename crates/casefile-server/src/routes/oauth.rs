//! The token endpoint and OpenID discovery, at the paths Entra ID serves them, so that an
//! MDE client changes only its login host: `POST /{tenant}/oauth2/v2.0/token`
//! (`scope=<audience>/.default`) and `POST /{tenant}/oauth2/token` (`resource=<audience>`),
//! client credentials only, answering and failing in Entra's shapes
//! (`../shared/spec/mde-api.md` §6.1).

use axum::body::Body;
use axum::extract::State;
use axum::http::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, PRAGMA, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use casefile_proto::oauth::{OAuthError, TokenResponseV1, TokenResponseV2};
use serde::Serialize;

use super::{BaseUrl, Path};
use crate::auth::applications::{self, Rejected};
use crate::auth::caller::valid_tenant_id;
use crate::auth::tokens::{self, TokenVersion};
use crate::correlation;
use crate::state::AppState;

/// Largest token request read; real ones are a few hundred bytes.
const MAX_BODY: usize = 16 * 1024;
/// OpenID Connect scopes a client may send beside `<audience>/.default`; they ask for
/// nothing here.
const OIDC_SCOPES: &[&str] = &["openid", "profile", "offline_access", "email"];

/// `POST /{tenant}/oauth2/v2.0/token`.
pub async fn token_v2(state: State<AppState>, tenant: Path<String>, headers: HeaderMap, body: Body) -> Response {
    token(state, tenant, headers, body, TokenVersion::V2).await
}

/// `POST /{tenant}/oauth2/token`.
pub async fn token_v1(state: State<AppState>, tenant: Path<String>, headers: HeaderMap, body: Body) -> Response {
    token(state, tenant, headers, body, TokenVersion::V1).await
}

async fn token(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Body,
    version: TokenVersion,
) -> Response {
    match grant(&state, &tenant, &headers, body, version).await {
        Ok(response) => response,
        Err(failure) => failure.into_response(),
    }
}

/// A client-credentials grant, checked in Entra's order: the request's shape, the grant
/// type, the audience, then the client's credentials.
async fn grant(
    state: &AppState,
    tenant: &str,
    headers: &HeaderMap,
    body: Body,
    version: TokenVersion,
) -> Result<Response, Failure> {
    let limits = &state.config.rate_limits;
    let source = crate::audit::source_address().map(|ip| ip.to_string()).unwrap_or_default();
    throttle(state, "source", &source, limits.token_requests_per_source_per_minute).await?;
    let form = Form::read(headers, body).await?;
    let basic = basic_credentials(headers)?;
    let grant_type = form.required("grant_type")?;
    if grant_type == "password" {
        return password_grant(state, tenant, &form, version).await;
    }
    if grant_type != "client_credentials" {
        return Err(Failure::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            format!(
                "The app requested an unsupported grant type '{grant_type}'. This server issues application \
                 tokens (grant_type=client_credentials) and tokens of its local users to its own CLI \
                 (grant_type=password, client_id={CLI_CLIENT_ID})."
            ),
        ));
    }
    let (client_id, secret) = client_credentials(&form, basic)?;
    // Before the secret is checked: an outsider flooding one client id must not buy a
    // secret check (argon2, two at a time) per request.
    throttle(state, "client", &client_id.to_ascii_lowercase(), limits.token_requests_per_client_per_minute).await?;
    let audience = match version {
        TokenVersion::V2 => audience_of_scope(state, tenant, form.required("scope")?)?,
        TokenVersion::V1 => accepted_resource(state, tenant, form.required("resource")?)?,
    };
    // Who asked, as far as they said: the trail keeps refused attempts too.
    crate::audit::note_claimed_actor("application", &client_id.chars().take(64).collect::<String>(), tenant);
    crate::audit::note_target(client_id.chars().take(64).collect::<String>());
    crate::audit::note_detail(serde_json::json!({"audience": audience, "version": format!("{version:?}")}));
    let app = match applications::authenticate(state.store.as_ref(), tenant, &client_id, &secret.value).await {
        Ok(app) => app,
        Err(rejected) => return Err(refusal(tenant, &client_id, rejected, secret.in_header)),
    };
    // Wall-clock time, as token verification uses.
    let now = chrono::Utc::now().timestamp();
    let issued = tokens::issue(&state.keyring, &state.config.auth, &app, &audience, version, now)
        .map_err(|e| Failure::internal(format!("signing the token: {e}")))?;
    tracing::info!(tenant = %app.tenant_id, client_id = %app.client_id, app = %app.name, %audience, "token issued");
    Ok(token_answer(issued, audience, version, now))
}

/// The token endpoint's answer, in the shape of its version.
fn token_answer(issued: tokens::Issued, audience: String, version: TokenVersion, now: i64) -> Response {
    let expires_in = (issued.claims.exp - now - 1).max(0) as u64;
    match version {
        TokenVersion::V2 => oauth_json(
            StatusCode::OK,
            &TokenResponseV2 {
                token_type: "Bearer".into(),
                expires_in,
                ext_expires_in: expires_in,
                access_token: issued.token,
            },
        ),
        TokenVersion::V1 => oauth_json(
            StatusCode::OK,
            &TokenResponseV1 {
                token_type: "Bearer".into(),
                expires_in: expires_in.to_string(),
                ext_expires_in: expires_in.to_string(),
                expires_on: issued.claims.exp.to_string(),
                not_before: issued.claims.nbf.to_string(),
                resource: audience,
                access_token: issued.token,
            },
        ),
    }
}

/// casefile's own CLI: the one public client, which may sign a local user in with a name
/// and password (`casefile login --user`).
pub const CLI_CLIENT_ID: &str = "casefile-cli";

/// A resource-owner-password grant for a local user, asked by casefile's CLI only: a
/// delegated token (`scp`, `upn` = the user's name), whose permissions are the roles RBAC
/// gives that user, as for a console session. Wrong names, wrong passwords and disabled
/// users get one answer; the backoff of failed sign-ins applies as on the console.
async fn password_grant(
    state: &AppState,
    tenant: &str,
    form: &Form,
    version: TokenVersion,
) -> Result<Response, Failure> {
    let client_id = form.required("client_id")?;
    if client_id != CLI_CLIENT_ID {
        return Err(Failure::new(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            format!("The password grant is only for casefile's CLI (client_id={CLI_CLIENT_ID})."),
        ));
    }
    let name = form.required("username")?.to_owned();
    let password = form.required("password")?;
    let limits = &state.config.rate_limits;
    let user_key = format!("{tenant}\n{}", name.to_ascii_lowercase());
    throttle(state, "user", &user_key, limits.token_requests_per_client_per_minute).await?;
    let audience = match version {
        TokenVersion::V2 => audience_of_scope(state, tenant, form.required("scope")?)?,
        TokenVersion::V1 => accepted_resource(state, tenant, form.required("resource")?)?,
    };
    let tenant_id = casefile_proto::TenantId::parse(tenant).ok_or_else(|| {
        Failure::new(StatusCode::BAD_REQUEST, "invalid_request", 90002, format!("Tenant '{tenant}' not found."))
    })?;
    crate::audit::note_claimed_actor("user", &name.chars().take(64).collect::<String>(), tenant);
    crate::audit::note_detail(serde_json::json!({"audience": audience, "grant": "password", "client": CLI_CLIENT_ID}));
    let user = match crate::auth::users::sign_in(&*state.store, &tenant_id, &name, password, state.now()).await {
        Ok(crate::auth::users::SignIn::Accepted(user)) => user,
        Ok(crate::auth::users::SignIn::Refused) => {
            return Err(Failure::new(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                50126,
                "Error validating credentials due to invalid username or password. After repeated failures, \
                 sign-in is paused for a while."
                    .to_owned(),
            ));
        }
        Err(e) => return Err(Failure::internal(format!("signing a user in: {e}"))),
    };
    crate::audit::note_actor("user", &user.name, tenant);
    let now = chrono::Utc::now().timestamp();
    let issued = tokens::issue_for_user(&state.keyring, &state.config.auth, &user, &audience, version, now)
        .map_err(|e| Failure::internal(format!("signing the token: {e}")))?;
    tracing::info!(%tenant, user = %user.name, %audience, "user token issued to the CLI");
    Ok(token_answer(issued, audience, version, now))
}

/// Counts a token request against `key`'s quota for a minute; `429` with `Retry-After`
/// past it, as Entra ID throttles a client-credentials flood.
pub(crate) async fn throttle(state: &AppState, kind: &str, key: &str, per_minute: u32) -> Result<(), Failure> {
    if !state.config.rate_limits.enabled {
        return Ok(());
    }
    let window = [crate::ratelimit::Window { length: std::time::Duration::from_secs(60), limit: per_minute }];
    let Err(wait) = state.limiter.hit(&format!("token\n{kind}\n{key}"), &window, state.now()).await else {
        return Ok(());
    };
    state.metrics.rate_limited(match kind {
        "source" => "token_source",
        "signin" => "console_signin",
        _ => "token_client",
    });
    let seconds = crate::ratelimit::retry_after_seconds(wait);
    let mut failure = Failure::new(
        StatusCode::TOO_MANY_REQUESTS,
        "temporarily_unavailable",
        50196,
        format!("Too many token requests from this {kind}; retry after {seconds} seconds."),
    );
    failure.retry_after = Some(seconds);
    Err(failure)
}

/// The answer to a refused client. An unknown client, another tenant's client and a
/// wrong secret get the same answer, so nobody learns which client ids exist; the log
/// says which it was.
fn refusal(tenant: &str, client_id: &str, rejected: Rejected, basic: bool) -> Failure {
    let client: String = client_id.chars().take(64).collect();
    match rejected {
        Rejected::Failed(e) => Failure::internal(format!("authenticating a client: {e}")),
        Rejected::Disabled(app) => {
            tracing::warn!(%tenant, client_id = %client, reason = "application disabled", "token request refused");
            Failure::new(
                StatusCode::BAD_REQUEST,
                "unauthorized_client",
                7000112,
                format!("Application '{}'({}) is disabled.", app.client_id, app.name),
            )
        }
        reason => {
            tracing::warn!(%tenant, client_id = %client, reason = %reason, "token request refused: wrong client credentials");
            let failure = Failure::new(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                7000215,
                format!(
                    "Invalid client secret provided. Ensure the secret being sent in the request is the client \
                     secret value, not the client secret ID, for a secret added to app '{client}'."
                ),
            );
            if basic { failure.with_basic_challenge() } else { failure }
        }
    }
}

/// The audience of a v2 `scope`: exactly one `<audience>/.default` (OpenID scopes aside).
fn audience_of_scope(state: &AppState, tenant: &str, scope: &str) -> Result<String, Failure> {
    let requested: Vec<&str> = scope.split_whitespace().filter(|s| !OIDC_SCOPES.contains(s)).collect();
    match requested.as_slice() {
        [one] if one.ends_with("/.default") => accepted_resource(state, tenant, &one[..one.len() - "/.default".len()]),
        _ => Err(Failure::new(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            1002012,
            format!(
                "The provided value for scope {scope} is not valid. Client credential flows must have a scope value \
                 with /.default suffixed to the resource identifier (application ID URI)."
            ),
        )),
    }
}

fn accepted_resource(state: &AppState, tenant: &str, resource: &str) -> Result<String, Failure> {
    tokens::accepted_audience(&state.config.auth, resource).ok_or_else(|| {
        Failure::new(
            StatusCode::BAD_REQUEST,
            "invalid_resource",
            500011,
            format!(
                "The resource principal named {resource} was not found in the tenant named {tenant}. This can happen \
                 if the application has not been installed by the administrator of the tenant or consented to by any \
                 user in the tenant. You might have sent your authentication request to the wrong tenant."
            ),
        )
    })
}

/// A client secret, and whether it came in an `Authorization: Basic` header.
struct Secret {
    value: String,
    in_header: bool,
}

/// The client's id and secret, from the body (`client_secret_post`) or a Basic header
/// (`client_secret_basic`), never both.
fn client_credentials(form: &Form, basic: Option<(String, String)>) -> Result<(String, Secret), Failure> {
    match basic {
        Some((id, secret)) => {
            if form.get("client_secret").is_some() || form.get("client_id").is_some_and(|body_id| body_id != id) {
                return Err(malformed("the client authenticated with both an Authorization header and the body"));
            }
            Ok((id, Secret { value: secret, in_header: true }))
        }
        None => {
            let id = form.required("client_id")?.to_owned();
            let secret = form.get("client_secret").filter(|s| !s.is_empty()).ok_or_else(|| {
                Failure::new(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    7000218,
                    "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
                )
            })?;
            Ok((id, Secret { value: secret.to_owned(), in_header: false }))
        }
    }
}

/// `Authorization: Basic base64(urlencode(id):urlencode(secret))` (RFC 6749 §2.3.1).
fn basic_credentials(headers: &HeaderMap) -> Result<Option<(String, String)>, Failure> {
    let Some(value) = headers.get(AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| malformed("the Authorization header is not text"))?;
    let Some((scheme, encoded)) = value.split_once(' ') else {
        return Ok(None);
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Ok(None);
    }
    let decoded = STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(|| malformed("the Basic credentials are not base64 text"))?;
    let (id, secret) = decoded.split_once(':').ok_or_else(|| malformed("the Basic credentials lack a ':'"))?;
    Ok(Some((form_decode(id), form_decode(secret))))
}

fn form_decode(raw: &str) -> String {
    url::form_urlencoded::parse(format!("v={raw}").as_bytes()).next().map(|(_, v)| v.into_owned()).unwrap_or_default()
}

/// The parameters of a form-encoded body; any other body has none (so `grant_type` is
/// reported missing, as Entra does for a JSON body).
struct Form(Vec<(String, String)>);

impl Form {
    async fn read(headers: &HeaderMap, body: Body) -> Result<Self, Failure> {
        let content_type = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        let mime = content_type.split(';').next().unwrap_or("").trim();
        let bytes = axum::body::to_bytes(body, MAX_BODY)
            .await
            .map_err(|_| malformed(&format!("the request body exceeds {MAX_BODY} bytes")))?;
        if !mime.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
            return Ok(Self(Vec::new()));
        }
        let pairs: Vec<(String, String)> = url::form_urlencoded::parse(&bytes).into_owned().collect();
        // RFC 6749 §3.2: no parameter may be sent more than once.
        if let Some((name, _)) = pairs.iter().enumerate().find_map(|(i, p)| pairs[..i].iter().find(|q| q.0 == p.0)) {
            return Err(malformed(&format!("the parameter '{name}' is sent more than once")));
        }
        Ok(Self(pairs))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    fn required(&self, name: &str) -> Result<&str, Failure> {
        self.get(name).filter(|v| !v.trim().is_empty()).ok_or_else(|| {
            Failure::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                900144,
                format!("The request body must contain the following parameter: '{name}'."),
            )
        })
    }
}

fn malformed(why: &str) -> Failure {
    Failure::new(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        9002313,
        format!("Invalid request. Request is malformed or invalid: {why}."),
    )
}

/// An OAuth2 error as Entra answers it: `error`, `error_description` starting with
/// `AADSTS<code>:` and ending with the trace and correlation ids, `error_codes`,
/// `timestamp`, `trace_id`, `correlation_id`.
pub(crate) struct Failure {
    status: StatusCode,
    error: &'static str,
    code: u32,
    message: String,
    basic_challenge: bool,
    /// Seconds for `Retry-After` (throttled requests).
    retry_after: Option<u64>,
}

impl Failure {
    fn new(status: StatusCode, error: &'static str, code: u32, message: impl Into<String>) -> Self {
        Self { status, error, code, message: message.into(), basic_challenge: false, retry_after: None }
    }

    fn internal(cause: String) -> Self {
        tracing::error!(correlation_id = %correlation::current(), "token endpoint: {cause}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            50000,
            "There was an error issuing a token; retry later.",
        )
    }

    /// RFC 6749 §5.2: a client that authenticated with a Basic header is told how to.
    fn with_basic_challenge(mut self) -> Self {
        self.basic_challenge = true;
        self
    }
}

impl Failure {
    fn body(&self) -> OAuthError {
        let trace_id = uuid::Uuid::new_v4().to_string();
        let correlation_id = correlation::current();
        let timestamp = chrono::Utc::now().format("%Y-%m-%d %H:%M:%SZ").to_string();
        OAuthError {
            error: self.error.to_owned(),
            error_description: format!(
                "AADSTS{}: {}\r\nTrace ID: {trace_id}\r\nCorrelation ID: {correlation_id}\r\nTimestamp: {timestamp}",
                self.code, self.message
            ),
            error_codes: vec![self.code],
            timestamp,
            trace_id,
            correlation_id,
        }
    }
}

impl Failure {
    /// Seconds the caller is asked to wait (`Retry-After`), when throttled.
    pub(crate) fn retry_after(&self) -> Option<u64> {
        self.retry_after
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let mut response = oauth_json(self.status, &self.body());
        if self.basic_challenge {
            response.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"casefile\""));
        }
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// A wrong method on a login route, as Entra answers a `GET` on its token endpoint:
/// `AADSTS900561`, `invalid_request` (`Allow` is added by the router).
pub(super) fn wrong_method(method: &axum::http::Method, accepted: &str) -> Response {
    Failure::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request",
        900561,
        format!("The endpoint only accepts {accepted} requests. Received a {method} request."),
    )
    .into_response()
}

/// Entra's error body for a login-route error no handler shaped (see `errors::json_bodies`).
pub(super) fn error_json(status: StatusCode, message: &str) -> Vec<u8> {
    let (error, code) = match status.as_u16() {
        500.. => ("server_error", 50000),
        429 => ("temporarily_unavailable", 50196),
        _ => ("invalid_request", 900144),
    };
    serde_json::to_vec(&Failure::new(status, error, code, message.to_owned()).body()).unwrap_or_default()
}

/// A token endpoint answer: compact JSON, never cached (RFC 6749 §5.1).
fn oauth_json<T: Serialize>(status: StatusCode, body: &T) -> Response {
    let json = serde_json::to_vec(body).unwrap_or_default();
    let mut response = (status, json).into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store, no-cache"));
    headers.insert(PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

/// `GET /{tenant}/v2.0/.well-known/openid-configuration`.
pub async fn openid_configuration_v2(state: State<AppState>, base: BaseUrl, tenant: Path<String>) -> Response {
    openid_configuration(state, base, tenant, TokenVersion::V2)
}

/// `GET /{tenant}/.well-known/openid-configuration`.
pub async fn openid_configuration_v1(state: State<AppState>, base: BaseUrl, tenant: Path<String>) -> Response {
    openid_configuration(state, base, tenant, TokenVersion::V1)
}

/// The OpenID provider metadata clients read to find the token endpoint and the keys.
/// Any well-formed tenant id gets one (the document does not tell which tenants exist).
fn openid_configuration(
    State(state): State<AppState>,
    BaseUrl(base): BaseUrl,
    Path(tenant): Path<String>,
    version: TokenVersion,
) -> Response {
    if !valid_tenant_id(&tenant) {
        return Failure::new(StatusCode::BAD_REQUEST, "invalid_tenant", 90002, format!("Tenant '{tenant}' not found."))
            .into_response();
    }
    let oauth2 = match version {
        TokenVersion::V2 => format!("{base}/{tenant}/oauth2/v2.0"),
        TokenVersion::V1 => format!("{base}/{tenant}/oauth2"),
    };
    let auth = &state.config.auth;
    let scopes: Vec<String> = crate::auth::MDE_AUDIENCES
        .iter()
        .copied()
        .chain(auth.extra_audiences.iter().map(String::as_str))
        .map(|aud| format!("{aud}/.default"))
        .collect();
    let document = serde_json::json!({
        "issuer": auth.issuer,
        "token_endpoint": format!("{oauth2}/token"),
        "authorization_endpoint": format!("{oauth2}/authorize"),
        "jwks_uri": format!("{base}/.well-known/jwks.json"),
        "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
        "grant_types_supported": ["client_credentials", "password"],
        "response_types_supported": [],
        "response_modes_supported": [],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["EdDSA"],
        "token_endpoint_auth_signing_alg_values_supported": ["EdDSA"],
        "scopes_supported": scopes,
        "claims_supported": [
            "aud", "iss", "iat", "nbf", "exp", "appid", "app_displayname", "azp", "oid", "sub", "tid",
            "roles", "scp", "upn", "unique_name", "groups", "ver"
        ],
        "tenant_id": tenant,
        "request_uri_parameter_supported": false,
    });
    oauth_json(StatusCode::OK, &document)
}

/// `/{tenant}/oauth2/authorize` and `/{tenant}/oauth2/v2.0/authorize`: named in the
/// discovery document (MSAL requires one), but casefile signs in no users.
pub async fn authorize() -> Response {
    Failure::new(
        StatusCode::BAD_REQUEST,
        "unsupported_response_type",
        70000,
        "This server issues application tokens only (client credentials at the token endpoint); it signs in no users.",
    )
    .into_response()
}
