//! The agent's life: enroll (once), announce itself, hold a long-poll open for work,
//! run each collection in the background and report how it ended.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use casefile_collectors::Context;
use casefile_proto::action::hresult;
use casefile_proto::agent::{ActionFailure, AgentTask, EnrollRequest, HelloRequest};
use casefile_proto::profile::Profile;
use ed25519_dalek::SigningKey;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::collect::{Collection, Collectors, Governance};
use crate::identity::{self, Identity};
use crate::outbox::{self, Backoff, Entry, Outbox, Report};
use crate::transport::{Timeouts, Transport};
use crate::{AgentError, collect, host};

#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub server: String,
    pub enroll_token: Option<String>,
    pub state_dir: PathBuf,
    /// Overrides the host identity (for cloned images that share `/etc/machine-id`).
    pub host_id: Option<String>,
    /// Root of the file system the collectors read: `/` on a real host.
    pub collect_root: PathBuf,
    /// What a collection runs when a test narrows it; `None`: the profile the task names
    /// (the standard one when the server names none).
    pub collectors: Option<Collectors>,
    /// Collector limits (file, log and command caps).
    pub limits: casefile_collectors::Limits,
    /// Collection limits (collector timeout, package cap, priority).
    pub governance: Governance,
    /// How long each request may wait on the server.
    pub timeouts: Timeouts,
    /// Whom the agent trusts as the server (pinned CA, saved CA or system roots).
    pub trust: crate::trust::Trust,
}

impl AgentConfig {
    pub fn new(server: impl Into<String>, enroll_token: Option<String>, state_dir: PathBuf) -> Self {
        Self {
            server: server.into(),
            enroll_token,
            state_dir,
            host_id: None,
            collect_root: PathBuf::from("/"),
            collectors: None,
            limits: Default::default(),
            governance: Governance::default(),
            timeouts: Timeouts::default(),
            trust: Default::default(),
        }
    }
}

/// How long a stopping agent waits for its collections to report that they stopped.
const STOP_GRACE: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Reports are retried with backoff from this pause up to the cap, until delivered.
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_CAP: Duration = Duration::from_secs(60);
/// Uploads are retried at least this long, and at least the server's silent-agent window.
const MIN_UPLOAD_WINDOW: Duration = Duration::from_secs(600);

/// Runs until `shutdown` is cancelled, or fails at start if the server cannot be reached
/// or refuses the agent.
pub async fn run(config: AgentConfig, shutdown: CancellationToken) -> Result<(), AgentError> {
    run_with_ready(config, shutdown, None).await
}

/// The start-up announcement, naming the actions whose reports this agent still holds.
fn hello_request(config: &AgentConfig, base: &reqwest::Url) -> HelloRequest {
    let holding = Outbox::open(&config.state_dir).map(|o| o.held()).unwrap_or_default();
    HelloRequest { host: host::info(base), holding }
}

