//! casefile's server: the MDE-compatible public API, the agent API and package storage.
//!
//! [`Server::open`] prepares everything under the data directory (database, signing
//! keys, package store); [`Server::serve`] answers on a listener until shutdown. Tests
//! bind port 0 and drive it over real HTTP.

pub mod admin;
pub mod audit;
pub mod auth;
pub mod blobs;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod correlation;
pub mod dispatch;
pub mod enrollment;
pub mod error;
pub mod ingest;
pub mod lifecycle;
pub mod links;
pub mod listener;
pub mod metrics;
mod next;
pub mod ops;
pub mod profiles;
pub mod proxy;
pub mod ratelimit;
pub mod rbac;
pub mod refusals;
mod routes;
pub mod secrets;
pub mod state;
pub mod tls;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::response::IntoResponse as _;
use casefile_store::{Database, Store};
use tokio::net::TcpListener;

use crate::auth::{AccessClaims, Keyring, TrustedIssuers};
use crate::blobs::Blobs;
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::ratelimit::{InMemoryLimiter, RateLimiter, SharedLimiter};
use crate::state::{AppState, Shared};

pub use config::Config as ServerConfig;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot prepare the data directory {path}: {source}")]
    DataDir { path: std::path::PathBuf, source: std::io::Error },
    #[error(transparent)]
    Store(#[from] casefile_store::StoreError),
    #[error(transparent)]
    Auth(#[from] auth::AuthError),
    #[error("package storage: {0}")]
    Blobs(#[from] object_store::Error),
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Proxy(#[from] proxy::BadProxy),
}

/// What opening does about a database schema older than the binary's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schema {
    /// Apply pending migrations (the embedded demo, tests).
    Migrate,
    /// Refuse an older or newer schema, naming `casefile migrate` (a service).
    Require,
}

/// What `casefile token` asks for.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub tenant: String,
    pub roles: Vec<String>,
    pub requestor: String,
    pub ttl: Duration,
}

#[derive(Clone)]
pub struct Server {
    state: AppState,
    /// `None` when serving plain HTTP (`tls.plain_http`).
    tls: Option<Arc<tls::Tls>>,
    proxies: Arc<proxy::TrustedProxies>,
}

/// Issuer tokens carried before the default issuer became the public URL; still
/// accepted from this server's own keys while `auth.issuer` is left to its default.
pub const LEGACY_ISSUER: &str = "casefile";

/// What a running server records in its data directory for the commands that work on
/// it offline (`casefile token`, `casefile enroll-token`): its public URL, issuer and the
/// CA agents pin.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Endpoint {
    pub public_url: String,
    pub issuer: String,
    pub ca_sha256: Option<String>,
}

impl Endpoint {
    pub const FILE: &str = "endpoint.json";

    pub fn load(data_dir: &std::path::Path) -> Option<Self> {
        serde_json::from_slice(&std::fs::read(data_dir.join(Self::FILE)).ok()?).ok()
    }
}

impl Server {
    /// Creates the data directory, the database (migrated) and the signing keys on first
    /// start; opens them afterwards.
    pub async fn open(config: Config) -> Result<Self, ServerError> {
        Self::open_with_clock(config, Arc::new(SystemClock)).await
    }

    /// [`Server::open`] with another clock (tests move a [`clock::ManualClock`]).
    pub async fn open_with_clock(config: Config, clock: Arc<dyn Clock>) -> Result<Self, ServerError> {
        Self::open_with(config, clock, Schema::Migrate).await
    }

    /// Opens as a service does: the database's schema must be this binary's (a new,
    /// empty database is created); `casefile migrate` upgrades an older one.
    pub async fn open_checked(config: Config) -> Result<Self, ServerError> {
        Self::open_with(config, Arc::new(SystemClock), Schema::Require).await
    }

