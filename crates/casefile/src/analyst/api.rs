//! The analysts' client of the public API, used as an MDE script uses it: a bearer token
//! from the token endpoint, then `/api/...`. It never opens a data directory or a store.

use std::path::{Path, PathBuf};
use std::time::Duration;

use casefile_agent::trust::{self, CaPin};
use reqwest::{Method, Response, StatusCode, Url};
use serde::Deserialize;
use serde_json::Value;

use super::credentials::{self, CachedToken, Credentials, CredentialsError, Identity, Trust};

/// What the token endpoint is asked for, as MDE scripts ask Entra ID.
pub const SCOPE: &str = "https://api.securitycenter.microsoft.com/.default";
/// The client id of a user's sign-in (the resource-owner password grant).
pub const CLI_CLIENT_ID: &str = "casefile-cli";
/// A cached token this close to its expiry is replaced before use (clock skew, a slow call).
const EXPIRY_MARGIN_SECONDS: i64 = 60;
/// The largest page MDE (and casefile) serves: a larger `--top` is reached by next links.
const MAX_TOP: u64 = 10_000;

/// A failure, worded for one line on stderr.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The API's error body (`../shared/spec/mde-api.md` §5): `CODE: message`.
    #[error("{code}: {message}")]
    Mde { status: u16, code: String, message: String },
    /// The token endpoint's error (Entra's OAuth2 shape): `error: AADSTS...: message`.
    #[error("{error}: {description}")]
    OAuth { status: u16, error: String, description: String },
    /// An answer without either error shape.
    #[error("{what}: the server answered {status}")]
    Status { what: String, status: u16 },
    #[error("cannot reach {url}")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{what}: the answer is not what the API sends")]
    Malformed {
        what: String,
        #[source]
        source: reqwest::Error,
    },
    #[error(transparent)]
    Trust(#[from] casefile_agent::AgentError),
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    #[error("the sign-in of {0} has expired: run `casefile login` again")]
    SignInExpired(String),
    #[error("the server refused the sign-in of {name} ({reason}): run `casefile login` again")]
    SignInRefused { name: String, reason: Box<ApiError> },
    #[error("{0}")]
    Invalid(String),
}

/// One line: a message from the wire must not break the CLI's one-line errors (nor carry
/// escape sequences to the terminal).
fn one_line(text: &str) -> String {
    let joined = text.split(['\r', '\n']).map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ");
    super::output::printable(&joined)
}

#[derive(Deserialize)]
struct MdeErrorBody {
    error: MdeErrorDetail,
}

#[derive(Deserialize)]
struct MdeErrorDetail {
    code: String,
    message: String,
}

#[derive(Deserialize)]
struct OAuthErrorBody {
    error: String,
    #[serde(default)]
    error_description: String,
}

/// The error an unsuccessful `response` carries, for a call described as `what`.
pub async fn error_of(what: &str, response: Response) -> ApiError {
    let status = response.status().as_u16();
    // Error bodies are small; a huge one is not an error body.
    let bytes = match response.bytes().await {
        Ok(b) if b.len() <= 64 * 1024 => b,
        _ => return ApiError::Status { what: what.to_owned(), status },
    };
    if let Ok(body) = serde_json::from_slice::<MdeErrorBody>(&bytes) {
        return ApiError::Mde { status, code: one_line(&body.error.code), message: one_line(&body.error.message) };
    }
    if let Ok(body) = serde_json::from_slice::<OAuthErrorBody>(&bytes) {
        // Entra's description goes on with the trace and correlation ids, a line each.
        let first = body.error_description.lines().next().unwrap_or_default();
        return ApiError::OAuth { status, error: one_line(&body.error), description: one_line(first) };
    }
    ApiError::Status { what: what.to_owned(), status }
}

/// The server's base URL, checked: `https://`, or `http://` to loopback only.
pub fn parse_server(raw: &str) -> Result<Url, ApiError> {
    let url = Url::parse(raw.trim_end_matches('/'))
        .map_err(|e| ApiError::Invalid(format!("--server '{raw}' is not a URL: {e}")))?;
    if url.query().is_some() || url.fragment().is_some() || url.cannot_be_a_base() {
        return Err(ApiError::Invalid(format!("--server '{raw}' must be a base URL like https://host:8443")));
    }
    trust::needs_trust(&url)?;
    Ok(url)
}

