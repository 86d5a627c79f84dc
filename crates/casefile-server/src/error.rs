//! The one place where failures become HTTP answers: every error, on every route, is
//! `{"error":{"code","message","target"}}` as compact JSON, `target` being the
//! request's correlation id.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use casefile_proto::{ErrorBody, ErrorCode, ErrorDetail};
use casefile_store::StoreError;

use crate::correlation;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// Extra headers some errors carry (`WWW-Authenticate`, `Retry-After`).
    pub headers: Vec<(header::HeaderName, HeaderValue)>,
    /// Set when answering a database failure: the metrics count it from the response.
    pub store_failure: Option<crate::metrics::StoreFailure>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), headers: Vec::new(), store_failure: None }
    }

    pub fn with_header(mut self, name: header::HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ResourceNotFound, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        let m = message.into();
        let challenge = format!("Bearer error=\"invalid_token\", error_description=\"{}\"", m.replace('"', "'"));
        let value = HeaderValue::from_str(&challenge).unwrap_or(HeaderValue::from_static("Bearer"));
        Self::new(ErrorCode::Unauthorized, m).with_header(header::WWW_AUTHENTICATE, value)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }

    pub fn internal() -> Self {
        Self::new(ErrorCode::InternalServerError, "An internal error occurred; retry later")
    }

    /// An unexpected failure: logged with its cause, answered without details.
    pub fn internal_from(cause: impl std::fmt::Display) -> Self {
        tracing::error!(correlation_id = %correlation::current(), "internal error: {cause}");
        Self::internal()
    }
}

impl ApiError {
    /// Over a quota: `429` with the whole seconds to wait in `Retry-After`.
    pub fn too_many_requests(message: impl std::fmt::Display, wait: std::time::Duration) -> Self {
        let seconds = crate::ratelimit::retry_after_seconds(wait);
        Self::new(ErrorCode::TooManyRequests, format!("{message}. Try again in {seconds} seconds."))
            .with_header(header::RETRY_AFTER, HeaderValue::from(seconds))
    }

    /// The disk is full: nothing was written.
    pub fn insufficient_storage() -> Self {
        Self::new(
            ErrorCode::InsufficientStorage,
            "The server's storage is full: nothing was written; retry once space has been freed",
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let store_failure = crate::metrics::StoreFailure::of(&e);
        let answer = match e {
            StoreError::ActiveRequestExists => {
                Self::new(ErrorCode::ActiveRequestAlreadyExists, "Action is already in progress")
            }
            StoreError::Full(_) => {
                log_store_failure(&e, "a write was refused");
                Self::insufficient_storage()
            }
            StoreError::Unstorable(_) => Self::new(
                ErrorCode::InvalidInput,
                "The request holds a character this server's database cannot store (such as NUL, U+0000)",
            ),
            other => Self::internal_from(other),
        };
        Self { store_failure, ..answer }
    }
}

/// When the last "storage is full" line was logged, and how many refusals since.
static FULL_LOGGED: std::sync::Mutex<Option<(std::time::Instant, u64)>> = std::sync::Mutex::new(None);
/// A full disk refuses every write: one line a minute says so, with the count.
const FULL_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Logs a store failure that is being answered or swallowed: a full disk once a minute
/// (it refuses every write until space is freed), anything else every time.
pub fn log_store_failure(e: &StoreError, what: &str) {
    if !matches!(e, StoreError::Full(_)) {
        tracing::error!(correlation_id = %correlation::current(), "{what}: {e}");
        return;
    }
    let mut last = FULL_LOGGED.lock().unwrap_or_else(|p| p.into_inner());
    match last.as_mut() {
        Some((at, refused)) if at.elapsed() < FULL_LOG_EVERY => *refused += 1,
        Some((at, refused)) => {
            tracing::error!("storage is still full: {} writes refused in the last minute ({what}: {e})", *refused + 1);
            (*at, *refused) = (std::time::Instant::now(), 0);
        }
        None => {
            tracing::error!("storage is full: writes are refused with 507 until space is freed ({what}: {e})");
            *last = Some((std::time::Instant::now(), 0));
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body =
            ErrorBody { error: ErrorDetail { code: self.code, message: self.message, target: correlation::current() } };
        // serde_json's default output is compact: clients match substrings such as
        // `"message":"Action is already in progress"`.
        let json = serde_json::to_vec(&body).unwrap_or_default();
        let mut response = (status, json).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
        for (name, value) in self.headers {
            headers.insert(name, value);
        }
        if let Some(failure) = self.store_failure {
            response.extensions_mut().insert(failure);
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
