//! Receiving a package, for an agent's upload and for an import: staged through its
//! announced size and SHA-256, then re-read whole by the package reader (which refuses
//! zips a casefile writer cannot make: duplicate or escaping names, links, overlapping
//! records, entries past their manifest size), every file against `manifest.json`, the
//! manifest's signature against the expected key, and the manifest's claims (machine,
//! action, collection times) against the collection it is received for. Only a package
//! that passes all of it is published to package storage.

use axum::body::Body;
use axum::http::HeaderMap;
use casefile_package::SignatureCheck;
use casefile_proto::MachineAction;
use casefile_proto::action::hresult;
use casefile_proto::agent::SHA256_HEADER;
use casefile_proto::{ErrorCode, TenantId};
use ed25519_dalek::VerifyingKey;
use uuid::Uuid;

use crate::blobs::{Blobs, IngestError, Staged};
use crate::error::ApiError;
use crate::metrics::RejectReason;
use crate::state::AppState;

/// Whose signature a package must carry.
#[derive(Debug, Clone, Copy)]
pub enum Signer<'a> {
    /// The machine's enrolled agent key.
    Enrolled(&'a VerifyingKey),
    /// Any key, reported back (offline collections sign with a key of their own).
    Any,
}

/// What a package must be the collection of.
#[derive(Debug, Clone, Copy)]
pub enum Destination<'a> {
    /// An agent's upload for `action`, running on machine `machine_id`: the manifest must
    /// name both, and its times must fall within the action's life.
    Upload { action: &'a MachineAction, machine_id: &'a str },
    /// An offline collection imported to machine `machine_id`: the manifest may name no
    /// other machine and no action (a package with an action id is an online
    /// collection's), and the tenant must not hold the same zip already.
    Import { machine_id: &'a str },
}

/// How far an agent's clock may be from the server's.
const CLOCK_SKEW: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

/// A package that passed every check and is stored under `key`.
#[derive(Debug)]
pub struct Received {
    pub key: String,
    pub size: u64,
    pub sha256: String,
    /// The manifest's signer (base64 public key).
    pub signed_by: String,
    /// SHA-256 of `manifest.json`, which lists every file's hash.
    pub manifest_sha256: String,
    /// The manifest's collection times.
    pub collected: (casefile_proto::time::Timestamp, casefile_proto::time::Timestamp),
    /// The profile the manifest says ran (none in packages older than profiles).
    pub profile: Option<String>,
}

/// Why a package was not taken.
#[derive(Debug)]
pub enum Refusal {
    /// The transfer broke or storage failed: nothing is decided about the package, the
    /// sender may retry.
    Transient(ApiError),
    /// The package itself is wrong (size, hash, content, signature); it will never pass.
    Invalid { code: ErrorCode, hresult: i32, why: String, reason: RejectReason },
}

impl Refusal {
    fn invalid(reason: RejectReason, code: ErrorCode, why: impl Into<String>) -> Self {
        Self::Invalid { code, hresult: hresult::PACKAGE_REJECTED, why: why.into(), reason }
    }
}

/// Receives the request body as a package of `tenant`'s action `action_id`, counting
/// what was stored or refused in the metrics. Its size is the `Content-Length` and its
/// SHA-256 the [`SHA256_HEADER`] of `headers`.
pub async fn receive(
    state: &AppState,
    tenant: &TenantId,
    action_id: Uuid,
    headers: &HeaderMap,
    body: Body,
    signer: Signer<'_>,
    claim: Destination<'_>,
) -> Result<Received, Refusal> {
    let (size, sha256) = announced(headers).map_err(Refusal::Transient)?;
    receive_stream(state, tenant, action_id, size, &sha256, body.into_data_stream(), signer, claim).await
}

/// The size (`Content-Length`) and SHA-256 ([`SHA256_HEADER`], returned in lower case) a
/// single upload announces for its package.
pub fn announced(headers: &HeaderMap) -> Result<(u64, String), ApiError> {
    let size = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or_else(|| ApiError::new(ErrorCode::MissingRequiredParameter, "Content-Length is required"))?;
    let sha256 = headers
        .get(SHA256_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_ascii_lowercase)
        .ok_or_else(|| {
            ApiError::new(ErrorCode::MissingRequiredParameter, format!("{SHA256_HEADER} (hex SHA-256) is required"))
        })?;
    Ok((size, sha256))
}

