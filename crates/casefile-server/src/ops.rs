//! What operators' tools call: `/healthz` (the process answers), `/readyz` (it can take
//! writes: load balancers route to it) and `/metrics` (Prometheus). None of them needs a
//! token, is rate-limited or is audited (they are outside the audit middleware); `/metrics`
//! is readable only from the sources `[metrics]` allows.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use axum::Extension;
use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use casefile_proto::ErrorCode;
use serde_json::json;

use crate::error::ApiError;
use crate::state::AppState;

pub const HEALTHZ: &str = "/healthz";
pub const READYZ: &str = "/readyz";
pub const METRICS: &str = "/metrics";

pub fn router(state: AppState) -> Router {
    Router::new().route(HEALTHZ, get(healthz)).route(READYZ, get(readyz)).route(METRICS, get(metrics)).with_state(state)
}

/// The process is up and answering: nothing else is checked.
async fn healthz() -> Response {
    (StatusCode::OK, axum::Json(json!({"status": "ok"}))).into_response()
}

/// Readiness probes in flight share one check (see [`Readiness`]).
#[derive(Default)]
pub struct Readiness {
    lock: tokio::sync::Mutex<Option<Checked>>,
    /// Bumped at the end of every check.
    generation: AtomicU64,
    /// The last outcome, to log only changes.
    was_ready: AtomicBool,
}

#[derive(Clone)]
struct Checked {
    database: Result<(), String>,
    blobs: Result<(), String>,
}

impl Readiness {
    /// Checks the database and the package storage. Callers that arrive while a check runs
    /// take its result when it ends instead of starting their own, so a flood of probes
    /// costs one write at a time.
    async fn check(&self, state: &AppState) -> Checked {
        let arrived = self.generation.load(Ordering::Acquire);
        let mut last = self.lock.lock().await;
        if let Some(done) = last.as_ref().filter(|_| self.generation.load(Ordering::Acquire) != arrived) {
            return done.clone();
        }
        let database = state.store.probe_write().await.map_err(|e| {
            state.metrics.store_error(&e);
            match e {
                casefile_store::StoreError::Full(_) => "the database's storage is full".to_owned(),
                other => {
                    tracing::debug!("readiness: the database refused a write: {other}");
                    "the database refused a write".to_owned()
                }
            }
        });
        let blobs = state.blobs.probe().await.map_err(|e| {
            state.metrics.blob_error("probe", e.kind() == std::io::ErrorKind::StorageFull);
            // The kind only: this answer is public, paths are not.
            format!("the package storage cannot be written ({})", e.kind())
        });
        let checked = Checked { database, blobs };
        let ready = checked.database.is_ok() && checked.blobs.is_ok();
        if self.was_ready.swap(ready, Ordering::AcqRel) != ready || !ready && last.is_none() {
            match ready {
                true => tracing::info!("ready: the database and the package storage take writes"),
                false => tracing::warn!(
                    database = checked.database.as_ref().err().map_or("ok", String::as_str),
                    blobs = checked.blobs.as_ref().err().map_or("ok", String::as_str),
                    "not ready"
                ),
            }
        }
        *last = Some(checked.clone());
        self.generation.fetch_add(1, Ordering::AcqRel);
        checked
    }
}

/// `200` when the database commits a write and the package storage takes a file; `503`
/// naming what failed otherwise.
async fn readyz(State(state): State<AppState>) -> Response {
    let checked = state.readiness.check(&state).await;
    let show = |r: &Result<(), String>| r.as_ref().err().map_or("ok", String::as_str).to_owned();
    let ready = checked.database.is_ok() && checked.blobs.is_ok();
    let body = json!({
        "status": if ready { "ready" } else { "unavailable" },
        "checks": {"database": show(&checked.database), "blobs": show(&checked.blobs)},
    });
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let mut response = (status, axum::Json(body)).into_response();
    // A probe's answer is about now: no cache may keep it.
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The Prometheus text exposition, for allowed sources only.
async fn metrics(State(state): State<AppState>, peer: Option<Extension<ConnectInfo<SocketAddr>>>) -> Response {
    if !state.metrics.enabled() {
        return ApiError::new(ErrorCode::NotFound, "Metrics are disabled on this server (metrics.enabled)")
            .into_response();
    }
    // The client's address as resolved through the trusted proxies by the accept loop.
    if !peer.is_some_and(|Extension(ConnectInfo(peer))| state.metrics.may_read(peer.ip())) {
        return ApiError::forbidden("Metrics are readable only from the addresses in metrics.allow_from")
            .into_response();
    }
    let actions = state.store.action_counts().await.map_err(|e| state.metrics.store_error(&e)).ok();
    let silent = state.config.agents.silent_timeout_seconds;
    let since = crate::clock::seconds_before(state.now(), silent);
    let agents = state.store.machines_seen_since(since).await.map_err(|e| state.metrics.store_error(&e)).ok();
    let parked = *state.dispatcher.watch_parked().borrow();
    state.metrics.set_gauges(actions, agents, parked);
    let text = state.metrics.render().unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}