/// An HTTP client for `server` that believes only what `trust` says.
pub fn http_client(server: &Url, trust: &Trust) -> Result<reqwest::Client, ApiError> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        // A stalled answer (or download) fails rather than hanging forever.
        .read_timeout(Duration::from_secs(120))
        // Links and redirects are followed by hand, so no bearer token leaves the server.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("casefile-cli/", env!("CARGO_PKG_VERSION")));
    if trust::needs_trust(server)? {
        match trust {
            Trust::Pinned { ca_sha256, ca_pem } => {
                let pin: CaPin = ca_sha256.parse().map_err(ApiError::Invalid)?;
                let ca = trust::pinned_certificate(ca_pem.as_bytes(), &pin)?.ok_or_else(|| {
                    ApiError::Invalid(format!(
                        "the saved CA certificate is not {ca_sha256}: run `casefile login` again"
                    ))
                })?;
                builder = builder.tls_certs_only([ca]);
            }
            Trust::SystemRoots => {}
            Trust::None => {
                return Err(ApiError::Invalid(format!(
                    "no CA is trusted for {server}: run `casefile login` with --ca-sha256 or --system-roots"
                )));
            }
        }
    }
    builder.build().map_err(|source| ApiError::Unreachable { url: server.to_string(), source })
}

/// `base` with `segments` appended as path segments (each percent-encoded).
pub fn url_of(base: &Url, segments: &[&str]) -> Url {
    let mut url = base.clone();
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().extend(segments);
    }
    url
}

/// Asks the token endpoint for a token with `grant` (the form's grant fields).
pub async fn request_token(
    http: &reqwest::Client,
    server: &Url,
    tenant: &str,
    grant: &[(&str, &str)],
) -> Result<CachedToken, ApiError> {
    let url = url_of(server, &[tenant, "oauth2", "v2.0", "token"]);
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    form.extend_pairs(grant).append_pair("scope", SCOPE);
    let response = http
        .post(url.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(form.finish())
        .send()
        .await
        .map_err(|source| ApiError::Unreachable { url: server.to_string(), source })?;
    if !response.status().is_success() {
        return Err(error_of("the token endpoint", response).await);
    }
    let answer: casefile_proto::oauth::TokenResponseV2 =
        response.json().await.map_err(|source| ApiError::Malformed { what: "the token endpoint".into(), source })?;
    let expires_in = i64::try_from(answer.expires_in).unwrap_or(i64::MAX / 2);
    Ok(CachedToken { access_token: answer.access_token, expires_at: now() + expires_in })
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The grant fields of an application's client credentials.
pub fn client_credentials<'a>(client_id: &'a str, secret: &'a str) -> [(&'static str, &'a str); 3] {
    [("grant_type", "client_credentials"), ("client_id", client_id), ("client_secret", secret)]
}

/// The grant fields of a local user's sign-in (resource-owner password grant).
pub fn password_grant<'a>(name: &'a str, password: &'a str) -> [(&'static str, &'a str); 4] {
    [("grant_type", "password"), ("client_id", CLI_CLIENT_ID), ("username", name), ("password", password)]
}

/// A logged-in session: the saved credentials and a client that trusts what they say.
pub struct Session {
    pub http: reqwest::Client,
    pub base: Url,
    creds: Credentials,
    path: PathBuf,
}

impl Session {
    /// The session `casefile login` saved.
    pub fn open() -> Result<Self, ApiError> {
        let path = credentials::path()?;
        Self::open_at(&path)
    }

    pub fn open_at(path: &Path) -> Result<Self, ApiError> {
        let creds = Credentials::load(path)?;
        let base = parse_server(&creds.server)?;
        let http = http_client(&base, &creds.trust)?;
        Ok(Self { http, base, creds, path: path.to_owned() })
    }

