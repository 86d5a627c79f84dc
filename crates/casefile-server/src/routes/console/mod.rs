//! The web console at `/console`: server-rendered pages (askama templates, a little
//! JavaScript of its own, embedded in the binary) for analysts and administrators.
//!
//! **Invariant:** the console has no rules of its own. A session stands for a delegated
//! user (`auth::sessions::caller`), and every page calls the public API's handlers with
//! that caller: the same permission, role and device-group checks, quotas and audit
//! entries (each console route carries the audit event of the API route it calls).

mod admin;
mod assets;
mod devices;
mod machine_actions;
mod package;
mod signin;
mod sso;

use askama::Template;
use axum::extract::FromRequestParts;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, COOKIE, LOCATION, ORIGIN};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use casefile_store::SessionRecord;
use serde::de::DeserializeOwned;

use super::{BaseUrl, Table};
use crate::audit::Event::{ByRoute, Named};
use crate::auth::Caller;
use crate::error::ApiResult;
use crate::state::AppState;

/// What every console page may load: its own scripts, styles and images, and nothing
/// from any other origin; no inline script, no framing.
pub(crate) const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The console's routes, each with the audit event of the API call it makes.
pub(super) fn routes(table: Table) -> Table {
    table
        .hidden("/console", get(home), ByRoute)
        .hidden("/console/", get(home), ByRoute)
        .hidden("/console/assets/{name}", get(assets::serve), ByRoute)
        .hidden("/console/signin", get(signin::page).post(signin::local), Named("console.signin"))
        .hidden("/console/signin/sso/{provider}", get(signin::sso_start), ByRoute)
        .hidden("/console/signin/callback", get(signin::sso_callback), Named("console.signin"))
        .hidden("/console/signout", post(signin::signout), Named("console.signout"))
        .hidden("/console/devices", get(devices::list), ByRoute)
        .hidden("/console/devices/{id}", get(devices::page), ByRoute)
        .hidden("/console/devices/{id}/collect", post(devices::collect), Named("collect"))
        .hidden("/console/actions", get(machine_actions::center), ByRoute)
        .hidden("/console/actions.csv", get(machine_actions::export), ByRoute)
        .hidden("/console/actions/{id}", get(machine_actions::page), ByRoute)
        .hidden("/console/actions/{id}/cancel", post(machine_actions::cancel), Named("cancel"))
        .hidden("/console/actions/{id}/package", get(package::page), Named("package.view"))
        .hidden("/console/actions/{id}/package/download", post(package::download), Named("link.issue"))
        .hidden("/console/actions/{id}/package/view", get(package::view), Named("package.view"))
        .hidden("/console/admin", get(admin::page), ByRoute)
        .hidden("/console/admin/users", post(admin::create_user), Named("POST /api/admin/users"))
        .hidden(
            "/console/admin/users/{name}/disable",
            post(admin::disable_user),
            Named("POST /api/admin/users/{name}/disable"),
        )
        .hidden(
            "/console/admin/users/{name}/enable",
            post(admin::enable_user),
            Named("POST /api/admin/users/{name}/enable"),
        )
        .hidden("/console/admin/tokens", post(admin::create_token), Named("POST /api/admin/enrollmenttokens"))
        .hidden(
            "/console/admin/tokens/{id}/revoke",
            post(admin::revoke_token),
            Named("POST /api/admin/enrollmenttokens/{id}/revoke"),
        )
}

async fn home() -> Response {
    redirect("/console/devices")
}

/// A signed-in console user: the session and the API caller it stands for.
pub(crate) struct Session {
    pub record: SessionRecord,
    pub caller: Caller,
    /// The session secret, as the cookie carried it.
    pub secret: String,
}

/// A request without a live session is sent to the sign-in page (back here after).
pub(crate) struct SignInFirst(String);

impl IntoResponse for SignInFirst {
    fn into_response(self) -> Response {
        let next = url_escape(&self.0);
        redirect(&format!("/console/signin?next={next}"))
    }
}