/// Receives `body` as a package of `size` bytes with SHA-256 `sha256` (lower-case hex) of
/// `tenant`'s action `action_id`, counting what was stored or refused in the metrics. A
/// single upload's request body, or a resumable upload's chunks read back in order.
#[allow(clippy::too_many_arguments)]
pub async fn receive_stream<E: std::fmt::Display>(
    state: &AppState,
    tenant: &TenantId,
    action_id: Uuid,
    size: u64,
    sha256: &str,
    body: impl futures::Stream<Item = Result<bytes::Bytes, E>>,
    signer: Signer<'_>,
    claim: Destination<'_>,
) -> Result<Received, Refusal> {
    let started = std::time::Instant::now();
    let kind = match claim {
        Destination::Upload { .. } => "upload",
        Destination::Import { .. } => "import",
    };
    let received = receive_checked(state, tenant, action_id, size, sha256, body, signer, claim).await;
    match &received {
        Ok(received) => state.metrics.package_stored(kind, received.size, started.elapsed()),
        Err(Refusal::Invalid { reason, .. }) => state.metrics.package_rejected(kind, *reason),
        Err(Refusal::Transient(_)) => {}
    }
    received
}

/// Receives `body` as a package of `tenant`'s action `action_id`.
#[allow(clippy::too_many_arguments)]
async fn receive_checked<E: std::fmt::Display>(
    state: &AppState,
    tenant: &TenantId,
    action_id: Uuid,
    size: u64,
    sha256: &str,
    body: impl futures::Stream<Item = Result<bytes::Bytes, E>>,
    signer: Signer<'_>,
    claim: Destination<'_>,
) -> Result<Received, Refusal> {
    let staged = state.blobs.stage(body, size, sha256, state.config.packages.max_bytes).await.map_err(|e| match e {
        IngestError::Interrupted(_) => Refusal::Transient(ApiError::bad_request(format!("The upload broke off: {e}"))),
        // A full disk refuses the package for now; the agent retries once there is room.
        IngestError::Staging(ref io) if io.kind() == std::io::ErrorKind::StorageFull => {
            state.metrics.blob_error("stage", true);
            crate::error::log_store_failure(
                &casefile_store::StoreError::Full(io.to_string()),
                "an upload could not be staged",
            );
            Refusal::Transient(ApiError::insufficient_storage())
        }
        IngestError::Storage(_) | IngestError::Staging(_) => {
            state.metrics.blob_error("stage", false);
            Refusal::Transient(ApiError::internal_from(e))
        }
        IngestError::TooLarge { .. } => {
            Refusal::invalid(RejectReason::TooLarge, ErrorCode::PayloadTooLarge, e.to_string())
        }
        IngestError::SizeMismatch { .. } => {
            Refusal::invalid(RejectReason::SizeMismatch, ErrorCode::InvalidInput, e.to_string())
        }
        IngestError::HashMismatch { .. } => {
            Refusal::invalid(RejectReason::HashMismatch, ErrorCode::InvalidInput, e.to_string())
        }
    })?;
    if let Destination::Import { .. } = claim {
        refuse_duplicate(state, tenant, &staged.sha256).await?;
    }
    let checked = check_content(&staged, signer).await?;
    check_claims(&checked, claim, state.now())?;
    let key = Blobs::package_key(tenant, action_id);
    let received = Received {
        key: key.clone(),
        size: staged.size,
        sha256: staged.sha256.clone(),
        signed_by: checked.signed_by,
        manifest_sha256: checked.manifest_sha256,
        collected: checked.collected,
        profile: checked.profile,
    };
    state.blobs.publish(staged, &key).await.map_err(|e| {
        state.metrics.blob_error("publish", false);
        Refusal::Transient(ApiError::internal_from(e))
    })?;
    Ok(received)
}

/// Most problems named in a refusal; the rest are counted.
const PROBLEMS_NAMED: usize = 5;

/// What the content check established.
struct Checked {
    signed_by: String,
    manifest_sha256: String,
    collected: (casefile_proto::time::Timestamp, casefile_proto::time::Timestamp),
    /// The manifest's claims, checked by [`check_claims`].
    action_id: Option<Uuid>,
    machine_id: Option<String>,
    profile: Option<String>,
}

/// A replayed import: the same zip already stored for this tenant.
async fn refuse_duplicate(state: &AppState, tenant: &TenantId, sha256: &str) -> Result<(), Refusal> {
    match state.store.tenant(tenant).package_by_sha256(sha256).await {
        Ok(None) => Ok(()),
        Ok(Some(existing)) => Err(Refusal::invalid(
            RejectReason::Duplicate,
            ErrorCode::InvalidInput,
            format!(
                "Duplicate import: a package with SHA-256 {sha256} is already stored for MachineAction {}",
                existing.action_id
            ),
        )),
        Err(e) => Err(Refusal::Transient(e.into())),
    }
}