    /// A token good for the next call: the cached one while it is fresh, else (for an
    /// application) a new one from the token endpoint, cached in the credentials file.
    async fn token(&mut self, force_new: bool) -> Result<String, ApiError> {
        if !force_new
            && let Some(cached) = &self.creds.token
            && cached.fresh_at(now(), EXPIRY_MARGIN_SECONDS)
        {
            return Ok(cached.access_token.clone());
        }
        let token = match &self.creds.identity {
            Identity::Application { client_id, client_secret } => {
                let grant = client_credentials(client_id, client_secret);
                request_token(&self.http, &self.base, &self.creds.tenant, &grant).await?
            }
            // The password is never kept: a user signs in again.
            Identity::User { name } => return Err(ApiError::SignInExpired(name.clone())),
        };
        let access = token.access_token.clone();
        self.creds.token = Some(token);
        self.creds.save(&self.path)?;
        Ok(access)
    }

    /// Sends an API request (`build` adds the body) with a bearer token; a `401` on a
    /// cached application token (revoked keys, a restored server) is retried once with a
    /// fresh one. Unsuccessful answers become [`ApiError`]s.
    pub async fn call(
        &mut self,
        what: &str,
        method: Method,
        url: Url,
        build: impl Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> Result<Response, ApiError> {
        let mut force_new = false;
        loop {
            let token = self.token(force_new).await?;
            let request = build(self.http.request(method.clone(), url.clone()).bearer_auth(&token));
            let response =
                request.send().await.map_err(|source| ApiError::Unreachable { url: self.base.to_string(), source })?;
            if response.status() == StatusCode::UNAUTHORIZED
                && !force_new
                && matches!(self.creds.identity, Identity::Application { .. })
            {
                force_new = true;
                continue;
            }
            if !response.status().is_success() {
                let error = error_of(what, response).await;
                return Err(match (&self.creds.identity, &error) {
                    (Identity::User { name }, ApiError::Mde { status: 401, .. }) => {
                        ApiError::SignInRefused { name: name.clone(), reason: Box::new(error) }
                    }
                    _ => error,
                });
            }
            return Ok(response);
        }
    }

    /// A GET under `/api` whose answer is JSON.
    pub async fn get_json(&mut self, what: &str, segments: &[&str]) -> Result<Value, ApiError> {
        let url = self.api_url(segments);
        let response = self.call(what, Method::GET, url, |r| r).await?;
        response.json().await.map_err(|source| ApiError::Malformed { what: what.to_owned(), source })
    }

    /// A POST of `body` under `/api` whose answer is JSON.
    pub async fn post_json(&mut self, what: &str, segments: &[&str], body: &Value) -> Result<Value, ApiError> {
        let url = self.api_url(segments);
        let response = self.call(what, Method::POST, url, |r| r.json(body)).await?;
        response.json().await.map_err(|source| ApiError::Malformed { what: what.to_owned(), source })
    }

    pub fn api_url(&self, segments: &[&str]) -> Url {
        let mut all = vec!["api"];
        all.extend_from_slice(segments);
        url_of(&self.base, &all)
    }

    /// Every entity of a list (`machines`, `machineactions`) matching `filter`, at most
    /// `top`, following `@odata.nextLink`. A next link is followed on this server only:
    /// its path and query are taken, never its host, so the token goes nowhere else.
    pub async fn list(
        &mut self,
        what: &str,
        entity: &str,
        filter: Option<&str>,
        top: Option<u64>,
        page_size: u64,
    ) -> Result<Vec<Value>, ApiError> {
        let mut url = self.api_url(&[entity]);
        {
            let mut query = url.query_pairs_mut();
            if let Some(filter) = filter {
                query.append_pair("$filter", filter);
            }
            // `$top` bounds a page; the next link keeps it and moves `$skip` on.
            let page = page_size.min(top.unwrap_or(u64::MAX)).clamp(1, MAX_TOP);
            query.append_pair("$top", &page.to_string());
        }
        let mut items = Vec::new();
        loop {
            let response = self.call(what, Method::GET, url.clone(), |r| r).await?;
            let page: casefile_proto::odata::Collection<Value> =
                response.json().await.map_err(|source| ApiError::Malformed { what: what.to_owned(), source })?;
            items.extend(page.value);
            if let Some(top) = top
                && items.len() as u64 >= top
            {
                items.truncate(usize::try_from(top).unwrap_or(usize::MAX));
                return Ok(items);
            }
            let Some(next) = page.next_link else { return Ok(items) };
            let next = Url::parse(&next).map_err(|_| ApiError::Invalid(format!("{what}: a bad @odata.nextLink")))?;
            url = self.base.clone();
            url.set_path(next.path());
            url.set_query(next.query());
        }
    }
}
