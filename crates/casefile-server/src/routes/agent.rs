//! The agent API: enrollment, start-up, long-poll for work, package upload, failures.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequestParts, RawQuery, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use casefile_proto::ErrorCode;
use casefile_proto::action::{ActionStatus, ActionType, hresult};
use casefile_proto::agent::{
    ActionFailure, AgentTask, EnrollRequest, EnrollResponse, HelloRequest, HelloResponse, UploadReceipt,
};
use casefile_proto::time::Timestamp;
use casefile_store::{HostFacts, MachineEnrollment, MachineRecord, PackageRecord, Transition};
use sha2::{Digest, Sha256};

use super::{Json, Path, action_id};
use crate::audit;
use crate::auth::caller::bearer;
use crate::error::{ApiError, ApiResult};
use crate::ingest::{self, Claim, Refusal, Signer};
use crate::secrets;
use crate::state::AppState;

/// An enrolled agent, authenticated by its credential.
pub struct AgentIdentity(pub MachineRecord);

impl FromRequestParts<AppState> for AgentIdentity {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let credential =
            bearer(&parts.headers).ok_or_else(|| ApiError::unauthorized("The agent credential is missing"))?;
        let machine = state
            .store
            .machine_by_credential(&secrets::hash(credential))
            .await?
            .ok_or_else(|| ApiError::unauthorized("The agent credential is not valid; enroll the agent again"))?;
        let ip = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_string());
        state.store.touch_machine(&machine.id, state.now(), ip.as_deref()).await?;
        audit::note_actor("agent", &machine.id, &machine.tenant_id);
        Ok(Self(machine))
    }
}

/// Machine ids are derived, not chosen: the same host in the same tenant always gets
/// the same 40-hex id, so re-enrolling keeps its history.
fn machine_id(tenant: &str, host_id: &str) -> String {
    let digest = Sha256::digest(format!("casefile-machine-id\0{tenant}\0{host_id}"));
    hex::encode(&digest[..20])
}

fn facts(host: casefile_proto::agent::HostInfo) -> HostFacts {
    HostFacts {
        computer_dns_name: host.computer_dns_name,
        os_platform: host.os_platform,
        os_version: host.os_version,
        os_architecture: host.os_architecture,
        os_build: host.os_build,
        agent_version: Some(host.agent_version),
        ip_addresses: host.ip_addresses,
    }
}

fn restarted(now: Timestamp) -> Transition {
    Transition::failure(
        ActionStatus::Failed,
        now,
        hresult::ABORTED,
        "The agent restarted before finishing this collection",
    )
}

pub async fn enroll(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Json(request): Json<EnrollRequest>,
) -> ApiResult<Response> {
    let token = bearer(&headers).ok_or_else(|| ApiError::unauthorized("An enrollment token is required"))?;
    let now = state.now();
    let record = state
        .store
        .enrollment_token_by_hash(&secrets::hash(token))
        .await?
        .filter(|t| t.revoked_at.is_none() && t.expires_at > now)
        .ok_or_else(|| ApiError::unauthorized("The enrollment token is not valid, expired or revoked"))?;
    let host_id = request.host_id.trim();
    if host_id.is_empty() || host_id.len() > 256 || request.host.computer_dns_name.trim().is_empty() {
        return Err(ApiError::new(ErrorCode::InvalidRequestBody, "host_id and host.computer_dns_name are required"));
    }
    let id = machine_id(&record.tenant_id, host_id);
    let credential = secrets::generate(secrets::AGENT_PREFIX);
    let machine = state
        .store
        .enroll_machine(&MachineEnrollment {
            id: id.clone(),
            tenant_id: record.tenant_id.clone(),
            facts: facts(request.host),
            credential_hash: secrets::hash(&credential),
            agent_public_key: request.public_key,
            last_ip_address: Some(peer.ip().to_string()),
            at: now,
        })
        .await?;
    crate::rbac::regroup(&state, &machine).await?;
    audit::note_actor("agent", &machine.id, &machine.tenant_id);
    audit::note_target(&machine.id);
    audit::note_detail(
        serde_json::json!({"computerDnsName": machine.facts.computer_dns_name, "agentKey": machine.agent_public_key}),
    );
    // A host that enrolls again is a fresh agent: it runs none of the old collections.
    state.store.fail_in_progress(&machine.id, &restarted(now)).await?;
    state.dispatcher.action_changed();
    tracing::info!(machine_id = %machine.id, name = %machine.facts.computer_dns_name, "agent enrolled");
    Ok((StatusCode::CREATED, Json(EnrollResponse { machine_id: machine.id, tenant_id: machine.tenant_id, credential }))
        .into_response())
}

