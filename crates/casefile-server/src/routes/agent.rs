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
    ActionFailure, AgentTask, CONFIRM_PARAM, EnrollChallenge, EnrollChallengeRequest, EnrollRequest, EnrollResponse,
    HelloRequest, HelloResponse, ProgressReport, UploadReceipt,
};
use casefile_proto::time::Timestamp;
use casefile_store::{
    Claim, EnrollChallengeRecord, EnrollOutcome, HostFacts, KeyProof, MachineEnrollment, MachineRecord,
    TokenEnrollment, Transition,
};
use sha2::{Digest, Sha256};

use super::{Json, Path, action_id};
use crate::audit;
use crate::auth::caller::bearer;
use crate::enrollment;
use crate::error::{ApiError, ApiResult};
use crate::ingest;
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
        let now = state.now();
        if needs_touch(&machine, now, ip.as_deref()) {
            state.store.machine_scope(&machine).touch(now, ip.as_deref()).await?;
        }
        audit::note_actor("agent", &machine.id, &machine.tenant_id);
        Ok(Self(machine))
    }
}

/// How stale `last_seen` may be before an agent's request writes it again. Every poll used
/// to write it: at 4,000 polls a second (100,000 agents, 25 s waits) that is 4,000 writes
/// a second that tell the public API nothing new, whose `healthStatus` moves after
/// `agents.inactive_after_seconds` (days). `lastSeen` lags by at most this much.
pub(crate) const TOUCH_EVERY_SECONDS: i64 = 5;

/// Whether the request at `now` from `ip` must be recorded: `last_seen` older than
/// [`TOUCH_EVERY_SECONDS`], or a new address. (A `last_seen` ahead of the clock is kept
/// by the store, which only moves it forward: writing it again would change nothing.)
fn needs_touch(machine: &MachineRecord, now: Timestamp, ip: Option<&str>) -> bool {
    let age = now.signed_duration_since(machine.last_seen).num_seconds();
    age >= TOUCH_EVERY_SECONDS || (ip.is_some() && ip != machine.last_ip_address.as_deref())
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

/// When a claim made at `now` ends; a huge configured lease saturates instead of overflowing.
fn lease_end(now: Timestamp, seconds: u64) -> Timestamp {
    i64::try_from(seconds)
        .ok()
        .and_then(chrono::Duration::try_seconds)
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC)
}

/// Most held results a restarted agent can keep running (see [`hello`]).
const MAX_HELD: usize = 16;

fn restarted(now: Timestamp) -> Transition {
    Transition::failure(
        ActionStatus::Failed,
        now,
        hresult::ABORTED,
        "The agent restarted before finishing this collection",
    )
}

/// The enrollment token of the request, if it can still enroll; `401` naming why not.
async fn usable_token(
    state: &AppState,
    headers: &HeaderMap,
    now: Timestamp,
) -> Result<casefile_store::EnrollmentTokenRecord, ApiError> {
    let token = bearer(headers).ok_or_else(|| ApiError::unauthorized("An enrollment token is required"))?;
    let record = state
        .store
        .enrollment_token_by_hash(&secrets::hash(token))
        .await?
        .ok_or_else(|| ApiError::unauthorized("The enrollment token is not valid"))?;
    // Named by its id (never the secret) in the audit entry, whatever the outcome.
    audit::note_actor("enrollment-token", &record.id.to_string(), &record.tenant_id);
    if let Some(why) = record.unusable(now) {
        return Err(ApiError::unauthorized(format!("The enrollment token is {why}")));
    }
    Ok(record)
}

fn valid_host(host_id: &str, name: &str) -> Result<(), ApiError> {
    if host_id.is_empty() || host_id.len() > 256 || name.trim().is_empty() || name.len() > 255 {
        return Err(ApiError::new(
            ErrorCode::InvalidRequestBody,
            "host_id (at most 256 bytes) and host.computer_dns_name (at most 255) are required",
        ));
    }
    Ok(())
}