impl FromRequestParts<AppState> for Session {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let back = parts.uri.path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_default();
        let Some(secret) = cookie(&parts.headers, crate::auth::sessions::COOKIE) else {
            return Err(SignInFirst(back).into_response());
        };
        // A page's live refresh (`fragment=`) is not the user at work: it does not move
        // the session's idle end.
        let user_at_work = !parts.uri.query().is_some_and(|q| q.split('&').any(|p| p.starts_with("fragment=")));
        let record = match crate::auth::sessions::find(state, &secret, user_at_work).await {
            Ok(Some(record)) => record,
            Ok(None) => return Err(SignInFirst(back).into_response()),
            Err(e) => return Err(failure_page(Failure::from_store(e))),
        };
        let caller = crate::auth::sessions::caller(&record);
        crate::audit::note_actor("user", &caller.requestor, &caller.tenant_id);
        Ok(Session { record, caller, secret })
    }
}

impl Session {
    /// Checks a form's CSRF token and, when the browser sent one, its `Origin`.
    pub fn check_form(&self, headers: &HeaderMap, base: &BaseUrl, csrf: &str) -> Result<(), Failure> {
        let origin_ok = headers.get(ORIGIN).and_then(|o| o.to_str().ok()).is_none_or(|o| o == base.0);
        if !origin_ok || !crate::auth::sessions::csrf_matches(&self.record, csrf) {
            crate::audit::note_detail(serde_json::json!({"reason": "the form's CSRF token or origin is wrong"}));
            return Err(Failure {
                status: StatusCode::FORBIDDEN,
                code: "Forbidden".into(),
                message: "This form is out of date or was not sent by this console. Reload the page and try again."
                    .into(),
            });
        }
        Ok(())
    }

    /// What every page's frame shows.
    pub async fn chrome(&self, state: &AppState, section: &'static str) -> Chrome {
        let admin = matches!(crate::rbac::Access::of(state, &self.caller).await, Ok(crate::rbac::Access::Unrestricted));
        Chrome { user: self.caller.requestor.clone(), csrf: self.record.csrf.clone(), admin, section }
    }
}

/// The frame around every page: who is signed in, the navigation, the sign-out form.
pub(crate) struct Chrome {
    pub user: String,
    pub csrf: String,
    pub admin: bool,
    pub section: &'static str,
}

/// An API answer the console shows instead of a page: the API's status, code and message.
#[derive(Debug)]
pub(crate) struct Failure {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
}

impl Failure {
    fn from_store(e: casefile_store::StoreError) -> Self {
        let status = match e {
            casefile_store::StoreError::Full(_) => StatusCode::INSUFFICIENT_STORAGE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        tracing::error!("console: {e}");
        Self { status, code: "InternalError".into(), message: "The server could not read its database.".into() }
    }

    pub fn internal(what: impl std::fmt::Display) -> Self {
        tracing::error!("console: {what}");
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "InternalError".into(),
            message: "Something went wrong on the server; the log has the details.".into(),
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self { status: StatusCode::NOT_FOUND, code: "NotFound".into(), message: message.into() }
    }
}

/// Reads an API handler's answer: its JSON body on success, its MDE error otherwise.
pub(crate) async fn api<T: DeserializeOwned>(answer: ApiResult<Response>) -> Result<T, Failure> {
    let response = match answer {
        Ok(response) => response,
        Err(e) => e.into_response(),
    };
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), 64 << 20).await.map_err(Failure::internal)?;
    if status.is_success() {
        return serde_json::from_slice(&body).map_err(Failure::internal);
    }
    let error: Option<casefile_proto::ErrorBody> = serde_json::from_slice(&body).ok();
    Err(match error {
        Some(e) => Failure { status, code: format!("{:?}", e.error.code), message: e.error.message },
        None => Failure { status, code: status.as_str().into(), message: String::from_utf8_lossy(&body).into() },
    })
}

#[derive(Template)]
#[template(path = "console/error.html")]
struct ErrorPage<'a> {
    failure: &'a Failure,
}