pub async fn hello(
    State(state): State<AppState>,
    AgentIdentity(machine): AgentIdentity,
    Json(request): Json<HelloRequest>,
) -> ApiResult<Json<HelloResponse>> {
    let now = state.now();
    state.store.update_host_facts(&machine.id, &facts(request.host), now).await?;
    // A renamed host may belong to another device group now.
    if let Some(updated) = state.store.machine(&machine.tenant_id, &machine.id).await? {
        crate::rbac::regroup(&state, &updated).await?;
    }
    let abandoned_actions = state.store.fail_in_progress(&machine.id, &restarted(now)).await?;
    state.dispatcher.action_changed();
    Ok(Json(HelloResponse {
        machine_id: machine.id,
        abandoned_actions,
        poll_wait_seconds: state.config.agents.poll_wait_seconds,
    }))
}

/// Long-poll: answers at once with a cancellation to carry out or the oldest pending
/// action (now `InProgress`), or waits until one arrives or the wait ends (`204`).
pub async fn next_task(
    State(state): State<AppState>,
    AgentIdentity(machine): AgentIdentity,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let requested = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "wait")
        .and_then(|(_, v)| v.parse::<u64>().ok())
        .unwrap_or(state.config.agents.poll_wait_seconds);
    let deadline =
        tokio::time::Instant::now() + Duration::from_secs(requested.min(state.config.agents.poll_wait_seconds));
    let wake = state.dispatcher.subscribe(&machine.id);
    loop {
        if let Some(&action_id) = state.store.cancel_requests(&machine.id).await?.first() {
            return Ok(Json(AgentTask::Cancel { action_id }).into_response());
        }
        if let Some(action) = state.store.claim_next_action(&machine.id, state.now()).await? {
            tracing::info!(action_id = %action.id, machine_id = %machine.id, "action dispatched");
            let mut dispatched = audit::system_entry(
                &state,
                Some(&machine.tenant_id),
                "action.dispatch",
                &action.id.to_string(),
                serde_json::json!({"machineId": machine.id}),
            );
            (dispatched.actor_kind, dispatched.actor) = ("agent".to_owned(), machine.id.clone());
            audit::record(&state, dispatched).await;
            state.dispatcher.action_changed();
            let task = match action.action_type {
                ActionType::CollectInvestigationPackage => AgentTask::CollectInvestigationPackage {
                    action_id: action.id,
                    requestor: action.requestor,
                    comment: action.requestor_comment,
                },
                other => {
                    // Only collections are ever created; anything else is refused honestly.
                    let change = Transition::failure(
                        ActionStatus::Failed,
                        state.now(),
                        hresult::COLLECTION_FAILED,
                        format!("casefile agents do not support {other} actions"),
                    );
                    state.store.transition(action.id, Some(&machine.id), &change).await?;
                    state.dispatcher.action_changed();
                    continue;
                }
            };
            return Ok(Json(task).into_response());
        }
        let _parked = state.dispatcher.park();
        if tokio::time::timeout_at(deadline, wake.notified()).await.is_err() {
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
    }
}