/// Issues a single-use challenge for re-enrolling an enrolled machine (issue 9 item 1):
/// the agent signs it with the machine's registered key.
pub async fn enroll_challenge(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(request): Json<EnrollChallengeRequest>,
) -> ApiResult<Json<EnrollChallenge>> {
    let now = state.now();
    let token = usable_token(&state, &headers, now).await?;
    let host_id = request.host_id.trim();
    valid_host(host_id, "-")?;
    let id = machine_id(&token.tenant_id, host_id);
    audit::note_target(&id);
    let nonce = secrets::generate("cfn_");
    let expires_at = now + chrono::Duration::from_std(enrollment::CHALLENGE_TTL).map_err(ApiError::internal_from)?;
    let challenge = EnrollChallengeRecord { machine_id: id.clone(), nonce: nonce.clone(), expires_at };
    if !state.store.tenant(&token.tenant_id).create_enroll_challenge(&challenge).await? {
        return Err(ApiError::not_found(format!(
            "Machine {id} has no registered key to prove: it is not enrolled (or its identity was reset), so it \
             enrolls without a proof"
        )));
    }
    Ok(Json(EnrollChallenge { machine_id: id, nonce, expires_in_seconds: enrollment::CHALLENGE_TTL.as_secs() }))
}

/// Enrolls an agent with an enrollment token (one use of it). A machine that does not
/// exist is created; an existing one is re-keyed only when the agent proves the machine's
/// registered key or an administrator reset its identity (issue 9 item 1).
pub async fn enroll(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Json(request): Json<EnrollRequest>,
) -> ApiResult<Response> {
    let now = state.now();
    let record = usable_token(&state, &headers, now).await?;
    let host_id = request.host_id.trim();
    valid_host(host_id, &request.host.computer_dns_name)?;
    if let Some(key) = &request.public_key {
        casefile_package::signature::parse_public_key(key)
            .map_err(|e| ApiError::new(ErrorCode::InvalidRequestBody, format!("public_key: {e}")))?;
    }
    if request.proof.as_ref().is_some_and(|p| p.nonce.len() > 128 || p.signature.len() > 128) {
        return Err(ApiError::new(ErrorCode::InvalidRequestBody, "proof.nonce and proof.signature are too long"));
    }
    let id = machine_id(&record.tenant_id, host_id);
    audit::note_target(&id);
    let mut detail = serde_json::json!({
        "enrollmentToken": record.id,
        "computerDnsName": request.host.computer_dns_name,
        "agentKey": request.public_key,
    });
    audit::note_detail(detail.clone());
    let before = match state.store.tenant(&record.tenant_id).machine(&id).await {
        Ok(found) => found.filter(|m| m.id == id),
        Err(casefile_store::StoreError::AmbiguousName { .. }) => None,
        Err(e) => return Err(e.into()),
    };
    let proof = match (&request.proof, before.as_ref().and_then(|m| m.agent_public_key.clone())) {
        (Some(proof), Some(key)) => {
            let new_key = request.public_key.as_deref();
            if !enrollment::proof_holds(&key, &proof.signature, &proof.nonce, &id, new_key) {
                tracing::warn!(machine_id = %id, "re-enrollment refused: the proof does not verify with the registered key");
                return Err(ApiError::unauthorized(
                    "The proof does not verify with the machine's registered key: enrollment refused",
                ));
            }
            Some(KeyProof { key, nonce: proof.nonce.clone() })
        }
        _ => None,
    };
    let credential = secrets::generate(secrets::AGENT_PREFIX);
    detail["requested"] = match (&before, &proof) {
        (None, _) => "new machine",
        (Some(_), Some(_)) => "re-key with proof of the registered key",
        (Some(_), None) => "fresh identity after a reset",
    }
    .into();
    if let Some(old) = before.as_ref().filter(|b| b.facts.computer_dns_name != request.host.computer_dns_name) {
        detail["previousComputerDnsName"] = old.facts.computer_dns_name.clone().into();
    }
    audit::note_detail(detail);
    // Refusals stay on the token's record; the enrollment itself is the new agent's.
    let entry = audit::entry_for_call(StatusCode::CREATED.as_u16()).map(|mut e| {
        (e.actor_kind, e.actor) = ("agent".to_owned(), id.clone());
        e
    });
    let enrollment = TokenEnrollment {
        token_hash: record.token_hash.clone(),
        machine: MachineEnrollment {
            id: id.clone(),
            tenant_id: record.tenant_id.clone(),
            facts: facts(request.host),
            credential_hash: secrets::hash(&credential),
            agent_public_key: request.public_key,
            last_ip_address: Some(peer.ip().to_string()),
            at: now,
        },
        proof,
        audit: entry,
    };
    let (machine, how) = match state.store.enroll_with_token(&enrollment).await? {
        EnrollOutcome::Created(m) => (m, "created"),
        EnrollOutcome::Rekeyed(m) => (m, "re-keyed with proof of the registered key"),
        EnrollOutcome::Recreated(m) => (m, "created afresh after an identity reset"),
        EnrollOutcome::TokenUnusable => {
            return Err(ApiError::unauthorized("The enrollment token is not valid, expired, revoked or used up"));
        }
        EnrollOutcome::ChallengeInvalid => {
            return Err(ApiError::unauthorized(
                "The re-enrollment challenge is unknown, expired or already used: ask for a new one",
            ));
        }
        EnrollOutcome::MachineEnrolled => {
            tracing::warn!(machine_id = %id, token = %record.id, "enrollment over an enrolled machine refused");
            return Err(ApiError::forbidden(format!(
                "Machine {id} is already enrolled: re-enrolling it needs proof of its registered key (the agent \
                 signs a challenge from /agent/v1/enroll/challenge), or an administrator resets its identity \
                 first (casefile machine reset-identity {id})"
            )));
        }
    };
    crate::rbac::regroup(&state, &machine).await?;
    audit::note_actor("agent", &machine.id, &machine.tenant_id);
    if before.is_some() {
        // A host that enrolls again is a fresh agent: it runs none of the old collections.
        state.store.machine_scope(&machine).fail_in_progress(&restarted(now)).await?;
        state.dispatcher.action_changed();
    }
    tracing::info!(machine_id = %machine.id, name = %machine.facts.computer_dns_name, token = %record.id, "agent enrolled: {how}");
    Ok((
        StatusCode::CREATED,
        Json(EnrollResponse { machine_id: machine.id, tenant_id: machine.tenant_id.into(), credential }),
    )
        .into_response())
}

