//! Correlation ids: every request gets one, sent back as a header and as the `target`
//! of any error body, and attached to the request's log lines.

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

pub const HEADER: &str = "x-correlation-id";

tokio::task_local! {
    static CURRENT: String;
}

/// The correlation id of the request being served (empty outside a request).
pub fn current() -> String {
    CURRENT.try_with(Clone::clone).unwrap_or_default()
}

/// Runs `future` with `id` as its correlation id (for work moved to another task).
pub async fn scope<F: std::future::Future>(id: String, future: F) -> F::Output {
    CURRENT.scope(id, future).await
}

/// Gives the request its id, logs its outcome and sends the id back. A plain function
/// (see `next.rs`): its future holds the id and the span, not the request.
pub fn middleware(request: Request, next: Next) -> impl std::future::Future<Output = Response> + Send + 'static {
    let id = uuid::Uuid::new_v4().to_string();
    let is_poll = request.uri().path().ends_with("/actions/next");
    let span =
        tracing::info_span!("request", correlation_id = %id, method = %request.method(), path = %request.uri().path());
    let started = std::time::Instant::now();
    // Called in the request's scope and span, like the rest of its handling.
    let response = CURRENT.sync_scope(id.clone(), || span.in_scope(|| crate::next::run(next, request)));
    let handled = async move {
        let response = response.await;
        let (status, elapsed_ms) = (response.status().as_u16(), started.elapsed().as_millis() as u64);
        // One access line per request for the log collector; agents' empty long-polls
        // (every agent, every poll_wait_seconds) only at debug.
        if status == 204 && is_poll {
            tracing::debug!(status, elapsed_ms, "request handled");
        } else {
            tracing::info!(status, elapsed_ms, "request handled");
        }
        response
    };
    let handled = CURRENT.scope(id.clone(), handled.instrument(span));
    async move {
        let mut response = handled.await;
        if let Ok(value) = HeaderValue::from_str(&id) {
            response.headers_mut().insert(HEADER, value);
        }
        response
    }
}