/// [`run`], telling `ready` the agent's identity once it is enrolled and online.
pub async fn run_with_ready(
    config: AgentConfig,
    shutdown: CancellationToken,
    ready: Option<tokio::sync::oneshot::Sender<Identity>>,
) -> Result<(), AgentError> {
    identity::ensure_dir(&config.state_dir)?;
    // Partial packages of an interrupted run are never resumed (issue 9 item 13).
    let outbox = Outbox::open(&config.state_dir)?;
    outbox.sweep();
    let (transport, me) = connect(&config).await?;
    let transport = transport.with_timeouts(config.timeouts);
    let hello = transport.hello(&hello_request(&config, transport.base())).await?;
    for id in &hello.abandoned_actions {
        tracing::warn!(action_id = %id, "a collection interrupted by the last stop was reported failed");
    }
    tracing::info!(machine_id = %me.machine_id, server = %config.server, "agent online, waiting for actions");
    if let Some(ready) = ready {
        let _ = ready.send(me.clone());
    }
    let wait = Duration::from_secs(hello.poll_wait_seconds.max(1));
    let upload_window = Duration::from_secs(hello.silent_timeout_seconds).max(MIN_UPLOAD_WINDOW);
    // Every package is signed with the key registered at enrollment.
    let signer = identity::signing_key(&config.state_dir)?;
    let config = Arc::new(config);
    let mut collections = JoinSet::new();
    // The cancel switch of each running collection or report delivery, by action id.
    let mut running: HashMap<Uuid, CancellationToken> = HashMap::new();
    let job = |cancel: CancellationToken| Job {
        transport: transport.clone(),
        config: config.clone(),
        outbox: outbox.clone(),
        machine_id: me.machine_id.clone(),
        cancel,
        shutdown: shutdown.clone(),
        signer: signer.clone(),
        upload_window,
    };
    // Reports the last run could not deliver go out first (the server kept their actions
    // running because `hello` named them).
    for entry in outbox.entries() {
        let cancel = shutdown.child_token();
        running.insert(entry.action_id, cancel.clone());
        collections.spawn(job(cancel).settle(entry.action_id, entry.report));
    }
    let mut backoff = Duration::from_millis(500);
    loop {
        // Reap finished collections without racing them against the poll: a poll answer
        // dropped mid-flight would leave its action claimed but never run.
        while let Some(done) = collections.try_join_next() {
            if let Ok(id) = done {
                running.remove(&id);
            }
        }
        let polled = tokio::select! {
            _ = shutdown.cancelled() => break,
            polled = transport.next_task(wait) => polled,
        };
        match polled {
            Ok(Some(AgentTask::CollectInvestigationPackage { action_id, requestor, profile, .. })) => {
                backoff = Duration::from_millis(500);
                match running.entry(action_id) {
                    std::collections::hash_map::Entry::Vacant(slot) => {
                        let cancel = slot.insert(shutdown.child_token()).clone();
                        collections.spawn(job(cancel).execute(action_id, requestor, profile));
                    }
                    // Offered again because this agent's confirmation was lost: it runs
                    // already; confirm again, off the loop.
                    std::collections::hash_map::Entry::Occupied(_) => {
                        tokio::spawn(confirm_receipt(transport.clone(), action_id));
                    }
                }
            }
            Ok(Some(AgentTask::Cancel { action_id })) => {
                backoff = Duration::from_millis(500);
                match running.get(&action_id) {
                    // The job confirms once its work has stopped; until then the server
                    // repeats the request, so wait for the job instead of polling at once.
                    Some(cancel) => {
                        tracing::info!(%action_id, "cancelling the collection");
                        cancel.cancel();
                        let _ = tokio::time::timeout(STOP_GRACE, async {
                            while let Some(done) = collections.join_next().await {
                                if let Ok(id) = done {
                                    running.remove(&id);
                                    if id == action_id {
                                        break;
                                    }
                                }
                            }
                        })
                        .await;
                    }
                    // Nothing of it runs here (any more): confirm, through the outbox so a
                    // lost confirmation is retried, off the loop so it cannot hang it.
                    None => {
                        let cancel = shutdown.child_token();
                        running.insert(action_id, cancel.clone());
                        collections.spawn(job(cancel).settle(action_id, Report::Cancelled));
                    }
                }
            }
            Ok(None) => backoff = Duration::from_millis(500),
            Err(AgentError::Refused(why)) => return Err(AgentError::Refused(why)),
            Err(e) => {
                tracing::warn!("polling the server failed, retrying in {backoff:?}: {e}");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
    // Collections were cancelled with `shutdown` (child tokens); let them report it.
    let _ = tokio::time::timeout(STOP_GRACE, async { while collections.join_next().await.is_some() {} }).await;
    tracing::info!("agent stopped");
    Ok(())
}

/// The standard profile, for a task from a server that names none.
fn standard_profile() -> Profile {
    casefile_proto::profile::builtin().remove(casefile_proto::profile::STANDARD).expect("standard is built in")
}

/// Least time between two progress reports of one collection.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// Sends the collection's progress to the server as it changes, at most every
/// [`PROGRESS_EVERY`] (the newest state wins), until the collection drops its sender. A
/// lost report only leaves the action's progress older.
async fn forward_progress(
    transport: Transport,
    action_id: Uuid,
    mut watch: tokio::sync::watch::Receiver<Option<casefile_proto::action::Progress>>,
) {
    let send = async |progress: Option<casefile_proto::action::Progress>| {
        let Some(progress) = progress else { return };
        if let Err(e) = transport.report_progress(action_id, &progress).await {
            tracing::debug!(%action_id, "a progress report was not delivered: {e}");
        }
    };
    while watch.changed().await.is_ok() {
        let latest = watch.borrow_and_update().clone();
        send(latest).await;
        tokio::time::sleep(PROGRESS_EVERY).await;
    }
    // `changed` yields a value sent before the sender went, so the last state went out.
}

/// Tells the server the action handed out by a poll arrived (issue 9 item 11). A lost
/// confirmation only means the action is offered again, which the agent recognises.
async fn confirm_receipt(transport: Transport, action_id: Uuid) {
    if let Err(e) = transport.accept(action_id).await {
        tracing::info!(%action_id, "confirming receipt failed (the server will offer it again): {e}");
    }
}

/// Uses the saved identity, enrolling first when there is none (or the server no longer
/// knows it and an enrollment token was given).
async fn connect(config: &AgentConfig) -> Result<(Transport, Identity), AgentError> {
    let base = crate::trust::transport(config).await?;
    if let Some(saved) = identity::load(&config.state_dir)? {
        let transport = base.clone().with_credential(saved.credential.clone());
        match transport.hello(&hello_request(config, transport.base())).await {
            Ok(_) => return Ok((transport, saved)),
            Err(AgentError::Refused(why)) if config.enroll_token.is_some() => {
                tracing::warn!("the saved enrollment was refused ({why}); enrolling again");
            }
            Err(e) => return Err(e),
        }
    }
    let token = config.enroll_token.as_deref().ok_or(AgentError::NotEnrolled)?;
    let key = identity::signing_key(&config.state_dir)?;
    let host_id = match &config.host_id {
        Some(id) => id.clone(),
        None => host::host_id(&config.state_dir)?,
    };
    let request = EnrollRequest {
        host_id,
        host: host::info(base.base()),
        public_key: Some(identity::public_key_base64(&key)),
        proof: None,
    };
    let enrolled = enroll_proving(&base, token, &key, request).await?;
    let me = Identity {
        server: config.server.clone(),
        machine_id: enrolled.machine_id,
        tenant_id: enrolled.tenant_id,
        credential: enrolled.credential,
    };
    identity::save(&config.state_dir, &me)?;
    tracing::info!(machine_id = %me.machine_id, "enrolled");
    Ok((base.with_credential(me.credential.clone()), me))
}

/// Enrolls; a host the server already knows proves its registered key by signing a
/// challenge, since a token alone never re-keys an enrolled machine (issue 9 item 1).
async fn enroll_proving(
    base: &Transport,
    token: &str,
    key: &SigningKey,
    mut request: EnrollRequest,
) -> Result<casefile_proto::agent::EnrollResponse, AgentError> {
    let ask = casefile_proto::agent::EnrollChallengeRequest { host_id: request.host_id.clone() };
    if let Some(challenge) = base.enroll_challenge(token, &ask).await? {
        request.proof = Some(identity::prove(key, &challenge, request.public_key.as_deref()));
    }
    base.enroll(token, &request).await
}

struct Job {
    transport: Transport,
    config: Arc<AgentConfig>,
    outbox: Outbox,
    machine_id: String,
    /// Cancelled by the server's request or by the agent stopping.
    cancel: CancellationToken,
    shutdown: CancellationToken,
    signer: SigningKey,
    upload_window: Duration,
}

/// How one delivery of a report ended.
enum Delivery {
    Delivered,
    /// The server answered for good that it will not take it.
    Refused(AgentError),
    /// The server asked to cancel the collection while its package waited for upload.
    Cancelled,
    /// The upload window passed; the last error.
    Expired(AgentError),
    /// The agent is stopping; the report stays in the outbox for the next start.
    Stopped,
}

impl Job {
    /// Runs one collection and reports how it ended; returns its action id.
    async fn execute(self, action_id: Uuid, requestor: String, profile: Option<Profile>) -> Uuid {
        let profile = profile.unwrap_or_else(standard_profile);
        tracing::info!(%action_id, %requestor, profile = %profile.name, "collecting investigation package");
        // Confirmed before the work starts, so the receipt precedes the package in the
        // action's chain of custody.
        confirm_receipt(self.transport.clone(), action_id).await;
        // What a server sends runs only within the bounds a profile may have.
        let checked = profile.check().map_err(|e| AgentError::Collection(format!("the task's profile: {e}")));
        let collected = match checked {
            Ok(()) => self.collect(action_id, profile).await,
            Err(e) => Err(e),
        };
        let report = match collected {
            Ok(package) => Report::Upload {
                size: package.size,
                sha256: package.sha256,
                until: outbox::deadline_after(self.upload_window),
            },
            // Cancelled by the server: the work has stopped and its file is gone.
            Err(_) if self.cancel.is_cancelled() && !self.shutdown.is_cancelled() => Report::Cancelled,
            Err(_) if self.cancel.is_cancelled() => Report::Failure {
                error_h_result: hresult::ABORTED,
                troubleshoot_info: "The agent was stopped during the collection".to_owned(),
            },
            Err(e) => Report::Failure { error_h_result: hresult::COLLECTION_FAILED, troubleshoot_info: e.to_string() },
        };
        self.settle(action_id, report).await
    }

    async fn collect(&self, action_id: Uuid, profile: Profile) -> Result<collect::CollectedPackage, AgentError> {
        let output = self.outbox.package_path(action_id);
        let (progress, watch) = tokio::sync::watch::channel(None);
        let forwarding = tokio::spawn(forward_progress(self.transport.clone(), action_id, watch));
        let (collectors, profile) = match &self.config.collectors {
            Some(narrowed) => (narrowed.clone(), None),
            None => (Collectors(Arc::new(Vec::new())), Some(profile)),
        };
        let collection = Collection {
            output: output.clone(),
            meta: collect::package_meta(Some(action_id), Some(self.machine_id.clone())),
            ctx: Context {
                root: self.config.collect_root.clone(),
                cancel: self.cancel.clone(),
                limits: self.config.limits,
                running: None,
            },
            collectors,
            profile,
            governance: self.config.governance,
            signer: self.signer.clone(),
            progress: Some(progress),
        };
        let written = collection.run().await;
        // The last report goes out before the upload's: the forwarder ends with its sender.
        let _ = forwarding.await;
        if written.is_err() {
            let _ = tokio::fs::remove_file(&output).await;
        }
        written
    }

    /// Keeps `report` in the outbox and delivers it, retrying with backoff, until the
    /// server takes it or answers for good; returns the action id.
    async fn settle(self, action_id: Uuid, mut report: Report) -> Uuid {
        loop {
            if let Report::Failure { troubleshoot_info, .. } = &report {
                tracing::warn!(%action_id, "collection failed: {troubleshoot_info}");
            }
            let entry = Entry { action_id, report: report.clone() };
            if let Err(e) = self.outbox.put(&entry) {
                // Still worth one delivery now; it just will not survive a restart.
                tracing::error!(%action_id, "cannot keep the report on disk: {e}");
            }
            let delivery = self.deliver(&entry).await;
            report = match (delivery, report) {
                (Delivery::Stopped, _) => {
                    tracing::info!(%action_id, "stopping; the report is kept for the next start");
                    return action_id;
                }
                (Delivery::Delivered, Report::Upload { .. }) => {
                    tracing::info!(%action_id, "package uploaded and verified");
                    break;
                }
                (Delivery::Delivered, Report::Cancelled) => {
                    tracing::info!(%action_id, "collection cancelled");
                    break;
                }
                (Delivery::Delivered, Report::Failure { .. }) => break,
                // Whatever the server made of the package, the action must end: a report
                // tells it (refused when it already ended the action, which is harmless).
                (Delivery::Refused(e), Report::Upload { .. }) => {
                    self.outbox.discard_package(action_id);
                    Report::Failure {
                        error_h_result: hresult::COLLECTION_FAILED,
                        troubleshoot_info: format!("The server refused the package: {e}"),
                    }
                }
                (Delivery::Expired(e), _) => {
                    self.outbox.discard_package(action_id);
                    Report::Failure {
                        error_h_result: hresult::COLLECTION_FAILED,
                        troubleshoot_info: format!("The package could not be uploaded in time: {e}"),
                    }
                }
                (Delivery::Cancelled, _) => {
                    self.outbox.discard_package(action_id);
                    Report::Cancelled
                }
                (Delivery::Refused(e), _) => {
                    tracing::info!(%action_id, "report not applied: {e}");
                    break;
                }
            };
        }
        if let Err(e) = self.outbox.remove(action_id) {
            tracing::warn!(%action_id, "cannot remove a delivered report: {e}");
        }
        action_id
    }

    /// One report, tried until it is delivered or refused for good. Only an upload gives
    /// way to a cancellation; every report stops trying when the agent stops (after at
    /// least one try).
    async fn deliver(&self, entry: &Entry) -> Delivery {
        let action_id = entry.action_id;
        let mut backoff = Backoff::new(RETRY_FIRST, RETRY_CAP);
        let is_upload = matches!(entry.report, Report::Upload { .. });
        let cancelled = || if is_upload { self.cancel.clone() } else { self.shutdown.clone() };
        loop {
            if is_upload && self.cancel.is_cancelled() {
                return if self.shutdown.is_cancelled() { Delivery::Stopped } else { Delivery::Cancelled };
            }
            let attempt = async {
                match &entry.report {
                    Report::Upload { size, sha256, .. } => {
                        let path = self.outbox.package_path(action_id);
                        self.transport.upload_resumable(action_id, &path, *size, sha256).await
                    }
                    Report::Failure { error_h_result, troubleshoot_info } => {
                        let failure = ActionFailure {
                            error_h_result: *error_h_result,
                            troubleshoot_info: troubleshoot_info.clone(),
                        };
                        self.transport.report_failure(action_id, &failure).await
                    }
                    Report::Cancelled => self.transport.confirm_cancel(action_id).await,
                }
            };
            let stop = cancelled();
            let outcome = tokio::select! {
                _ = stop.cancelled(), if is_upload => {
                    return if self.shutdown.is_cancelled() { Delivery::Stopped } else { Delivery::Cancelled };
                }
                outcome = attempt => outcome,
            };
            let error = match outcome {
                Ok(()) => return Delivery::Delivered,
                Err(e @ AgentError::State { .. }) => return Delivery::Refused(e),
                Err(e) if e.is_definitive() => return Delivery::Refused(e),
                Err(e) => e,
            };
            if self.shutdown.is_cancelled() {
                return Delivery::Stopped;
            }
            if let Report::Upload { until, .. } = entry.report
                && outbox::unix_now() >= until
            {
                return Delivery::Expired(error);
            }
            let pause = backoff.pause();
            tracing::warn!(%action_id, "delivering the report failed, retrying in {pause:?}: {error}");
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }
}