pub async fn hello(
    State(state): State<AppState>,
    AgentIdentity(machine): AgentIdentity,
    Json(request): Json<HelloRequest>,
) -> ApiResult<Json<HelloResponse>> {
    let now = state.now();
    valid_host("-", &request.host.computer_dns_name)?;
    let renamed = (machine.facts.computer_dns_name != request.host.computer_dns_name)
        .then(|| serde_json::json!({"from": machine.facts.computer_dns_name, "to": request.host.computer_dns_name}));
    // Names are reported facts, not identities (issue 9 item 2): a change is on record,
    // committed with the change itself.
    let rename = renamed.as_ref().map(|renamed| {
        let mut entry = audit::system_entry(
            &state,
            Some(machine.tenant_id.as_str()),
            "machine.rename",
            &machine.id,
            renamed.clone(),
        );
        (entry.actor_kind, entry.actor) = ("agent".to_owned(), machine.id.clone());
        entry
    });
    state.store.machine_scope(&machine).update_host_facts(&facts(request.host), now, rename.as_ref()).await?;
    if let Some(renamed) = renamed {
        tracing::info!(machine_id = %machine.id, "machine reports a new name: {renamed}");
        audit::note_detail(serde_json::json!({ "renamed": renamed }));
    }
    // A renamed host may belong to another device group now.
    if let Some(updated) = state.store.tenant(&machine.tenant_id).machine(&machine.id).await? {
        crate::rbac::regroup(&state, &updated).await?;
    }
    // Results the agent kept across its restart are still coming (one live action per
    // machine: a few ids at most are meaningful).
    let holding = &request.holding[..request.holding.len().min(MAX_HELD)];
    let abandoned_actions =
        state.store.machine_scope(&machine).fail_in_progress_except(holding, &restarted(now)).await?;
    state.dispatcher.action_changed();
    Ok(Json(HelloResponse {
        machine_id: machine.id,
        abandoned_actions,
        poll_wait_seconds: state.config.agents.poll_wait_seconds,
        silent_timeout_seconds: state.config.agents.silent_timeout_seconds,
    }))
}

