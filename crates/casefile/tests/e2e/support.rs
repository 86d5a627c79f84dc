//! The harness: a server per test on port 0, real agents, tokens and waits that react
//! to the server's change notifications rather than sleeping.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use casefile_agent::identity::Identity;
use casefile_proto::MachineAction;
use casefile_proto::action::{ActionStatus, ActionType};
use casefile_proto::time::Timestamp;
use casefile_server::auth::AccessClaims;
use casefile_server::clock::{Clock, ManualClock, SystemClock};
use casefile_server::{Server, ServerConfig, TokenRequest};
use casefile_store::{HostFacts, MachineEnrollment};
use reqwest::Response;
use serde_json::Value;
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

pub const COLLECT: &str = "Machine.CollectForensics";
pub const READ: &str = "Machine.Read.All";
pub const ALL: &[&str] = &[COLLECT, READ];

/// Upper bound on any single wait; a hang fails the test instead of blocking CI.
const WAIT_LIMIT: Duration = Duration::from_secs(120);

pub struct TestServer {
    pub base: String,
    pub dir: TempDir,
    /// Trusts the server's generated CA (and nothing else).
    pub http: reqwest::Client,
    /// `sha256:HEX` of the server's CA; `None` when it serves plain HTTP.
    pub ca_pin: Option<String>,
    server: Server,
    clock: Option<Arc<ManualClock>>,
    changes: tokio::sync::watch::Receiver<u64>,
    shutdown: CancellationToken,
    serving: Option<tokio::task::JoinHandle<Result<(), casefile_server::ServerError>>>,
}

pub struct Collected {
    pub agent: TestAgent,
    pub token: String,
    pub id: String,
    pub url: String,
}

pub struct TestAgent {
    pub identity: Identity,
    pub state_dir: PathBuf,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), casefile_agent::AgentError>>,
}

impl TestAgent {
    pub async fn stop(&mut self) {
        self.stop.cancel();
        let _ = (&mut self.task).await;
    }
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// A server with `tweak` applied to its configuration. Rate limits are off unless
    /// the tweak turns them on.
    pub async fn start_with(tweak: impl FnOnce(&mut ServerConfig)) -> Self {
        Self::launch(tweak, None).await
    }

    /// A server whose clock moves only by [`TestServer::advance`].
    pub async fn start_with_clock(tweak: impl FnOnce(&mut ServerConfig)) -> Self {
        Self::launch(tweak, Some(Arc::new(ManualClock::starting_now()))).await
    }

    /// A server on the data directory `dir/data` another server left (see
    /// [`TestServer::stop_keeping_dir`]), on a new port.
    pub async fn start_in(dir: TempDir) -> Self {
        Self::launch_in(dir, |_| {}, None).await
    }

    /// [`TestServer::start_in`] with `tweak` applied to the configuration.
    pub async fn start_in_with(dir: TempDir, tweak: impl FnOnce(&mut ServerConfig)) -> Self {
        Self::launch_in(dir, tweak, None).await
    }