    /// [`Server::open`] with a clock and a schema policy.
    pub async fn open_with(mut config: Config, clock: Arc<dyn Clock>, schema: Schema) -> Result<Self, ServerError> {
        config.validate().map_err(ServerError::Invalid)?;
        let legacy_issuer = config.auth.issuer.is_empty();
        config.auth.issuer = config.issuer();
        let proxies = Arc::new(proxy::TrustedProxies::parse(&config.trusted_proxies)?);
        let metrics = metrics::Metrics::new(&config.metrics).map_err(ServerError::Invalid)?;
        let issuers = TrustedIssuers::load(&config.auth).await?;
        create_private_dir(&config.data_dir)?;
        let url = config.database_url();
        let store: Arc<dyn Store> = match schema {
            Schema::Migrate => Database::open(&url).await?,
            Schema::Require => Database::open_checked(&url).await?,
        }
        .store();
        let keyring = Keyring::load_or_create(store.as_ref()).await?;
        let blobs = Blobs::open(&config.blobs, &config.data_dir, &config.staging_dir()).map_err(|e| match e {
            blobs::BlobsError::Config(message) => ServerError::Invalid(message),
            blobs::BlobsError::Store(e) => ServerError::Blobs(e),
        })?;
        let mut access_validation = auth::caller::access_validation(
            &config.auth.issuer,
            &config.auth.extra_audiences,
            config.auth.leeway_seconds,
        );
        if legacy_issuer {
            access_validation.set_issuer(&[config.auth.issuer.as_str(), LEGACY_ISSUER]);
        }
        let tls = match config.tls.plain_http {
            true => None,
            false => Some(tls::Tls::prepare(&config, clock.now())?),
        };
        let limiter = limiter_for(&store);
        let state = AppState::new(Shared {
            config,
            store,
            keyring,
            access_validation,
            issuers,
            verified_tokens: Default::default(),
            blobs,
            dispatcher: Default::default(),
            clock,
            limiter,
            refusals: Default::default(),
            metrics,
            readiness: Default::default(),
            calls: Default::default(),
        });
        Ok(Self { state, tls, proxies })
    }

