//! Resumable package uploads (issue 13): the tus 1.0.0 core protocol with its `creation`
//! and `checksum` (sha256) extensions, on the agent API, one upload per action at
//! `/agent/v1/actions/{id}/upload`.
//!
//! - `OPTIONS` tells what the server speaks (no credential needed: nothing in it is private).
//! - `POST` creates the action's upload with `Upload-Length` and the package's SHA-256
//!   (`Upload-Metadata: sha256 <base64 of the hex digest>`), or returns the one that
//!   exists, so a restarted agent resumes it.
//! - `HEAD` answers the offset the next chunk must start at.
//! - `PATCH` carries one chunk at `Upload-Offset` with `Upload-Checksum: sha256 <base64>`:
//!   it is streamed through a hash into the staging directory, stored in the package blob
//!   store under a key of its own, and only then does the offset move, by a
//!   compare-and-set in the store (of two chunks racing at one offset, one lands). A chunk
//!   cut short, or whose checksum differs, leaves the offset where it was.
//!
//! The upload's state is in the store and its chunks in the blob store, so any replica,
//! or a restarted server, continues it. When the last chunk lands, the chunks are read
//! back in order into the same checks as a single upload ([`crate::ingest`]): size,
//! SHA-256, the whole package, its signature, its claims. The action then ends as it
//! would have, and the chunks are deleted.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use casefile_proto::ErrorCode;
use casefile_proto::action::{ActionStatus, MachineAction};
use casefile_proto::agent::UploadReceipt;
use casefile_store::{MachineRecord, PackageRecord, Transition, UploadChunk, UploadRecord};
use uuid::Uuid;

use super::agent::AgentIdentity;
use super::{Path, action_id};
use crate::audit;
use crate::blobs::{Blobs, IngestError};
use crate::error::{ApiError, ApiResult};
use crate::ingest::{self, Destination, Refusal, Signer};
use crate::state::AppState;

/// The protocol version spoken.
pub const TUS_VERSION: &str = "1.0.0";
/// The extensions spoken.
pub const TUS_EXTENSIONS: &str = "creation,checksum";
/// The largest chunk one `PATCH` may carry: it is staged on disk whole before it is
/// stored, so this bounds the staging room one request takes.
pub const MAX_CHUNK: u64 = 256 << 20;
/// Least size of a chunk that is not an upload's last: every chunk is a blob and a row, so
/// a package cannot be split into millions of them (at most about a thousand per package
/// below 1 GiB, one per MiB above).
pub const MIN_CHUNK: u64 = 1 << 20;
/// The media type of a chunk.
pub const CHUNK_TYPE: &str = "application/offset+octet-stream";
/// Answers that the package is stored (a casefile extension, on `HEAD` and on the last
/// `PATCH`): the hex SHA-256 of the stored package.
pub const STORED_HEADER: &str = "casefile-upload-stored";

const TUS_RESUMABLE: HeaderName = HeaderName::from_static("tus-resumable");
const UPLOAD_OFFSET: HeaderName = HeaderName::from_static("upload-offset");
const UPLOAD_LENGTH: HeaderName = HeaderName::from_static("upload-length");

/// Why a package was not stored.
#[derive(Debug)]
pub enum NotStored {
    /// Nothing is decided about the package (the transfer or storage failed): try again.
    Transient(ApiError),
    /// The action can take no package (ended, cancelling), or the package was rejected and
    /// the action failed.
    Refused(ApiError),
}