/// Receives a package: streamed into storage through a hash; kept and the action marked
/// `Succeeded` only when size and SHA-256 match what the agent announced.
pub async fn upload_package(
    State(state): State<AppState>,
    AgentIdentity(machine): AgentIdentity,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<UploadReceipt>> {
    let id = action_id(&id)?;
    let action = state
        .store
        .action(&machine.tenant_id, id)
        .await?
        .filter(|a| a.machine_id == machine.id)
        .ok_or_else(|| ApiError::not_found(format!("MachineAction {id} was not found for this machine")))?;
    if action.status != ActionStatus::InProgress {
        return Err(ApiError::new(
            ErrorCode::DisallowedOperation,
            format!("MachineAction {id} is {}, not InProgress: the package is not accepted", action.status),
        ));
    }
    if action.cancellation_requestor.is_some() {
        return Err(ApiError::new(
            ErrorCode::DisallowedOperation,
            format!("MachineAction {id} is being cancelled: the package is not accepted"),
        ));
    }
    let enrolled = machine.agent_public_key.as_deref().map(casefile_package::signature::parse_public_key).transpose();
    let enrolled =
        enrolled.map_err(|e| ApiError::internal_from(format!("machine {} has a bad agent key: {e}", machine.id)))?;
    let signer = enrolled.as_ref().map_or(Signer::Any, Signer::Enrolled);
    let claim = Claim::Upload { action: &action, machine_id: &machine.id };
    let received = match ingest::receive(&state, &machine.tenant_id, id, &headers, body, signer, claim).await {
        Ok(received) => received,
        // The action stays InProgress so the agent can retry; a silent agent still ends
        // in TimeOut.
        Err(Refusal::Transient(e)) => return Err(e),
        Err(Refusal::Invalid { code, hresult, why }) => {
            tracing::warn!(action_id = %id, "package rejected: {why}");
            let why = format!("The package upload was rejected: {why}");
            let change = Transition::failure(ActionStatus::Failed, state.now(), hresult, why.clone());
            state.store.transition(id, Some(&machine.id), &change).await?;
            state.dispatcher.action_changed();
            return Err(ApiError::new(code, why));
        }
    };
    audit::note_detail(ingest::custody_detail(&machine.id, &received));
    let (key, size, sha256) = (received.key, received.size, received.sha256);
    let record = PackageRecord {
        action_id: id,
        tenant_id: machine.tenant_id.clone(),
        blob_key: key.clone(),
        size,
        sha256: sha256.clone(),
        stored_at: state.now(),
        deleted_at: None,
    };
    let completed = state.store.complete_with_package(&machine.id, &record, state.now()).await?;
    state.dispatcher.action_changed();
    if completed.is_none() {
        // Cancelled or timed out while uploading: the package must not linger.
        let _ = state.blobs.delete(&key).await;
        return Err(ApiError::new(
            ErrorCode::DisallowedOperation,
            format!("MachineAction {id} ended or was cancelled while the package was uploading"),
        ));
    }
    tracing::info!(action_id = %id, size, sha256 = %sha256, "package verified and stored");
    Ok(Json(UploadReceipt { action_id: id, size, sha256 }))
}

pub async fn report_failure(
    State(state): State<AppState>,
    AgentIdentity(machine): AgentIdentity,
    Path(id): Path<String>,
    Json(failure): Json<ActionFailure>,
) -> ApiResult<StatusCode> {
    let id = action_id(&id)?;
    // A collection that ends while its cancellation is pending has stopped: that is the
    // confirmation, whatever the agent saw (e.g. its upload refused for the cancellation).
    if state.store.confirm_cancel(&machine.id, id, state.now()).await?.is_some() {
        state.dispatcher.action_changed();
        return Ok(StatusCode::NO_CONTENT);
    }
    let change =
        Transition::failure(ActionStatus::Failed, state.now(), failure.error_h_result, failure.troubleshoot_info);
    match state.store.transition(id, Some(&machine.id), &change).await? {
        Some(_) => {
            state.dispatcher.action_changed();
            Ok(StatusCode::NO_CONTENT)
        }
        None => Err(ApiError::new(
            ErrorCode::DisallowedOperation,
            format!("MachineAction {id} is not running on this machine"),
        )),
    }
}

/// The agent stopped a collection it was told to cancel; the action ends `Cancelled`.
pub async fn confirm_cancel(
    State(state): State<AppState>,
    AgentIdentity(machine): AgentIdentity,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = action_id(&id)?;
    match state.store.confirm_cancel(&machine.id, id, state.now()).await? {
        Some(_) => {
            state.dispatcher.action_changed();
            tracing::info!(action_id = %id, machine_id = %machine.id, "collection stopped by its agent: cancelled");
            Ok(StatusCode::NO_CONTENT)
        }
        None => Err(ApiError::new(
            ErrorCode::DisallowedOperation,
            format!("MachineAction {id} has no cancellation pending on this machine"),
        )),
    }
}