    /// Stops serving, closes the database (its last connection removes the -wal and -shm
    /// files by name, so a server started on the path later must not meet it) and hands
    /// back the directory, data and all.
    pub async fn stop_keeping_dir(mut self) -> TempDir {
        self.shutdown.cancel();
        if let Some(serving) = self.serving.take() {
            let _ = serving.await;
        }
        self.server.state().store.close().await;
        std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap())
    }

    async fn launch(tweak: impl FnOnce(&mut ServerConfig), clock: Option<Arc<ManualClock>>) -> Self {
        Self::launch_in(tempfile::tempdir().unwrap(), tweak, clock).await
    }

    async fn launch_in(dir: TempDir, tweak: impl FnOnce(&mut ServerConfig), clock: Option<Arc<ManualClock>>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        // The real address, so that the default public URL and issuer are this server's.
        let listen = listener.local_addr().unwrap();
        let mut config = ServerConfig { data_dir: dir.path().join("data"), listen, ..Default::default() };
        config.rate_limits.enabled = false;
        tweak(&mut config);
        // After the tweak: a server started on another's data directory shares its records.
        if config.store.url.is_none() {
            config.store.url = postgres_url_for(&config.data_dir);
        }
        LAST_STORE_URL.with(|last| last.replace(config.store.url.clone()));
        let scheme = if config.tls.plain_http { "http" } else { "https" };
        let base = format!("{scheme}://{listen}");
        let server_clock: Arc<dyn Clock> = match &clock {
            Some(manual) => manual.clone(),
            None => Arc::new(SystemClock),
        };
        let server = Server::open_with_clock(config.clone(), server_clock).await.unwrap();
        server.record_endpoint();
        let ca_pin = server.tls().map(|tls| tls.ca_pin());
        let http = match server.tls() {
            Some(tls) => https_client(&tls.ca_pem()),
            None => reqwest::Client::new(),
        };
        let changes = server.state().dispatcher.watch_actions();
        let shutdown = CancellationToken::new();
        let serving = server.clone();
        let stop = shutdown.clone();
        let serving =
            Some(tokio::spawn(async move { serving.serve(listener, async move { stop.cancelled().await }).await }));
        Self { base, dir, http, ca_pin, server, clock, changes, shutdown, serving }
    }

    /// The `casefile-agent` flags that make it trust this server.
    pub fn trust_args(&self) -> Vec<String> {
        match &self.ca_pin {
            Some(pin) => vec!["--ca-sha256".to_owned(), pin.clone()],
            None => Vec::new(),
        }
    }

    /// Moves the server's clock forward (servers from [`TestServer::start_with_clock`]).
    pub fn advance(&self, by: Duration) {
        self.clock.as_ref().expect("a server started with a manual clock").advance(by);
    }

    pub fn token(&self, roles: &[&str]) -> String {
        self.token_for("default", roles)
    }

    pub fn token_for(&self, tenant: &str, roles: &[&str]) -> String {
        self.server
            .mint_access_token(&TokenRequest {
                tenant: tenant.to_owned(),
                roles: roles.iter().map(|r| r.to_string()).collect(),
                requestor: "e2e tests".to_owned(),
                ttl: Duration::from_secs(600),
            })
            .unwrap()
    }

    /// Signs arbitrary access-token claims with the server's key.
    pub fn sign(&self, claims: &AccessClaims) -> String {
        self.server.state().keyring.sign("JWT", claims).unwrap()
    }

    pub fn claims(&self, roles: &[&str]) -> AccessClaims {
        let now = chrono::Utc::now().timestamp();
        AccessClaims {
            iss: self.server.state().config.auth.issuer.clone(),
            aud: "https://api.securitycenter.microsoft.com".into(),
            sub: "tester".into(),
            tid: "default".into(),
            iat: now,
            nbf: now,
            exp: now + 600,
            appid: Some("tester".into()),
            app_displayname: Some("tester".into()),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            ver: Some("1.0".into()),
            ..Default::default()
        }
    }

    pub fn server(&self) -> &Server {
        &self.server
    }

    /// A token of another application of the default tenant.
    pub fn token_as(&self, requestor: &str, roles: &[&str]) -> String {
        self.server
            .mint_access_token(&TokenRequest {
                tenant: "default".to_owned(),
                roles: roles.iter().map(|r| r.to_string()).collect(),
                requestor: requestor.to_owned(),
                ttl: Duration::from_secs(600),
            })
            .unwrap()
    }

    /// A machine written straight into the store (no agent), named `name`; returns its id.
    pub async fn seed_machine(&self, name: &str) -> String {
        use sha2::Digest;
        let id = hex::encode(&sha2::Sha256::digest(name.as_bytes())[..20]);
        let facts =
            HostFacts { computer_dns_name: name.to_owned(), os_platform: "Linux".to_owned(), ..Default::default() };
        self.server
            .state()
            .store
            .enroll_machine(&MachineEnrollment {
                id: id.clone(),
                tenant_id: casefile_proto::TenantId::default_tenant(),
                facts,
                credential_hash: format!("seeded-{id}"),
                agent_public_key: None,
                last_ip_address: None,
                at: self.server.state().now(),
            })
            .await
            .unwrap();
        id
    }

    /// An action written straight into the store, for list tests that need many.
    pub async fn seed_action(
        &self,
        machine_id: &str,
        status: ActionStatus,
        kind: ActionType,
        requestor: &str,
        created: Timestamp,
    ) -> String {
        let mut action = MachineAction::new_pending(kind, machine_id, None, requestor, "seeded".to_owned(), created);
        action.status = status;
        let machine = self
            .server
            .state()
            .store
            .machine(&casefile_proto::TenantId::default_tenant(), machine_id)
            .await
            .unwrap()
            .unwrap();
        action.computer_dns_name = Some(machine.facts.computer_dns_name);
        self.server
            .state()
            .store
            .create_action(&casefile_proto::TenantId::default_tenant(), &action, None)
            .await
            .unwrap();
        action.id.to_string()
    }

    pub async fn enroll_token(&self) -> String {
        self.server.create_enrollment_token("default", None).await.unwrap()
    }

    /// Starts a real agent (the library the binary runs) and waits until it is online.
    pub async fn start_agent(&self, host_id: &str) -> TestAgent {
        let state_dir = self.dir.path().join(format!("agent-{host_id}"));
        self.start_agent_in(host_id, state_dir, Some(self.enroll_token().await)).await
    }

    pub async fn start_agent_in(&self, host_id: &str, state_dir: PathBuf, token: Option<String>) -> TestAgent {
        self.start_agent_with(host_id, state_dir, token, |_| {}).await
    }

    pub async fn start_agent_with(
        &self,
        host_id: &str,
        state_dir: PathBuf,
        token: Option<String>,
        tweak: impl FnOnce(&mut casefile_agent::AgentConfig),
    ) -> TestAgent {
        let mut config = casefile_agent::AgentConfig::new(self.base.clone(), token, state_dir.clone());
        config.host_id = Some(host_id.to_owned());
        if let Some(pin) = &self.ca_pin {
            config.trust = casefile_agent::trust::Trust::Pinned(pin.parse().unwrap());
        }
        tweak(&mut config);
        let stop = CancellationToken::new();
        let (ready, online) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(casefile_agent::run_with_ready(config, stop.clone(), Some(ready)));
        let identity =
            tokio::time::timeout(WAIT_LIMIT, online).await.expect("agent online in time").expect("agent started");
        TestAgent { identity, state_dir, stop, task }
    }

    pub async fn get(&self, path: &str, token: &str) -> Response {
        self.http.get(format!("{}{path}", self.base)).bearer_auth(token).send().await.unwrap()
    }

    pub async fn post_json(&self, path: &str, token: &str, body: &Value) -> Response {
        self.http.post(format!("{}{path}", self.base)).bearer_auth(token).json(body).send().await.unwrap()
    }

    pub async fn collect(&self, machine: &str, token: &str) -> Response {
        self.http
            .post(format!("{}/api/machines/{machine}/collectInvestigationPackage", self.base))
            .bearer_auth(token)
            .json(&serde_json::json!({"Comment": "e2e collection"}))
            .send()
            .await
            .unwrap()
    }

    pub async fn action(&self, id: &str) -> MachineAction {
        let response = self.get(&format!("/api/machineactions/{id}"), &self.token(ALL)).await;
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    /// A real agent on `host_id` collects a package to `Succeeded`; returns the agent (still
    /// running), a token with every permission, the action id and a download link.
    pub async fn succeeded_collection(&self, host_id: &str) -> Collected {
        let agent = self.start_agent(host_id).await;
        let token = self.token(ALL);
        let created: Value = self.collect(&agent.identity.machine_id, &token).await.json().await.unwrap();
        let id = created["id"].as_str().unwrap().to_owned();
        let done = self.wait_final(&id).await;
        assert_eq!(done.status, ActionStatus::Succeeded, "{:?}", done.troubleshoot_info);
        let link: Value =
            self.get(&format!("/api/machineactions/{id}/getPackageUri"), &token).await.json().await.unwrap();
        let url = link["value"].as_str().unwrap().to_owned();
        Collected { agent, token, id, url }
    }

    /// Waits until the action reaches a final status, woken by the server's change
    /// notifications (no sleeps, no polling interval).
    pub async fn wait_final(&self, id: &str) -> MachineAction {
        self.wait_action(id, |action| action.status.is_final()).await
    }

    /// Waits until the action satisfies `until`, woken by the server's change notifications.
    pub async fn wait_action(&self, id: &str, until: impl Fn(&MachineAction) -> bool) -> MachineAction {
        let mut changes = self.changes.clone();
        tokio::time::timeout(WAIT_LIMIT, async {
            loop {
                changes.borrow_and_update();
                let action = self.action(id).await;
                if until(&action) {
                    return action;
                }
                changes.changed().await.unwrap();
            }
        })
        .await
        .expect("the action got there in time")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
        // The directory goes, and its database with it (unless `stop_keeping_dir` handed
        // both on).
        pg_databases().remove(&self.dir.path().join("data"));
    }
}