/// Receives `body`, a package of `size` bytes with SHA-256 `sha256`, for `action` of
/// `machine`, through every check of [`ingest`]: a package that passes is published, its
/// record kept and the action `Succeeded`, with the call's audit entry; one that fails
/// ends the action `Failed`. The single upload and the last chunk of a resumable one both
/// come here; for the latter (`chunks`), the chunks are removed once the package is
/// decided, before the action ends, so an ended action never shows chunks left behind.
pub(super) async fn store_package<E: std::fmt::Display>(
    state: &AppState,
    machine: &MachineRecord,
    action: &MachineAction,
    size: u64,
    sha256: &str,
    body: impl futures::Stream<Item = Result<bytes::Bytes, E>>,
    chunks: bool,
) -> Result<UploadReceipt, NotStored> {
    let id = action.id;
    let enrolled = machine.agent_public_key.as_deref().map(casefile_package::signature::parse_public_key).transpose();
    let enrolled = enrolled.map_err(|e| {
        NotStored::Transient(ApiError::internal_from(format!("machine {} has a bad agent key: {e}", machine.id)))
    })?;
    let signer = enrolled.as_ref().map_or(Signer::Any, Signer::Enrolled);
    let claim = Destination::Upload { action, machine_id: &machine.id };
    let received = match ingest::receive_stream(state, &machine.tenant_id, id, size, sha256, body, signer, claim).await
    {
        Ok(received) => received,
        // The action stays InProgress so the agent can retry; a silent agent still ends
        // in TimeOut.
        Err(Refusal::Transient(e)) => return Err(NotStored::Transient(e)),
        Err(Refusal::Invalid { code, hresult, why, .. }) => {
            tracing::warn!(action_id = %id, "package rejected: {why}");
            if chunks {
                crate::lifecycle::discard_upload(state, &machine.tenant_id, id).await;
            }
            let why = format!("The package upload was rejected: {why}");
            let change = Transition::failure(ActionStatus::Failed, state.now(), hresult, why.clone());
            let entry = audit::entry_for_call(code.http_status());
            state
                .store
                .machine_scope(machine)
                .transition(id, &change, entry.as_ref())
                .await
                .map_err(|e| NotStored::Transient(e.into()))?;
            state.dispatcher.action_changed();
            return Err(NotStored::Refused(ApiError::new(code, why)));
        }
    };
    audit::note_detail(ingest::custody_detail(&machine.id, &received));
    if chunks {
        // Before the action is recorded, so that a `Succeeded` action has its package alone
        // in storage. Should the record fail now, the agent sends the package again; a
        // second finish that finds the chunks gone answers 409 and decides nothing.
        crate::lifecycle::discard_upload(state, &machine.tenant_id, id).await;
    }
    let (key, size, sha256) = (received.key, received.size, received.sha256);
    show_progress(state, machine, action, size, size).await;
    let record = PackageRecord {
        action_id: id,
        tenant_id: machine.tenant_id.clone(),
        blob_key: key.clone(),
        size,
        sha256: sha256.clone(),
        stored_at: state.now(),
        deleted_at: None,
    };
    let entry = audit::entry_for_call(StatusCode::OK.as_u16());
    let completed =
        match state.store.machine_scope(machine).complete_with_package(&record, state.now(), entry.as_ref()).await {
            Ok(completed) => completed,
            Err(e) => {
                // Nothing records the published package: it must not stay behind. The action
                // stays InProgress, so the agent retries.
                if let Err(removal) = state.blobs.delete(&key).await {
                    tracing::error!(action_id = %id, %key, "removing an unrecorded package failed: {removal}");
                }
                return Err(NotStored::Transient(e.into()));
            }
        };
    state.dispatcher.action_changed();
    if completed.is_none() {
        // Cancelled or timed out while uploading, or stored by another attempt (a replica
        // that finished the same resumable upload): this copy must not linger.
        let _ = state.blobs.delete(&key).await;
        if let Some(stored) = stored_package(state, machine, id).await.map_err(NotStored::Transient)? {
            return Ok(UploadReceipt { action_id: id, size: stored.size, sha256: stored.sha256 });
        }
        return Err(NotStored::Refused(ApiError::new(
            ErrorCode::DisallowedOperation,
            format!("MachineAction {id} ended or was cancelled while the package was uploading"),
        )));
    }
    tracing::info!(action_id = %id, size, sha256 = %sha256, "package verified and stored");
    Ok(UploadReceipt { action_id: id, size, sha256 })
}

/// The package of the machine's action when the action `Succeeded` with one.
async fn stored_package(state: &AppState, machine: &MachineRecord, id: Uuid) -> ApiResult<Option<PackageRecord>> {
    let action = state.store.machine_scope(machine).action(id).await?;
    if !action.is_some_and(|a| a.status == ActionStatus::Succeeded) {
        return Ok(None);
    }
    Ok(state.store.tenant(&machine.tenant_id).package(id).await?.filter(|p| p.deleted_at.is_none()))
}