/// Long-poll: answers at once with a cancellation to carry out or the oldest pending
/// action (now `InProgress`), or waits until one arrives or the wait ends (`204`).
pub async fn next_task(
    State(state): State<AppState>,
    AgentIdentity(machine): AgentIdentity,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let (requested, confirms) = {
        let query = query.unwrap_or_default();
        let param = |name: &str| url::form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v);
        let requested =
            param("wait").and_then(|v| v.parse::<u64>().ok()).unwrap_or(state.config.agents.poll_wait_seconds);
        // Agents that confirm receipt say so; older ones get claims that count as accepted at
        // once (offered again, they would run the collection twice).
        (requested, param(CONFIRM_PARAM).is_some_and(|v| v == "1"))
    };
    let deadline =
        tokio::time::Instant::now() + Duration::from_secs(requested.min(state.config.agents.poll_wait_seconds));
    let wake = state.dispatcher.subscribe(&machine.id);
    loop {
        if state.dispatcher.is_closing() {
            return Ok(closing_answer());
        }
        // Boxed, and gone before the wait: a future is as large as its largest state for as
        // long as it lives, and a parked poll lives for minutes (`bench/agents`).
        let lease_wake = match Box::pin(look_for_work(&state, &machine, confirms)).await? {
            Work::Answer(response) => return Ok(response),
            Work::LookAgain => continue,
            Work::None { lease_wake } => lease_wake,
        };
        let wake_at = lease_wake.map_or(deadline, |at| at.min(deadline));
        let _parked = state.dispatcher.park();
        tracing::debug!(machine_id = %machine.id, "poll parked");
        tokio::select! {
            woken = tokio::time::timeout_at(wake_at, wake.notified()) => {
                if woken.is_err() && wake_at == deadline {
                    return Ok(StatusCode::NO_CONTENT.into_response());
                }
            }
            // The next loop turn answers: the server is stopping.
            () = state.dispatcher.closed() => {}
        }
    }
}

/// What one look at the store found for a poll.
enum Work {
    /// A cancellation or an action to send.
    Answer(Response),
    /// An action the agent cannot run was failed: look again.
    LookAgain,
    /// Nothing; an unconfirmed claim's lease, if any, ends at `lease_wake`.
    None { lease_wake: Option<tokio::time::Instant> },
}

async fn look_for_work(state: &AppState, machine: &MachineRecord, confirms: bool) -> ApiResult<Work> {
    if let Some(&action_id) = state.store.machine_scope(machine).cancel_requests().await?.first() {
        return Ok(Work::Answer(Json(AgentTask::Cancel { action_id }).into_response()));
    }
    let now = state.now();
    let lease = confirms.then(|| lease_end(now, state.config.agents.claim_lease_seconds));
    let dispatched = |claim: &Claim| {
        let mut entry = audit::system_entry(
            state,
            Some(machine.tenant_id.as_str()),
            "action.dispatch",
            &claim.action.id.to_string(),
            serde_json::json!({"machineId": machine.id, "offer": claim.offers}),
        );
        (entry.actor_kind, entry.actor) = ("agent".to_owned(), machine.id.clone());
        entry
    };
    // The claim and its entry commit together: no action leaves for an agent unrecorded.
    let claimed = state.store.machine_scope(machine).claim_leased(now, lease, Some(&dispatched)).await?;
    if let Some(Claim { action, offers }) = claimed {
        if offers > 1 {
            // The earlier answer never reached the agent (it did not confirm).
            tracing::warn!(action_id = %action.id, machine_id = %machine.id, offers, "unconfirmed action offered again");
        } else {
            tracing::info!(action_id = %action.id, machine_id = %machine.id, "action dispatched");
            state.metrics.dispatched(&action, now);
        }
        state.dispatcher.action_changed();
        let profile = match action.action_type {
            ActionType::CollectInvestigationPackage => crate::profiles::definition(state, &action.profile)?,
            _ => None,
        };
        let task = match (action.action_type, profile) {
            (ActionType::CollectInvestigationPackage, Some(profile)) => AgentTask::CollectInvestigationPackage {
                action_id: action.id,
                requestor: action.requestor,
                comment: action.requestor_comment,
                profile: Some(profile),
            },
            (other, _) => {
                // Only collections are ever created, with a profile that existed then;
                // anything else is refused honestly.
                let why = if other == ActionType::CollectInvestigationPackage {
                    format!("the collection profile '{}' is no longer defined on the server", action.profile)
                } else {
                    format!("casefile agents do not support {other} actions")
                };
                let change = Transition::failure(ActionStatus::Failed, state.now(), hresult::COLLECTION_FAILED, why);
                state.store.machine_scope(machine).transition(action.id, &change, None).await?;
                state.dispatcher.action_changed();
                return Ok(Work::LookAgain);
            }
        };
        return Ok(Work::Answer(Json(task).into_response()));
    }
    // An unconfirmed claim becomes available again when its lease ends: wake then.
    let lease_wake = state.store.machine_scope(machine).next_lease_end().await?.map(|end| {
        let left = (end - state.now()).to_std().unwrap_or_default();
        tokio::time::Instant::now() + left
    });
    Ok(Work::None { lease_wake })
}