/// Whether the servers keep their records in PostgreSQL (`CASEFILE_TEST_STORE=postgres`)
/// rather than SQLite in their data directory.
pub fn on_postgres() -> bool {
    std::env::var("CASEFILE_TEST_STORE").is_ok_and(|v| v == "postgres")
}

thread_local! {
    /// The PostgreSQL database of the server this test (thread) started last: the CLI the
    /// test runs on that server's data directory is pointed at it (`cli::casefile`).
    static LAST_STORE_URL: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// `CASEFILE_STORE__URL` for a command run by this test: the database of the server it
/// started last, on PostgreSQL.
pub fn store_url_of_this_test() -> Option<String> {
    LAST_STORE_URL.with(|last| last.borrow().clone())
}

/// For tests of what only the SQLite store has (its file, its backup): `true`, with the
/// reason printed, when the servers run on PostgreSQL.
pub fn sqlite_only(what: &str) -> bool {
    if on_postgres() {
        eprintln!("skipped on PostgreSQL: {what} is SQLite's");
    }
    on_postgres()
}

fn pg_databases() -> std::sync::MutexGuard<'static, std::collections::HashMap<PathBuf, casefile_testkit::pg::PgDatabase>>
{
    static DATABASES: std::sync::OnceLock<
        std::sync::Mutex<std::collections::HashMap<PathBuf, casefile_testkit::pg::PgDatabase>>,
    > = std::sync::OnceLock::new();
    DATABASES.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner())
}