impl From<Failure> for Response {
    fn from(failure: Failure) -> Self {
        failure_page(failure)
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        failure_page(self)
    }
}

/// A form that carries only the session's CSRF token (sign-out, download, a row's button).
#[derive(serde::Deserialize)]
pub(crate) struct CsrfForm {
    #[serde(default)]
    pub csrf: String,
}

/// A form with a required reason (collect, cancel).
#[derive(serde::Deserialize)]
pub(crate) struct CommentForm {
    #[serde(default)]
    pub csrf: String,
    #[serde(default)]
    pub comment: String,
}

pub(crate) fn failure_page(failure: Failure) -> Response {
    let mut response = html(&ErrorPage { failure: &failure });
    *response.status_mut() = failure.status;
    response
}

/// A rendered page with the console's security headers.
pub(crate) fn html(page: &impl Template) -> Response {
    match page.render() {
        Ok(body) => {
            let mut response = body.into_response();
            secure_headers(response.headers_mut(), "text/html; charset=utf-8");
            response
        }
        Err(e) => {
            tracing::error!("console: a template failed to render: {e}");
            let mut response = (StatusCode::INTERNAL_SERVER_ERROR, "The page could not be rendered.").into_response();
            secure_headers(response.headers_mut(), "text/plain; charset=utf-8");
            response
        }
    }
}

pub(crate) fn secure_headers(headers: &mut HeaderMap, content_type: &'static str) {
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert("content-security-policy", HeaderValue::from_static(CSP));
    headers.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    headers.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// `303 See Other` to a path of this console.
pub(crate) fn redirect(to: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(value) = HeaderValue::from_str(to) {
        response.headers_mut().insert(LOCATION, value);
    }
    secure_headers(response.headers_mut(), "text/plain; charset=utf-8");
    response
}

/// A console path to come back to after signing in: only a path of this console, never
/// another site (`//evil.example`) or scheme.
pub(crate) fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with("/console")
                && !n.starts_with("//")
                && !n.contains('\\')
                && !n.contains("\r")
                && !n.contains('\n') =>
        {
            n.to_owned()
        }
        _ => "/console/devices".to_owned(),
    }
}

/// A cookie's value from the request's `Cookie` headers.
pub(crate) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// Percent-encodes everything but unreserved characters and `/` (for query values).
pub(crate) fn url_escape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for b in raw.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The JSON body and headers of an API call that takes `{"Comment": ...}` (collect, cancel).
pub(crate) fn comment_body(comment: &str) -> (HeaderMap, axum::body::Body) {
    json_body(&serde_json::json!({ "Comment": comment }))
}

/// A JSON request body for an API handler.
pub(crate) fn json_body(value: &serde_json::Value) -> (HeaderMap, axum::body::Body) {
    let body = value.to_string();
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    (headers, axum::body::Body::from(body))
}

/// An OData string literal: single quotes doubled.
pub(crate) fn odata_string(raw: &str) -> String {
    format!("'{}'", raw.replace('\'', "''"))
}

/// A time as the console shows it (UTC, to the second).
pub(crate) fn when(t: &casefile_proto::time::Timestamp) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_console_paths_are_returned_to() {
        assert_eq!(safe_next(Some("/console/actions?tab=history")), "/console/actions?tab=history");
        for hostile in [
            "//evil.example/console",
            "https://evil.example",
            "/api/machines",
            "/console\\..",
            "/console\r\nSet-Cookie: x",
        ] {
            assert_eq!(safe_next(Some(hostile)), "/console/devices", "{hostile:?}");
        }
        assert_eq!(safe_next(None), "/console/devices");
    }

    #[test]
    fn cookies_are_found_by_exact_name() {
        let mut headers = HeaderMap::new();
        headers.append(COOKIE, HeaderValue::from_static("a=1; __Host-casefile-session-x=2"));
        headers.append(COOKIE, HeaderValue::from_static("__Host-casefile-session=s3"));
        assert_eq!(cookie(&headers, "__Host-casefile-session").as_deref(), Some("s3"));
        assert_eq!(cookie(&headers, "b"), None);
    }
}
