//! Prometheus metrics, rendered by `GET /metrics` (see [`crate::ops`]).
//!
//! Each server has a recorder of its own (not the process-wide one of the `metrics`
//! facade): tests run many servers in one process, and a library should not take over a
//! global its host may use. Every figure is recorded through a named function here, so
//! the code that observes something says what in one line.
//!
//! Counters count events since the process started (Prometheus' `rate()` handles the reset
//! at a restart). What lives in the database (actions by type and status, agents seen) is
//! a gauge read from the store at scrape time, so it is right after a restart.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use casefile_proto::MachineAction;
use casefile_proto::time::Timestamp;
use casefile_store::StoreError;
use ipnet::IpNet;
use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

use crate::config::MetricsConfig;

/// Latency buckets, in seconds: from a cached read to a long upload or a parked poll.
const SECONDS_BUCKETS: &[f64] =
    &[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0];
/// Package sizes, in bytes: 64 KiB to 64 GiB.
const BYTES_BUCKETS: &[f64] = &[65536.0, 1048576.0, 16777216.0, 134217728.0, 1073741824.0, 8589934592.0, 68719476736.0];

/// The route label of a request no route matched: raw paths never become labels.
pub const UNMATCHED: &str = "unmatched";

/// This server's recorder; `Metrics::default()` records nothing (`metrics.enabled = false`).
#[derive(Clone, Default)]
pub struct Metrics(Option<Arc<Inner>>);

struct Inner {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    /// Who may read `/metrics`.
    allow_loopback: bool,
    allow_from: Vec<IpNet>,
    /// Every (type, status) pair the action gauge has shown: a pair the store no longer
    /// returns is shown as 0, not left at its last value.
    action_pairs: Mutex<BTreeSet<(String, String)>>,
}

/// Why a package was refused (`casefile_package_rejections_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// Larger than `packages.max_bytes`.
    TooLarge,
    /// Not the announced size.
    SizeMismatch,
    /// Not the announced SHA-256.
    HashMismatch,
    /// Not a zip a casefile writer makes.
    Unreadable,
    /// A file does not match the manifest.
    Manifest,
    /// The manifest's signature does not hold (or is not the enrolled key's).
    Signature,
    /// The manifest names another machine or action, or impossible times.
    Claims,
    /// An import of a zip the tenant holds already.
    Duplicate,
}

impl RejectReason {
    pub fn label(self) -> &'static str {
        match self {
            Self::TooLarge => "too_large",
            Self::SizeMismatch => "size_mismatch",
            Self::HashMismatch => "hash_mismatch",
            Self::Unreadable => "unreadable",
            Self::Manifest => "manifest_mismatch",
            Self::Signature => "signature",
            Self::Claims => "claims",
            Self::Duplicate => "duplicate",
        }
    }
}

/// Parses `metrics.allow_from`: addresses or CIDR blocks.
pub fn parse_nets(entries: &[String]) -> Result<Vec<IpNet>, String> {
    entries
        .iter()
        .map(|entry| {
            crate::proxy::parse_net(entry).ok_or_else(|| {
                format!("metrics.allow_from: '{}' is neither an IP address nor a CIDR block", entry.trim())
            })
        })
        .collect()
}

impl Metrics {
    pub fn new(config: &MetricsConfig) -> Result<Self, String> {
        if !config.enabled {
            return Ok(Self::default());
        }
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
            .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_bytes".into()), BYTES_BUCKETS))
            .map_err(|e| format!("metrics: {e}"))?
            .build_recorder();
        let inner = Inner {
            handle: recorder.handle(),
            recorder,
            allow_loopback: config.allow_loopback,
            allow_from: parse_nets(&config.allow_from)?,
            action_pairs: Mutex::default(),
        };
        let metrics = Self(Some(Arc::new(inner)));
        metrics.describe();
        Ok(metrics)
    }

    pub fn enabled(&self) -> bool {
        self.0.is_some()
    }

    /// Runs `record` against this server's recorder (nothing when disabled).
    fn record(&self, record: impl FnOnce()) {
        if let Some(inner) = &self.0 {
            metrics::with_local_recorder(&inner.recorder, record);
        }
    }

