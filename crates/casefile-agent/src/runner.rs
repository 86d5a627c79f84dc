//! The agent's life: enroll (once), announce itself, hold a long-poll open for work,
//! run each collection in the background and report how it ended.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use casefile_collectors::Context;
use casefile_proto::action::hresult;
use casefile_proto::agent::{ActionFailure, AgentTask, EnrollRequest, HelloRequest};
use ed25519_dalek::SigningKey;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::collect::{Collection, Collectors, Governance};
use crate::identity::{self, Identity};
use crate::transport::Transport;
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
    /// What a collection runs: every collector, unless a test narrows it.
    pub collectors: Collectors,
    /// Collector limits (file, log and command caps).
    pub limits: casefile_collectors::Limits,
    /// Collection limits (collector timeout, package cap, priority).
    pub governance: Governance,
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
            collectors: Collectors::all(),
            limits: Default::default(),
            governance: Governance::default(),
            trust: Default::default(),
        }
    }
}

/// How long a stopping agent waits for its collections to report that they stopped.
const STOP_GRACE: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
const UPLOAD_ATTEMPTS: u32 = 3;

/// Runs until `shutdown` is cancelled, or fails at start if the server cannot be reached
/// or refuses the agent.
pub async fn run(config: AgentConfig, shutdown: CancellationToken) -> Result<(), AgentError> {
    run_with_ready(config, shutdown, None).await
}