/// Adds `Tus-Resumable` to an answer, as every answer but `OPTIONS`' must carry it.
fn tus(mut response: Response) -> Response {
    response.headers_mut().insert(TUS_RESUMABLE, HeaderValue::from_static(TUS_VERSION));
    response
}

fn tus_error(e: ApiError) -> Response {
    tus(e.into_response())
}

/// `204` with the upload's offset (and length).
fn offset_answer(offset: u64, length: u64, stored: Option<&str>) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    headers.insert(UPLOAD_OFFSET, HeaderValue::from(offset));
    headers.insert(UPLOAD_LENGTH, HeaderValue::from(length));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(sha256) = stored.and_then(|s| HeaderValue::from_str(s).ok()) {
        headers.insert(STORED_HEADER, sha256);
    }
    tus(response)
}

/// A request in another protocol version is refused with `412` and the version spoken.
fn check_version(headers: &HeaderMap) -> ApiResult<()> {
    match headers.get(&TUS_RESUMABLE).map(HeaderValue::as_bytes) {
        Some(v) if v == TUS_VERSION.as_bytes() => Ok(()),
        Some(_) => Err(ApiError::new(
            ErrorCode::PreconditionFailed,
            format!("Tus-Resumable: this server speaks tus {TUS_VERSION} only"),
        )
        .with_header(HeaderName::from_static("tus-version"), HeaderValue::from_static(TUS_VERSION))),
        None => Err(ApiError::new(ErrorCode::MissingRequiredParameter, "Tus-Resumable is required")),
    }
}

/// A non-negative integer header: digits only (no sign, no spaces), within `u64`.
fn number(headers: &HeaderMap, name: &HeaderName) -> ApiResult<u64> {
    let raw = headers
        .get(name)
        .ok_or_else(|| ApiError::new(ErrorCode::MissingRequiredParameter, format!("{name} is required")))?;
    let text = raw.to_str().unwrap_or_default();
    if text.is_empty() || text.len() > 20 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::new(ErrorCode::InvalidInput, format!("{name} must be a non-negative integer")));
    }
    text.parse::<u64>().map_err(|_| ApiError::new(ErrorCode::InvalidInput, format!("{name} is out of range")))
}

/// The package's SHA-256 from `Upload-Metadata` (`sha256 <base64 of the hex digest>`), in
/// lower-case hex.
fn metadata_sha256(headers: &HeaderMap) -> ApiResult<String> {
    let missing = || {
        ApiError::new(
            ErrorCode::MissingRequiredParameter,
            "Upload-Metadata must name the package's SHA-256: sha256 <base64 of its 64 hex digits>",
        )
    };
    let raw = headers.get("upload-metadata").and_then(|v| v.to_str().ok()).ok_or_else(missing)?;
    let value = raw
        .split(',')
        .filter_map(|pair| {
            let mut parts = pair.trim().splitn(2, ' ');
            Some((parts.next()?, parts.next().unwrap_or("")))
        })
        .find(|(key, _)| *key == "sha256")
        .map(|(_, value)| value.trim())
        .ok_or_else(missing)?;
    let decoded = STANDARD.decode(value).ok().and_then(|b| String::from_utf8(b).ok()).unwrap_or_default();
    if decoded.len() != 64 || !decoded.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(missing());
    }
    Ok(decoded.to_ascii_lowercase())
}

/// The chunk's SHA-256 from `Upload-Checksum: sha256 <base64>`, in hex.
fn chunk_checksum(headers: &HeaderMap) -> ApiResult<String> {
    let raw = headers.get("upload-checksum").and_then(|v| v.to_str().ok()).ok_or_else(|| {
        ApiError::new(ErrorCode::MissingRequiredParameter, "Upload-Checksum (sha256 <base64>) is required")
    })?;
    let (algorithm, value) = raw.trim().split_once(' ').unwrap_or((raw, ""));
    if !algorithm.eq_ignore_ascii_case("sha256") {
        return Err(ApiError::bad_request("Upload-Checksum: the only algorithm supported is sha256"));
    }
    let digest = STANDARD.decode(value.trim()).ok().filter(|d| d.len() == 32).ok_or_else(|| {
        ApiError::new(ErrorCode::InvalidInput, "Upload-Checksum: the sha256 value must be 32 bytes in base64")
    })?;
    Ok(hex::encode(digest))
}

