//! What every handler shares.

use std::ops::Deref;
use std::sync::Arc;

use casefile_proto::time::Timestamp;
use casefile_store::Store;

use crate::auth::{Keyring, TrustedIssuers, VerifiedTokens};
use crate::blobs::Blobs;
use crate::clock::Clock;
use crate::config::Config;
use crate::dispatch::Dispatcher;
use crate::ratelimit::RateLimiter;

#[derive(Clone)]
pub struct AppState(Arc<Shared>);

pub struct Shared {
    pub config: Config,
    /// The database, with the coordination between replicas sharing it
    /// ([`casefile_store::ClusterStore`]: a no-op alone on SQLite).
    pub store: Arc<dyn Store>,
    pub keyring: Keyring,
    pub access_validation: jsonwebtoken::Validation,
    /// External identity providers whose tokens are accepted (`auth.trusted_issuers`).
    pub issuers: TrustedIssuers,
    pub verified_tokens: VerifiedTokens,
    pub blobs: Blobs,
    pub dispatcher: Dispatcher,
    pub clock: Arc<dyn Clock>,
    pub limiter: Arc<dyn RateLimiter>,
    /// Refused calls per source address: aggregated in the audit trail, and limited.
    pub refusals: crate::refusals::Refusals,
    /// This server's Prometheus recorder (`/metrics`).
    pub metrics: crate::metrics::Metrics,
    /// `/readyz` checks in flight.
    pub readiness: crate::ops::Readiness,
    /// State-changing calls run on tasks of their own (see `audit::middleware`); a stop
    /// waits for them, so none is cut between its change and its audit entry.
    pub calls: tokio_util::task::TaskTracker,
}

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }
}

impl Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}