    fn describe(&self) {
        use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
        self.record(|| {
            describe_counter!(
                "casefile_http_requests_total",
                "HTTP requests answered, by route template, method and status"
            );
            describe_histogram!(
                "casefile_http_request_duration_seconds",
                Unit::Seconds,
                "Time to answer an HTTP request (long-polls included)"
            );
            describe_gauge!(
                "casefile_actions",
                "Machine actions by type and status, read from the database at scrape time"
            );
            describe_gauge!(
                "casefile_agents_connected",
                "Machines whose agent called within agents.silent_timeout_seconds"
            );
            describe_gauge!("casefile_agent_polls_parked", "Agent long-polls waiting for work now");
            describe_histogram!(
                "casefile_dispatch_latency_seconds",
                Unit::Seconds,
                "From an action's creation to its first hand-over to an agent"
            );
            describe_counter!(
                "casefile_package_uploads_total",
                "Packages received, verified and stored, by kind (agent upload or import)"
            );
            describe_counter!("casefile_package_upload_bytes_total", Unit::Bytes, "Bytes of the packages stored");
            describe_histogram!("casefile_package_upload_size_bytes", Unit::Bytes, "Size of each package stored");
            describe_histogram!(
                "casefile_package_upload_duration_seconds",
                Unit::Seconds,
                "From the start of an upload to its package stored"
            );
            describe_counter!(
                "casefile_package_rejections_total",
                "Packages refused for what they are (size, hash, content, signature, claims), by reason"
            );
            describe_counter!("casefile_rate_limited_total", "Calls answered 429, by the limit that refused them");
            describe_counter!("casefile_lifecycle_sweeps_total", "Runs of the lifecycle sweeper, by outcome");
            describe_gauge!(
                "casefile_lifecycle_leader",
                "1 while this replica leads the lifecycle sweeper (one replica per database does), else 0"
            );
            describe_histogram!("casefile_lifecycle_sweep_duration_seconds", Unit::Seconds, "Time one sweep took");
            describe_counter!(
                "casefile_lifecycle_actions_timed_out_total",
                "Actions the sweeper ended TimeOut, by the status they were in"
            );
            describe_counter!(
                "casefile_lifecycle_packages_deleted_total",
                "Packages deleted after their retention period"
            );
            describe_counter!(
                "casefile_store_errors_total",
                "Database and package-storage failures, by store and kind"
            );
        });
    }

    /// One answered HTTP request. `route` is the matched template, never the raw path.
    pub fn http_request(&self, route: &str, method: &Method, status: u16, elapsed: Duration) {
        // Methods are bounded to the standard ones: any token is a valid method in HTTP.
        let method = match *method {
            Method::GET => "GET",
            Method::HEAD => "HEAD",
            Method::POST => "POST",
            Method::PUT => "PUT",
            Method::DELETE => "DELETE",
            Method::PATCH => "PATCH",
            Method::OPTIONS => "OPTIONS",
            _ => "other",
        };
        let labels = [("route", route.to_owned()), ("method", method.to_owned()), ("status", status.to_string())];
        self.record(|| {
            counter!("casefile_http_requests_total", &labels).increment(1);
            histogram!("casefile_http_request_duration_seconds", &labels[..2]).record(elapsed.as_secs_f64());
        });
    }

    /// An action handed to an agent for the first time, at `now`.
    pub fn dispatched(&self, action: &MachineAction, now: Timestamp) {
        let waited = (now - action.creation_date_time_utc).to_std().unwrap_or_default();
        self.record(|| histogram!("casefile_dispatch_latency_seconds").record(waited.as_secs_f64()));
    }

    /// A package of `bytes` stored after `elapsed` (`kind`: `upload` or `import`).
    pub fn package_stored(&self, kind: &'static str, bytes: u64, elapsed: Duration) {
        self.record(|| {
            counter!("casefile_package_uploads_total", "kind" => kind).increment(1);
            counter!("casefile_package_upload_bytes_total", "kind" => kind).increment(bytes);
            histogram!("casefile_package_upload_size_bytes", "kind" => kind).record(bytes as f64);
            histogram!("casefile_package_upload_duration_seconds", "kind" => kind).record(elapsed.as_secs_f64());
        });
    }