/// This machine's action `raw`, or `404` (another machine's is not found either).
pub(super) async fn own_action(state: &AppState, machine: &MachineRecord, raw: &str) -> ApiResult<MachineAction> {
    let id = action_id(raw)?;
    state
        .store
        .machine_scope(machine)
        .action(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("MachineAction {id} was not found for this machine")))
}

/// The action can still take its package.
pub(super) fn check_running(action: &MachineAction) -> ApiResult<()> {
    let id = action.id;
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
    Ok(())
}

/// `OPTIONS`: the protocol's version, extensions, largest upload and checksum algorithm.
pub async fn options(State(state): State<AppState>) -> Response {
    audit::unrecorded(StatusCode::NO_CONTENT.as_u16());
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    headers.insert(TUS_RESUMABLE, HeaderValue::from_static(TUS_VERSION));
    headers.insert("tus-version", HeaderValue::from_static(TUS_VERSION));
    headers.insert("tus-extension", HeaderValue::from_static(TUS_EXTENSIONS));
    headers.insert("tus-max-size", HeaderValue::from(state.config.packages.max_bytes));
    headers.insert("tus-checksum-algorithm", HeaderValue::from_static("sha256"));
    response
}

/// `POST`: creates the action's upload, or answers the one it has.
pub async fn create(
    State(state): State<AppState>,
    AgentIdentity(machine): AgentIdentity,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    created(&state, &machine, &id, &headers).await.unwrap_or_else(tus_error)
}

async fn created(state: &AppState, machine: &MachineRecord, id: &str, headers: &HeaderMap) -> ApiResult<Response> {
    check_version(headers)?;
    let action = own_action(state, machine, id).await?;
    check_running(&action)?;
    if headers.contains_key("upload-defer-length") {
        return Err(ApiError::bad_request("Upload-Defer-Length is not supported: send Upload-Length"));
    }
    let length = number(headers, &UPLOAD_LENGTH)?;
    let limit = state.config.packages.max_bytes;
    if length > limit {
        return Err(ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("Upload-Length {length} is larger than the {limit} bytes this server accepts"),
        ));
    }
    if length == 0 {
        return Err(ApiError::new(ErrorCode::InvalidInput, "Upload-Length must be at least 1"));
    }
    let sha256 = metadata_sha256(headers)?;
    let now = state.now();
    let wanted = UploadRecord {
        action_id: action.id,
        tenant_id: machine.tenant_id.clone(),
        machine_id: machine.id.clone(),
        length,
        sha256: sha256.clone(),
        offset: 0,
        created_at: now,
        updated_at: now,
    };
    let mut upload = state.store.machine_scope(machine).create_upload(&wanted).await?;
    if upload.length != length || upload.sha256 != sha256 {
        // Another package for the same action (the agent collected it again): the old
        // chunks are of no use.
        tracing::info!(action_id = %action.id, "a new package replaces an upload under way");
        crate::lifecycle::discard_upload(state, &machine.tenant_id, action.id).await;
        upload = state.store.machine_scope(machine).create_upload(&wanted).await?;
        if upload.length != length || upload.sha256 != sha256 {
            // The old upload could not be removed: never let a new package land on its chunks.
            return Err(ApiError::internal_from(format!(
                "the upload under way for MachineAction {} could not be replaced by a new package",
                action.id
            )));
        }
    }
    // A step of the upload: its end is on record, with the stored package; a refused
    // creation is recorded as `package.upload.start`.
    audit::unrecorded(StatusCode::CREATED.as_u16());
    let location = format!("{}/actions/{}/upload", casefile_proto::agent::PREFIX, action.id);
    let mut response = StatusCode::CREATED.into_response();
    let out = response.headers_mut();
    out.insert(header::LOCATION, HeaderValue::from_str(&location).map_err(ApiError::internal_from)?);
    out.insert(UPLOAD_OFFSET, HeaderValue::from(upload.offset));
    Ok(tus(response))
}