/// The manifest's machine id, action id and collection times against `claim`; every
/// failed check is named.
fn check_claims(
    checked: &Checked,
    claim: Destination<'_>,
    now: casefile_proto::time::Timestamp,
) -> Result<(), Refusal> {
    let mut failed = Vec::new();
    let (started, finished) = checked.collected;
    let named = |id: &Option<String>| id.as_deref().map_or_else(|| "none".to_owned(), str::to_owned);
    match claim {
        Destination::Upload { action, machine_id } => {
            if checked.action_id != Some(action.id) {
                failed.push(format!(
                    "action id: the manifest names {}, not MachineAction {}",
                    checked.action_id.map_or_else(|| "none".to_owned(), |id| id.to_string()),
                    action.id
                ));
            }
            if checked.machine_id.as_deref() != Some(machine_id) {
                failed.push(format!(
                    "machine id: the manifest names {}, not this machine {machine_id}",
                    named(&checked.machine_id)
                ));
            }
            // A package from before profiles names none: it is a standard collection, which
            // does not answer a request for another profile.
            let ran = checked.profile.as_deref().unwrap_or(casefile_proto::profile::STANDARD);
            if ran != action.profile {
                failed.push(format!(
                    "profile: the manifest says {ran:?} ran, but MachineAction {} asked for {:?}",
                    action.id, action.profile
                ));
            }
            if started < action.creation_date_time_utc - CLOCK_SKEW {
                failed.push(format!(
                    "collection times: started {} before the action was created at {}",
                    casefile_proto::time::format(&started),
                    casefile_proto::time::format(&action.creation_date_time_utc)
                ));
            }
        }
        Destination::Import { machine_id } => {
            if let Some(action_id) = checked.action_id {
                failed.push(format!(
                    "action id: the manifest names MachineAction {action_id}, so it is an online collection's package, not an offline one"
                ));
            }
            if checked.machine_id.as_deref().is_some_and(|m| m != machine_id) {
                failed.push(format!(
                    "machine id: the manifest names {}, not the target machine {machine_id}",
                    named(&checked.machine_id)
                ));
            }
        }
    }
    if let Some(profile) = &checked.profile
        && !casefile_proto::profile::valid_name(profile)
    {
        failed.push("profile: the manifest's profile is not a profile name".to_owned());
    }
    if started > finished {
        failed.push(format!(
            "collection times: started {} after it finished {}",
            casefile_proto::time::format(&started),
            casefile_proto::time::format(&finished)
        ));
    }
    if finished > now + CLOCK_SKEW {
        failed.push(format!("collection times: finished {} in the future", casefile_proto::time::format(&finished)));
    }
    if failed.is_empty() {
        return Ok(());
    }
    Err(Refusal::invalid(
        RejectReason::Claims,
        ErrorCode::InvalidInput,
        format!("The package is not this collection's: {}", failed.join("; ")),
    ))
}

async fn check_content(staged: &Staged, signer: Signer<'_>) -> Result<Checked, Refusal> {
    let path = staged.path.clone();
    let expected = match signer {
        Signer::Enrolled(key) => Some(*key),
        Signer::Any => None,
    };
    let report = tokio::task::spawn_blocking(move || {
        let file = std::fs::File::open(&path)?;
        casefile_package::verify_with(std::io::BufReader::new(file), expected.as_ref())
    })
    .await
    .map_err(|e| Refusal::Transient(ApiError::internal_from(e)))?
    .map_err(|e| match e {
        // Our own disk failed reading the staged file: nothing is decided about the package.
        casefile_package::PackageError::Io(e) => Refusal::Transient(ApiError::internal_from(e)),
        e => Refusal::invalid(
            RejectReason::Unreadable,
            ErrorCode::InvalidInput,
            format!("The package is not a readable casefile package: {e}"),
        ),
    })?;
    if !report.is_ok() {
        let named: Vec<String> = report.problems.iter().take(PROBLEMS_NAMED).map(ToString::to_string).collect();
        let more = report.problems.len().saturating_sub(PROBLEMS_NAMED);
        let tail = if more > 0 { format!("; and {more} more") } else { String::new() };
        return Err(Refusal::invalid(
            RejectReason::Manifest,
            ErrorCode::InvalidInput,
            format!("The package does not match its manifest: {}{tail}", named.join("; ")),
        ));
    }
    match report.signature {
        SignatureCheck::Valid { public_key, expected: None | Some(true) } => Ok(Checked {
            signed_by: public_key,
            manifest_sha256: report.manifest_sha256,
            collected: (report.manifest.started_utc, report.manifest.finished_utc),
            action_id: report.manifest.action_id,
            machine_id: report.manifest.host.machine_id,
            profile: report.manifest.profile,
        }),
        other => Err(Refusal::invalid(
            RejectReason::Signature,
            ErrorCode::InvalidInput,
            format!("The package's signature does not hold: {other}"),
        )),
    }
}

/// What the chain of custody keeps of a received package.
pub fn custody_detail(machine_id: &str, received: &Received) -> serde_json::Value {
    serde_json::json!({
        "machineId": machine_id,
        "size": received.size,
        "sha256": received.sha256,
        "manifestSha256": received.manifest_sha256,
        "signedBy": received.signed_by,
        "collectionStarted": casefile_proto::time::format(&received.collected.0),
        "collectionFinished": casefile_proto::time::format(&received.collected.1),
    })
}
