//! Errors that no handler writes: a wrong method on a known route, and whatever else
//! would leave the server without a JSON body (an extractor's or a layer's plain-text or
//! empty answer). Some MDE clients parse the body before they look at the status, and an
//! empty `405` crashes them.
//!
//! MDE itself answers a wrong method with an empty `405` (`../shared/spec/mde-api.md` §0,
//! observed); issue 10 overrides that observation: every error carries a JSON body, in
//! MDE's shape under `/api` and `/agent`, in Entra's on the token endpoints. `Allow` is
//! kept (axum adds it to the method-not-allowed answer).

use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use casefile_proto::{ErrorBody, ErrorCode, ErrorDetail};

use crate::correlation;
use crate::error::ApiError;

/// Wrong method on a known route: `405`, `Allow` (added by the router) and a JSON body.
pub async fn method_not_allowed(method: Method, uri: Uri, route: Option<MatchedPath>) -> Response {
    let route = route.as_ref().map_or(uri.path(), MatchedPath::as_str);
    if is_login_path(route) {
        let accepted = if route.ends_with("/token") {
            "POST"
        } else if route.ends_with("/authorize") {
            "GET and POST"
        } else {
            "GET"
        };
        return super::oauth::wrong_method(&method, accepted);
    }
    // ASP.NET Web API's wording, on which MDE's API is built.
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        format!("The requested resource does not support http method '{method}'."),
    )
    .into_response()
}

/// The token endpoints, OpenID discovery and their keys: where Entra ID serves them
/// (`/{tenant}/oauth2/…`, `/{tenant}/v2.0/.well-known/…`, `/{tenant}/discovery/…`,
/// `/discovery/…`), on a route pattern or a request path.
pub fn is_login_path(path: &str) -> bool {
    let mut segments = path.split('/').skip(1);
    let (first, second) = (segments.next().unwrap_or(""), segments.next().unwrap_or(""));
    first == "discovery"
        || (!first.eq_ignore_ascii_case("api")
            && first != "agent"
            && matches!(second, "oauth2" | "discovery" | "v2.0" | ".well-known"))
}

/// Largest plain-text error body carried over into the JSON one as its message.
const MAX_CARRIED: usize = 1024;

/// The last line of defence, around everything the server serves (routes added outside
/// the route table included): an error answer without a JSON body gets one, in the shape
/// of the path's API, keeping its status and headers. What it replaces is carried over as
/// the message when it is short text (axum's extractor rejections say what was wrong).
///
/// A plain function (see `next.rs`): its future does not hold the request.
pub fn json_bodies(request: Request, next: Next) -> impl std::future::Future<Output = Response> + Send + 'static {
    let login = is_login_path(request.uri().path());
    // The console answers its errors as pages (`routes::console::failure_page`).
    let console = request.uri().path().starts_with("/console");
    let response = crate::next::run(next, request);
    async move {
        let response = response.await;
        let status = response.status();
        let is_json = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case("application/json"));
        let is_html = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/html"));
        if !(status.is_client_error() || status.is_server_error()) || is_json || (console && is_html) {
            return response;
        }
        // Boxed: a future is as large as its largest state for all its life.
        Box::pin(with_json_body(response, login)).await
    }
}

async fn with_json_body(response: Response, login: bool) -> Response {
    let status = response.status();
    let (mut parts, body) = response.into_parts();
    let text = match axum::body::to_bytes(body, MAX_CARRIED).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_owned(),
        Err(_) => String::new(),
    };
    let message = if text.is_empty() { status.canonical_reason().unwrap_or("Error").to_owned() } else { text };
    let json = if login {
        super::oauth::error_json(status, &message)
    } else {
        let body = ErrorBody { error: ErrorDetail { code: code_for(status), message, target: correlation::current() } };
        serde_json::to_vec(&body).unwrap_or_default()
    };
    parts.headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(json))
}

/// MDE's code for an error status no handler chose a code for.
fn code_for(status: StatusCode) -> ErrorCode {
    match status.as_u16() {
        401 => ErrorCode::Unauthorized,
        403 => ErrorCode::Forbidden,
        404 => ErrorCode::NotFound,
        405 => ErrorCode::MethodNotAllowed,
        409 => ErrorCode::Conflict,
        412 => ErrorCode::PreconditionFailed,
        413 => ErrorCode::PayloadTooLarge,
        415 => ErrorCode::UnsupportedMediaType,
        429 => ErrorCode::TooManyRequests,
        460 => ErrorCode::ChecksumMismatch,
        507 => ErrorCode::InsufficientStorage,
        400..500 => ErrorCode::BadRequest,
        _ => ErrorCode::InternalServerError,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_paths_are_told_apart_from_the_apis() {
        for login in [
            "/{tenant}/oauth2/v2.0/token",
            "/contoso.example/oauth2/token",
            "/t/v2.0/.well-known/openid-configuration",
            "/t/.well-known/openid-configuration",
            "/t/discovery/keys",
            "/discovery/v2.0/keys",
        ] {
            assert!(is_login_path(login), "{login}");
        }
        for api in [
            "/api/machines",
            "/API/oauth2/token",
            "/agent/v1/hello",
            "/.well-known/jwks.json",
            "/safedownload/WDATP_Investigation_Package.zip",
            "/",
            "",
        ] {
            assert!(!is_login_path(api), "{api}");
        }
    }
}