/// `HEAD`: where the next chunk starts; a stored package answers its full length with
/// [`STORED_HEADER`].
pub async fn head(
    State(state): State<AppState>,
    AgentIdentity(machine): AgentIdentity,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let answer = async {
        check_version(&headers)?;
        let action = own_action(&state, &machine, &id).await?;
        if let Some(upload) = state.store.machine_scope(&machine).upload(action.id).await? {
            return Ok(offset_answer(upload.offset, upload.length, None));
        }
        match stored_package(&state, &machine, action.id).await? {
            Some(stored) => Ok(offset_answer(stored.size, stored.size, Some(&stored.sha256))),
            None => Err(ApiError::not_found(format!("MachineAction {} has no upload under way", action.id))),
        }
    };
    answer.await.unwrap_or_else(tus_error)
}

/// `PATCH`: one chunk at the upload's offset.
pub async fn patch(
    State(state): State<AppState>,
    AgentIdentity(machine): AgentIdentity,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    patched(&state, &machine, &id, &headers, body).await.unwrap_or_else(tus_error)
}

async fn patched(
    state: &AppState,
    machine: &MachineRecord,
    id: &str,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    check_version(headers)?;
    let media = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if !media.eq_ignore_ascii_case(CHUNK_TYPE) {
        return Err(ApiError::new(ErrorCode::UnsupportedMediaType, format!("Content-Type must be {CHUNK_TYPE}")));
    }
    let offset = number(headers, &UPLOAD_OFFSET)?;
    let size = number(headers, &header::CONTENT_LENGTH)?;
    if size > MAX_CHUNK {
        return Err(ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("A chunk may hold at most {MAX_CHUNK} bytes; this one has {size}"),
        ));
    }
    let checksum = chunk_checksum(headers)?;
    let action = own_action(state, machine, id).await?;
    let Some(upload) = state.store.machine_scope(machine).upload(action.id).await? else {
        if stored_package(state, machine, action.id).await?.is_some() {
            return Err(ApiError::new(
                ErrorCode::DisallowedOperation,
                format!("MachineAction {} has its package already: the upload is finished", action.id),
            ));
        }
        return Err(ApiError::not_found(format!("MachineAction {} has no upload under way", action.id)));
    };
    check_running(&action)?;
    let conflict = |at: u64| {
        ApiError::new(ErrorCode::Conflict, format!("The upload is at offset {at}, not {offset}"))
            .with_header(UPLOAD_OFFSET, HeaderValue::from(at))
    };
    if offset != upload.offset {
        return Err(conflict(upload.offset));
    }
    let end = offset.checked_add(size).filter(|end| *end <= upload.length).ok_or_else(|| {
        ApiError::new(
            ErrorCode::InvalidInput,
            format!("A chunk of {size} bytes at {offset} ends past the upload's length of {}", upload.length),
        )
    })?;
    let least = (upload.length / 1000).clamp(1, MIN_CHUNK);
    if end < upload.length && size < least {
        return Err(ApiError::new(
            ErrorCode::InvalidInput,
            format!("A chunk that is not the last must hold at least {least} bytes; this one has {size}"),
        ));
    }
    if size > 0 {
        tracing::debug!(action_id = %action.id, offset, size, "receiving the package");
        let key = Blobs::chunk_key(&machine.tenant_id, action.id, offset);
        state
            .blobs
            .put_chunk(body.into_data_stream(), size, &checksum, &key)
            .await
            .map_err(|e| chunk_error(state, e))?;
        let chunk = UploadChunk { offset, length: size, blob_key: key.clone() };
        let landed = state.store.machine_scope(machine).append_upload_chunk(action.id, &chunk, state.now()).await;
        if !matches!(landed, Ok(true)) {
            // Another chunk landed first, or the store failed: these bytes are not the upload's.
            if let Err(e) = state.blobs.delete(&key).await {
                tracing::warn!(action_id = %action.id, %key, "removing a chunk that did not land failed: {e}");
            }
            landed?;
            let now_at = state.store.machine_scope(machine).upload(action.id).await?.map_or(0, |u| u.offset);
            return Err(conflict(now_at));
        }
    }
    if end < upload.length {
        show_progress(state, machine, &action, end, upload.length).await;
        // Each chunk is a step of the upload: its end is on record (refused chunks are too).
        audit::unrecorded(StatusCode::NO_CONTENT.as_u16());
        return Ok(offset_answer(end, upload.length, None));
    }
    finish(state, machine, &action, &upload).await
}