    /// Writes [`Endpoint`] into the data directory ([`Server::serve`] does at start).
    pub fn record_endpoint(&self) {
        let endpoint = serde_json::to_vec_pretty(&self.endpoint()).unwrap_or_default();
        // Written aside and renamed: a CLI command reading it meanwhile never sees half a file.
        let path = self.state.config.data_dir.join(Endpoint::FILE);
        let partial = path.with_extension(format!("json.{}", uuid::Uuid::new_v4()));
        let written = std::fs::write(&partial, endpoint).and_then(|()| std::fs::rename(&partial, &path));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&partial);
            tracing::warn!("cannot record the server's endpoint for the CLI: {e}");
        }
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The server's certificate setup; `None` when it serves plain HTTP.
    pub fn tls(&self) -> Option<&Arc<tls::Tls>> {
        self.tls.as_ref()
    }

    /// What the commands that work on the data directory offline need to know (see
    /// [`Endpoint`]).
    pub fn endpoint(&self) -> Endpoint {
        Endpoint {
            public_url: self.state.config.public_base(),
            issuer: self.state.config.auth.issuer.clone(),
            ca_sha256: self.tls.as_ref().map(|t| t.ca_pin()),
        }
    }

    /// Serves HTTPS (or plain HTTP where allowed) on `listener` until `shutdown` resolves,
    /// then drains: no new connections, parked agent polls answered at once, requests in
    /// flight given `shutdown.grace_seconds` to finish.
    pub async fn serve(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        tls::check_plain_http(&self.state.config, listener.local_addr()?.ip())?;
        self.record_endpoint();
        let ca_pem = self.tls.as_ref().map(|t| t.clone());
        let router = routes::router(self.state.clone()).merge(ops::router(self.state.clone())).route(
            tls::CA_PATH,
            axum::routing::get(move || {
                let ca = ca_pem.clone();
                async move {
                    match ca {
                        Some(tls) => ([(axum::http::header::CONTENT_TYPE, "application/x-pem-file")], tls.ca_pem())
                            .into_response(),
                        None => error::ApiError::not_found("This server serves plain HTTP: there is no CA to pin")
                            .into_response(),
                    }
                }
            }),
        );
        // Outermost inside the router: the matched route is known, and the time covers
        // every other layer.
        let router =
            router.layer(axum::middleware::from_fn_with_state(self.state.metrics.clone(), metrics::middleware));
        let app = tower::ServiceBuilder::new()
            .layer(axum::middleware::from_fn(correlation::middleware))
            .layer(tower::util::MapRequestLayer::new(routes::normalize_path))
            .layer(axum::middleware::from_fn(routes::errors::json_bodies))
            .service(router);
        // Leftovers of uploads a previous run was receiving are never resumed.
        self.state.blobs.clear_staging();
        // Connected before serving, so a replica that cannot hear the others does not start.
        let cluster_events = self
            .state
            .store
            .subscribe()
            .await?
            .map(|events| tokio::spawn(cluster::run_events(self.state.clone(), events)));
        let sweeper = tokio::spawn(lifecycle::run(self.state.clone()));
        let key_refresh = tokio::spawn(auth::keys::run_refresh(self.state.clone()));
        let issuer_refresh = tokio::spawn(auth::issuers::run_refresh(self.state.clone()));
        let refusals = tokio::spawn(audit::run_refusal_summaries(self.state.clone()));
        let metrics_upkeep = tokio::spawn(metrics::run_upkeep(self.state.metrics.clone()));
        let reload = self.tls.clone().map(|tls| {
            tokio::spawn(
                tls.run_reload(Duration::from_secs(self.state.config.tls.reload_seconds), self.state.clock.clone()),
            )
        });
        let serving = listener::Serving {
            app,
            tls: self.tls.as_ref().map(|t| tokio_rustls::TlsAcceptor::from(t.server_config())),
            limits: listener::Limits::from(&self.state.config.connections),
            proxies: self.proxies.clone(),
        };
        let dispatcher = self.state.clone();
        let drain = listener::Drain {
            on_stop: Box::new(move || dispatcher.dispatcher.close()),
            grace: Duration::from_secs(self.state.config.shutdown.grace_seconds),
        };
        let result = listener::run(listener, serving, shutdown, drain).await;
        // Connections are closed or cut; calls already running on their own tasks finish
        // (change and audit entry together) before the staging area is cleared under them.
        self.state.calls.close();
        self.state.calls.wait().await;
        refusals.abort();
        audit::write_refusal_summaries(&self.state, true).await;
        sweeper.abort();
        if let Some(events) = cluster_events {
            events.abort();
        }
        metrics_upkeep.abort();
        key_refresh.abort();
        issuer_refresh.abort();
        if let Some(reload) = reload {
            reload.abort();
        }
        result?;
        // Cut uploads dropped their staging files; this catches anything they left.
        self.state.blobs.clear_staging();
        tracing::info!("server stopped");
        Ok(())
    }

    /// Runs the lifecycle rules once now (the server also runs them periodically).
    pub async fn sweep_now(&self) -> Result<lifecycle::Sweep, ServerError> {
        Ok(lifecycle::sweep(&self.state).await?)
    }

    /// A signed access token carrying `roles`, as an identity provider would issue.
    pub fn mint_access_token(&self, request: &TokenRequest) -> Result<String, ServerError> {
        if !auth::caller::valid_tenant_id(&request.tenant) {
            return Err(ServerError::Invalid(format!("'{}' is not a valid tenant id", request.tenant)));
        }
        let ttl = request.ttl.as_secs();
        if ttl == 0 || ttl > config::MAX_TOKEN_TTL_SECONDS {
            return Err(ServerError::Invalid(format!(
                "a token's lifetime must be between 1 and {} seconds, not {ttl}",
                config::MAX_TOKEN_TTL_SECONDS
            )));
        }
        let now = chrono::Utc::now().timestamp();
        let claims = AccessClaims {
            iss: self.state.config.auth.issuer.clone(),
            aud: auth::MDE_AUDIENCES[0].to_owned(),
            sub: request.requestor.clone(),
            tid: request.tenant.clone(),
            iat: now,
            nbf: now,
            exp: now.saturating_add(ttl as i64),
            appid: Some(request.requestor.clone()),
            app_displayname: Some(request.requestor.clone()),
            roles: request.roles.clone(),
            ver: Some("1.0".to_owned()),
            ..Default::default()
        };
        Ok(self.state.keyring.sign(auth::caller::ACCESS_TOKEN_TYPE, &claims)?)
    }

    /// A new single-use enrollment token for `tenant`, valid for `ttl` (default from config).
    pub async fn create_enrollment_token(&self, tenant: &str, ttl: Option<Duration>) -> Result<String, ServerError> {
        self.create_enrollment_token_with(tenant, ttl, 1).await
    }

    /// A new enrollment token for `tenant` allowing `uses` enrollments, valid for `ttl`
    /// (default from config, at most [`enrollment::MAX_TOKEN_TTL`]).
    pub async fn create_enrollment_token_with(
        &self,
        tenant: &str,
        ttl: Option<Duration>,
        uses: u32,
    ) -> Result<String, ServerError> {
        let ttl = ttl.unwrap_or(Duration::from_secs(self.state.config.agents.enrollment_token_ttl_seconds));
        let created = enrollment::create_token(self.state.store.as_ref(), tenant, ttl, uses, self.state.now()).await;
        match created {
            Ok((token, _)) => Ok(token),
            Err(enrollment::EnrollmentError::Store(e)) => Err(e.into()),
            Err(e) => Err(ServerError::Invalid(e.to_string())),
        }
    }
}

/// Quotas counted in the shared database when replicas share it, else in the process.
fn limiter_for(store: &Arc<dyn Store>) -> Arc<dyn RateLimiter> {
    match store.shared() {
        true => Arc::new(SharedLimiter::new(store.clone())),
        false => Arc::new(InMemoryLimiter::default()),
    }
}

/// Every path the route table serves (`/api/machines/{id}`, `/{tenant}/oauth2/token`, …),
/// for tests that walk them all; the routes `serve` adds beside the table are not in it.
pub fn route_paths() -> Vec<String> {
    routes::table().paths()
}

pub(crate) fn create_private_dir(path: &std::path::Path) -> Result<(), ServerError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(path).map_err(|source| ServerError::DataDir { path: path.to_owned(), source })
}
