//! Calling the rest of the stack from a middleware, with nothing of the request kept.
//!
//! A parked agent poll holds every layer's future for minutes, so their sizes are memory
//! per connected agent (`bench/agents`). An `async fn` middleware keeps its arguments,
//! the whole request among them, in its future until it returns, and so does
//! `Next::run`: the middlewares here are plain functions that do their work on the
//! request first, call the inner service at once and return a future holding only what
//! they need afterwards.

use std::future::Future;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;

/// The rest of the stack's answer to `request` (what `next.run(request)` gives).
pub(crate) fn run(mut next: Next, request: Request) -> impl Future<Output = Response> + Send + 'static {
    // Like `Next::run`, without `poll_ready`: the router and its routes are always ready.
    let call = tower::Service::call(&mut next, request);
    async move {
        let Ok(response) = call.await;
        response
    }
}