/// On PostgreSQL, the database of the data directory `dir`: a fresh one in the test
/// process's cluster, kept with the directory so a server started on it again finds its
/// records.
fn postgres_url_for(dir: &std::path::Path) -> Option<String> {
    if !on_postgres() {
        return None;
    }
    let mut databases = pg_databases();
    let database = databases.entry(dir.to_owned()).or_insert_with(|| {
        casefile_testkit::pg::database().expect("CASEFILE_TEST_STORE=postgres needs PostgreSQL binaries")
    });
    Some(database.url.clone())
}

/// A client that trusts only the CA in `ca_pem`.
impl TestServer {
    /// A client builder that trusts this server's CA.
    pub fn client_builder(&self) -> reqwest::ClientBuilder {
        let ca = std::fs::read(self.dir.path().join("data").join("tls").join("ca.pem")).unwrap();
        reqwest::Client::builder().tls_certs_only([reqwest::Certificate::from_pem(&ca).unwrap()])
    }

    /// An agent configuration for this server, pinning its CA.
    pub fn agent_config(&self, token: Option<String>, state_dir: PathBuf) -> casefile_agent::AgentConfig {
        let mut config = casefile_agent::AgentConfig::new(self.base.clone(), token, state_dir);
        if let Some(pin) = &self.ca_pin {
            config.trust = casefile_agent::trust::Trust::Pinned(pin.parse().unwrap());
        }
        config
    }
}

pub fn https_client(ca_pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap()])
        .build()
        .unwrap()
}

/// The error body of a response, checked for the MDE shape.
pub async fn error_of(response: Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let correlation = response.headers().get("x-correlation-id").map(|v| v.to_str().unwrap().to_owned());
    let content_type = response.headers().get("content-type").unwrap().to_str().unwrap().to_owned();
    assert_eq!(content_type, "application/json; charset=utf-8");
    let text = response.text().await.unwrap();
    assert!(text.starts_with("{\"error\":{\"code\":\""), "compact JSON in MDE's shape: {text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    let error = body["error"].clone();
    assert!(error["code"].is_string() && error["message"].is_string(), "{body}");
    assert_eq!(Some(error["target"].as_str().unwrap().to_owned()), correlation, "target is the correlation id");
    assert_eq!(body.as_object().unwrap().len(), 1);
    (status, error)
}