/// [`run`], telling `ready` the agent's identity once it is enrolled and online.
pub async fn run_with_ready(
    config: AgentConfig,
    shutdown: CancellationToken,
    ready: Option<tokio::sync::oneshot::Sender<Identity>>,
) -> Result<(), AgentError> {
    identity::ensure_dir(&config.state_dir)?;
    let (transport, me) = connect(&config).await?;
    let hello = transport.hello(&HelloRequest { host: host::info(transport.base()) }).await?;
    for id in &hello.abandoned_actions {
        tracing::warn!(action_id = %id, "a collection interrupted by the last stop was reported failed");
    }
    tracing::info!(machine_id = %me.machine_id, server = %config.server, "agent online, waiting for actions");
    if let Some(ready) = ready {
        let _ = ready.send(me.clone());
    }
    let wait = Duration::from_secs(hello.poll_wait_seconds.max(1));
    // Every package is signed with the key registered at enrollment.
    let signer = identity::signing_key(&config.state_dir)?;
    let config = Arc::new(config);
    let mut collections = JoinSet::new();
    // The cancel switch of each running collection, by action id.
    let mut running: HashMap<Uuid, CancellationToken> = HashMap::new();
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
            Ok(Some(AgentTask::CollectInvestigationPackage { action_id, requestor, .. })) => {
                backoff = Duration::from_millis(500);
                let cancel = shutdown.child_token();
                running.insert(action_id, cancel.clone());
                let job = Job {
                    transport: transport.clone(),
                    config: config.clone(),
                    machine_id: me.machine_id.clone(),
                    cancel,
                    shutdown: shutdown.clone(),
                    signer: signer.clone(),
                };
                collections.spawn(job.execute(action_id, requestor));
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
                    // Nothing of it runs here (any more): confirm straight away.
                    None => {
                        if let Err(e) = transport.confirm_cancel(action_id).await {
                            tracing::info!(%action_id, "cancel confirmation not applied: {e}");
                        }
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

/// Uses the saved identity, enrolling first when there is none (or the server no longer
/// knows it and an enrollment token was given).
async fn connect(config: &AgentConfig) -> Result<(Transport, Identity), AgentError> {
    let base = crate::trust::transport(config).await?;
    if let Some(saved) = identity::load(&config.state_dir)? {
        let transport = base.clone().with_credential(saved.credential.clone());
        match transport.hello(&HelloRequest { host: host::info(transport.base()) }).await {
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
    let request =
        EnrollRequest { host_id, host: host::info(base.base()), public_key: Some(identity::public_key_base64(&key)) };
    let enrolled = base.enroll(token, &request).await?;
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

struct Job {
    transport: Transport,
    config: Arc<AgentConfig>,
    machine_id: String,
    /// Cancelled by the server's request or by the agent stopping.
    cancel: CancellationToken,
    shutdown: CancellationToken,
    signer: SigningKey,
}

impl Job {
    /// Runs one collection and reports how it ended; returns its action id.
    async fn execute(self, action_id: Uuid, requestor: String) -> Uuid {
        tracing::info!(%action_id, %requestor, "collecting investigation package");
        let outcome = self.collect_and_upload(action_id).await;
        if outcome.is_err() && self.cancel.is_cancelled() && !self.shutdown.is_cancelled() {
            // Cancelled by the server: the work has stopped and its file is gone.
            match self.transport.confirm_cancel(action_id).await {
                Ok(()) => tracing::info!(%action_id, "collection cancelled"),
                Err(e) => tracing::warn!(%action_id, "confirming the cancellation failed: {e}"),
            }
            return action_id;
        }
        let failure = match outcome {
            Ok(()) => return action_id,
            Err(_) if self.cancel.is_cancelled() => ActionFailure {
                error_h_result: hresult::ABORTED,
                troubleshoot_info: "The agent was stopped during the collection".to_owned(),
            },
            Err(e) => ActionFailure { error_h_result: hresult::COLLECTION_FAILED, troubleshoot_info: e.to_string() },
        };
        tracing::warn!(%action_id, "collection failed: {}", failure.troubleshoot_info);
        // When the server already ended the action (it rejected the package), it refuses
        // this report; that is expected and harmless.
        if let Err(e) = self.transport.report_failure(action_id, &failure).await {
            tracing::info!(%action_id, "failure report not applied: {e}");
        }
        action_id
    }

    async fn collect_and_upload(&self, action_id: Uuid) -> Result<(), AgentError> {
        let work = self.config.state_dir.join("work");
        identity::ensure_dir(&work)?;
        let output = work.join(format!("{action_id}.zip"));
        let collection = Collection {
            output: output.clone(),
            meta: collect::package_meta(Some(action_id), Some(self.machine_id.clone())),
            ctx: Context {
                root: self.config.collect_root.clone(),
                cancel: self.cancel.clone(),
                limits: self.config.limits,
            },
            collectors: self.config.collectors.clone(),
            governance: self.config.governance,
            signer: self.signer.clone(),
        };
        let written = collection.run().await;
        let result = match written {
            Ok(package) => self.upload(action_id, &package).await,
            Err(e) => Err(e),
        };
        let _ = tokio::fs::remove_file(&output).await;
        result
    }

    async fn upload(&self, action_id: Uuid, package: &collect::CollectedPackage) -> Result<(), AgentError> {
        let mut attempt = 1;
        loop {
            if self.cancel.is_cancelled() {
                return Err(AgentError::Collection("cancelled".to_owned()));
            }
            let upload = tokio::select! {
                _ = self.cancel.cancelled() => return Err(AgentError::Collection("cancelled".to_owned())),
                upload = self.transport.upload_package(action_id, &package.path, package.size, &package.sha256) => upload,
            };
            match upload {
                Ok(receipt) => {
                    tracing::info!(%action_id, size = receipt.size, sha256 = %receipt.sha256, "package uploaded and verified");
                    return Ok(());
                }
                Err(e @ (AgentError::Unreachable { .. } | AgentError::Server { status: 500.., .. }))
                    if attempt < UPLOAD_ATTEMPTS =>
                {
                    tracing::warn!(%action_id, attempt, "upload failed, retrying: {e}");
                    tokio::select! {
                        _ = self.cancel.cancelled() => {}
                        _ = tokio::time::sleep(Duration::from_secs(2u64.pow(attempt))) => {}
                    }
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
}