/// The action's `casefileProgress` while its package arrives: `uploaded` of `total` bytes
/// held (the collectors' counts as the agent last reported them). A lost update only leaves
/// the progress older.
async fn show_progress(state: &AppState, machine: &MachineRecord, action: &MachineAction, uploaded: u64, total: u64) {
    let collectors = action.progress.as_ref().map_or(0, |p| p.collectors_total);
    let progress = casefile_proto::action::Progress {
        phase: casefile_proto::action::ProgressPhase::Uploading,
        collectors_done: collectors,
        collectors_total: collectors,
        collector: None,
        package_bytes: total,
        uploaded_bytes: uploaded,
        updated_date_time_utc: Some(state.now()),
    };
    match state.store.machine_scope(machine).set_progress(action.id, &progress).await {
        Ok(_) => state.dispatcher.action_changed(),
        Err(e) => tracing::debug!(action_id = %action.id, "recording the upload's progress failed: {e}"),
    }
}

/// Why a chunk was not stored, as an answer.
fn chunk_error(state: &AppState, e: IngestError) -> ApiError {
    match e {
        IngestError::HashMismatch { .. } => {
            ApiError::new(ErrorCode::ChecksumMismatch, "The chunk does not match its Upload-Checksum: send it again")
        }
        IngestError::Interrupted(_) | IngestError::SizeMismatch { .. } | IngestError::TooLarge { .. } => {
            ApiError::bad_request(format!("The chunk was not received whole: {e}"))
        }
        IngestError::Staging(ref io) if io.kind() == std::io::ErrorKind::StorageFull => {
            state.metrics.blob_error("stage", true);
            ApiError::insufficient_storage()
        }
        IngestError::Staging(_) | IngestError::Storage(_) => {
            state.metrics.blob_error("chunk", false);
            ApiError::internal_from(e)
        }
    }
}

/// Every byte is in: the chunks, read back in order, go through the checks of a single
/// upload. Stored or rejected, the chunks go; a transient failure keeps them, and the
/// agent's next `PATCH` (empty, at the full length) tries again.
async fn finish(
    state: &AppState,
    machine: &MachineRecord,
    action: &MachineAction,
    upload: &UploadRecord,
) -> ApiResult<Response> {
    let chunks = state.store.upload_chunks(action.id).await?;
    let mut next = 0;
    for chunk in &chunks {
        if chunk.offset != next {
            return Err(ApiError::internal_from(format!(
                "upload of {} has a gap at {next} (next chunk at {})",
                action.id, chunk.offset
            )));
        }
        next += chunk.length;
    }
    if next != upload.length {
        // Another finish of the same upload got there first and discarded the chunks (or the
        // store lost some): nothing is decided about the package; the agent asks again and
        // learns from `HEAD` whether it is stored.
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!("The upload's chunks hold {next} of {} bytes: ask again", upload.length),
        )
        .with_header(UPLOAD_OFFSET, HeaderValue::from(next)));
    }
    let keys = chunks.into_iter().map(|c| c.blob_key).collect();
    tracing::info!(action_id = %action.id, length = upload.length, "upload complete; checking the package");
    let stream = state.blobs.concatenated(keys);
    match store_package(state, machine, action, upload.length, &upload.sha256, stream, true).await {
        Ok(receipt) => {
            // The call's entry was written with the stored package.
            audit::answered_as(StatusCode::NO_CONTENT.as_u16());
            Ok(offset_answer(upload.length, upload.length, Some(&receipt.sha256)))
        }
        Err(NotStored::Refused(e)) => Err(e),
        // Not the agent's fault (a chunk could not be read back, storage failed): it may
        // ask again.
        Err(NotStored::Transient(e)) if e.code.http_status() < 500 => Err(ApiError::internal_from(e.message)),
        Err(NotStored::Transient(e)) => Err(e),
    }
}