    /// A package refused for what it is.
    pub fn package_rejected(&self, kind: &'static str, reason: RejectReason) {
        self.record(|| {
            counter!("casefile_package_rejections_total", "kind" => kind, "reason" => reason.label()).increment(1)
        });
    }

    /// A call answered `429` by `limit` (`api`, `refusals`, `token_source`, `token_client`).
    pub fn rate_limited(&self, limit: &'static str) {
        self.record(|| counter!("casefile_rate_limited_total", "limit" => limit).increment(1));
    }

    /// One run of the lifecycle sweeper.
    pub fn sweep(&self, result: &Result<crate::lifecycle::Sweep, StoreError>, elapsed: Duration) {
        self.record(|| {
            let outcome = if result.is_ok() { "ok" } else { "error" };
            counter!("casefile_lifecycle_sweeps_total", "outcome" => outcome).increment(1);
            histogram!("casefile_lifecycle_sweep_duration_seconds").record(elapsed.as_secs_f64());
            if let Ok(done) = result {
                counter!("casefile_lifecycle_actions_timed_out_total", "from" => "Pending")
                    .increment(done.pending_timed_out);
                counter!("casefile_lifecycle_actions_timed_out_total", "from" => "InProgress")
                    .increment(done.running_timed_out);
                counter!("casefile_lifecycle_packages_deleted_total").increment(done.packages_deleted);
            }
        });
        if let Err(e) = result {
            self.store_error(e);
        }
    }

    /// Whether this replica leads the lifecycle sweeper (1) or follows (0).
    pub fn leader(&self, leads: bool) {
        self.record(|| gauge!("casefile_lifecycle_leader").set(if leads { 1.0 } else { 0.0 }));
    }

    /// A database failure (answered or swallowed).
    pub fn store_error(&self, e: &StoreError) {
        if let Some(StoreFailure(kind)) = StoreFailure::of(e) {
            self.store_failure(kind);
        }
    }

    fn store_failure(&self, kind: &'static str) {
        self.record(|| counter!("casefile_store_errors_total", "store" => "database", "kind" => kind).increment(1));
    }

    /// A package-storage failure during `operation` (`stage`, `publish`, `get`, `delete`).
    pub fn blob_error(&self, operation: &'static str, full: bool) {
        let kind = if full { "full" } else { "error" };
        self.record(|| {
            counter!("casefile_store_errors_total", "store" => "blobs", "kind" => kind, "operation" => operation)
                .increment(1)
        });
    }

    /// Whether a client at `ip` (resolved through the trusted proxies) may read `/metrics`.
    pub fn may_read(&self, ip: IpAddr) -> bool {
        let Some(inner) = &self.0 else { return false };
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        (inner.allow_loopback && ip.is_loopback()) || inner.allow_from.iter().any(|net| net.contains(&ip))
    }

    /// Sets the gauges read at scrape time.
    pub fn set_gauges(
        &self,
        actions: Option<Vec<(String, String, u64)>>,
        agents_connected: Option<u64>,
        parked: usize,
    ) {
        let Some(inner) = &self.0 else { return };
        self.record(|| {
            gauge!("casefile_agent_polls_parked").set(parked as f64);
            if let Some(n) = agents_connected {
                gauge!("casefile_agents_connected").set(n as f64);
            }
            if let Some(actions) = actions {
                let mut pairs = inner.action_pairs.lock().unwrap_or_else(|p| p.into_inner());
                for (kind, status) in pairs.iter() {
                    if !actions.iter().any(|(k, s, _)| k == kind && s == status) {
                        gauge!("casefile_actions", "type" => kind.clone(), "status" => status.clone()).set(0.0);
                    }
                }
                for (kind, status, n) in actions {
                    gauge!("casefile_actions", "type" => kind.clone(), "status" => status.clone()).set(n as f64);
                    pairs.insert((kind, status));
                }
            }
        });
    }

    /// The Prometheus text exposition; `None` when disabled.
    pub fn render(&self) -> Option<String> {
        self.0.as_ref().map(|inner| inner.handle.render())
    }