/// A stopping server's answer to a poll: "nothing yet, poll again", on a connection it
/// closes, so that the agent's next poll reaches the restarted server.
fn closing_answer() -> Response {
    (StatusCode::NO_CONTENT, [(axum::http::header::CONNECTION, "close")]).into_response()
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
    let action = super::uploads::own_action(&state, &machine, &id).await?;
    super::uploads::check_running(&action)?;
    let id = action.id;
    let (size, sha256) = ingest::announced(&headers)?;
    tracing::debug!(action_id = %id, "receiving the package");
    let receipt =
        super::uploads::store_package(&state, &machine, &action, size, &sha256, body.into_data_stream(), false)
            .await
            .map_err(|e| match e {
            super::uploads::NotStored::Transient(e) | super::uploads::NotStored::Refused(e) => e,
        })?;
    Ok(Json(receipt))
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
    let entry = audit::entry_for_call(StatusCode::NO_CONTENT.as_u16());
    if state.store.machine_scope(&machine).confirm_cancel(id, state.now(), entry.as_ref()).await?.is_some() {
        state.dispatcher.action_changed();
        crate::lifecycle::discard_upload(&state, &machine.tenant_id, id).await;
        return Ok(StatusCode::NO_CONTENT);
    }
    let change =
        Transition::failure(ActionStatus::Failed, state.now(), failure.error_h_result, failure.troubleshoot_info);
    match state.store.machine_scope(&machine).transition(id, &change, entry.as_ref()).await? {
        Some(_) => {
            state.dispatcher.action_changed();
            crate::lifecycle::discard_upload(&state, &machine.tenant_id, id).await;
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
    let entry = audit::entry_for_call(StatusCode::NO_CONTENT.as_u16());
    match state.store.machine_scope(&machine).confirm_cancel(id, state.now(), entry.as_ref()).await? {
        Some(_) => {
            state.dispatcher.action_changed();
            crate::lifecycle::discard_upload(&state, &machine.tenant_id, id).await;
            tracing::info!(action_id = %id, machine_id = %machine.id, "collection stopped by its agent: cancelled");
            Ok(StatusCode::NO_CONTENT)
        }
        None => Err(ApiError::new(
            ErrorCode::DisallowedOperation,
            format!("MachineAction {id} has no cancellation pending on this machine"),
        )),
    }
}

/// The agent received the action handed to it by a poll: its claim is confirmed and is
/// not offered again.
pub async fn accept(
    State(state): State<AppState>,
    AgentIdentity(machine): AgentIdentity,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = action_id(&id)?;
    let entry = audit::entry_for_call(StatusCode::NO_CONTENT.as_u16());
    if state.store.machine_scope(&machine).accept_action(id, state.now(), entry.as_ref()).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::new(ErrorCode::DisallowedOperation, format!("MachineAction {id} is not running on this machine")))
    }
}

/// The agent's progress on a running collection: kept as the action's `casefileProgress`,
/// stamped with the server's time.
pub async fn report_progress(
    State(state): State<AppState>,
    AgentIdentity(machine): AgentIdentity,
    Path(id): Path<String>,
    Json(mut progress): Json<ProgressReport>,
) -> ApiResult<StatusCode> {
    let id = action_id(&id)?;
    let inconsistent = progress.collectors_done > progress.collectors_total
        || progress.uploaded_bytes > progress.package_bytes
        || progress.collector.as_ref().is_some_and(|c| c.len() > 64);
    if inconsistent {
        return Err(ApiError::new(
            ErrorCode::InvalidRequestBody,
            "Request body is incorrect: collectorsDone over collectorsTotal, uploadedBytes over packageBytes, \
             or a collector name over 64 bytes",
        ));
    }
    progress.updated_date_time_utc = Some(state.now());
    if state.store.machine_scope(&machine).set_progress(id, &progress).await? {
        // Watchers of the action (a console page, a waiting client) see it move.
        state.dispatcher.action_changed();
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::new(ErrorCode::DisallowedOperation, format!("MachineAction {id} is not running on this machine")))
    }
}