    /// Moves recorded histogram samples into their buckets; run periodically so memory
    /// stays bounded between scrapes.
    pub fn upkeep(&self) {
        if let Some(inner) = &self.0 {
            inner.handle.run_upkeep();
        }
    }
}

/// Counts and times every request by its route template. Runs inside the router (where
/// the matched route is known) and outside the audit middleware, so its time is included.
/// A plain function (see `next.rs`): its future holds the route, the method and the start,
/// not the request.
pub fn middleware(
    State(metrics): State<Metrics>,
    request: Request,
    next: Next,
) -> impl std::future::Future<Output = Response> + Send + 'static {
    let measured = metrics.enabled().then(|| {
        let route = request.extensions().get::<MatchedPath>().map_or(UNMATCHED, |p| p.as_str()).to_owned();
        (metrics, route, request.method().clone(), std::time::Instant::now())
    });
    let response = crate::next::run(next, request);
    async move {
        let response = response.await;
        if let Some((metrics, route, method, started)) = measured {
            if let Some(StoreFailure(kind)) = response.extensions().get::<StoreFailure>() {
                metrics.store_failure(kind);
            }
            metrics.http_request(&route, &method, response.status().as_u16(), started.elapsed());
        }
        response
    }
}

/// Marks a response answered for a database failure (`error::ApiError` from a
/// `StoreError`), so the middleware counts it without the error path knowing the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreFailure(pub &'static str);

impl StoreFailure {
    /// The kind of failure `e` is; `None` for refusals that are answers, not failures
    /// (a duplicate, an action already running, an ambiguous name).
    pub fn of(e: &StoreError) -> Option<Self> {
        match e {
            StoreError::ActiveRequestExists
            | StoreError::Duplicate(_)
            | StoreError::AmbiguousName { .. }
            | StoreError::Unstorable(_) => None,
            StoreError::Full(_) => Some(Self("full")),
            StoreError::Corrupt(_) => Some(Self("corrupt")),
            _ => Some(Self("error")),
        }
    }
}

/// Upkeep every few seconds while the server runs.
pub async fn run_upkeep(metrics: Metrics) {
    let mut ticker = tokio::time::interval(Duration::from_secs(5));
    loop {
        ticker.tick().await;
        metrics.upkeep();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_and_listed_sources_may_read() {
        let config = MetricsConfig {
            enabled: true,
            allow_loopback: true,
            allow_from: vec!["10.1.0.0/16".into(), "192.0.2.7".into()],
        };
        let metrics = Metrics::new(&config).unwrap();
        for allowed in ["127.0.0.1", "::1", "10.1.200.3", "192.0.2.7", "::ffff:10.1.0.1"] {
            assert!(metrics.may_read(allowed.parse().unwrap()), "{allowed}");
        }
        for refused in ["10.2.0.1", "192.0.2.8", "203.0.113.1", "::ffff:203.0.113.1"] {
            assert!(!metrics.may_read(refused.parse().unwrap()), "{refused}");
        }
        let no_loopback = Metrics::new(&MetricsConfig { allow_loopback: false, ..config }).unwrap();
        assert!(!no_loopback.may_read("127.0.0.1".parse().unwrap()));
        assert!(!Metrics::default().may_read("127.0.0.1".parse().unwrap()), "disabled");
    }

    #[test]
    fn bad_allow_from_entries_are_named() {
        for bad in ["prometheus.example", "10.0.0.0/33", "", "1.2.3.4/8/8"] {
            let error = parse_nets(&[bad.to_owned()]).unwrap_err();
            assert!(error.contains("metrics.allow_from"), "{error}");
        }
    }

    #[test]
    fn an_action_pair_that_disappears_shows_zero() {
        let metrics = Metrics::new(&MetricsConfig::default()).unwrap();
        let pending = ("CollectInvestigationPackage".to_owned(), "Pending".to_owned(), 2);
        metrics.set_gauges(Some(vec![pending]), None, 0);
        metrics.set_gauges(Some(vec![]), None, 0);
        let text = metrics.render().unwrap();
        let line = text.lines().find(|l| l.starts_with("casefile_actions{")).unwrap();
        assert!(line.ends_with(" 0"), "{line}");
    }
}
