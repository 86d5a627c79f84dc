//! `POST /api/machines/{id}/importInvestigationPackage` (casefile's own): a package
//! collected offline (`casefile-agent collect --output`) becomes a `Succeeded` collection
//! of that machine, with its own action, once it passed the same checks as an upload.

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use casefile_proto::action::{ActionStatus, ActionType, MachineAction, REQUEST_SOURCE_IMPORT};
use casefile_proto::odata::{Entity, context};
use casefile_store::PackageRecord;
use uuid::Uuid;

use super::{BaseUrl, Intent, Path, caller_machine, reply};
use crate::audit;
use crate::auth::{Api, Caller};
use crate::error::{ApiError, ApiResult};
use crate::ingest::{self, Destination, Refusal, Signer, custody_detail};
use crate::state::AppState;

/// Imports an offline-collected package (`Machine.CollectForensics`).
#[utoipa::path(
    post,
    path = "/api/machines/{id}/importInvestigationPackage",
    tag = "MachineActions",
    params(
        ("id" = String, Path, description = "Machine id (40 hex characters) or computer name"),
        ("comment" = Option<String>, Query, description = "Becomes the action's requestorComment"),
        ("externalId" = Option<String>, Query, description = "Becomes the action's externalId (at most 256 characters, one line)"),
        ("title" = Option<String>, Query, description = "Becomes the action's title (at most 1000 characters, one line)"),
        ("x-casefile-sha256" = String, Header, description = "Hex SHA-256 of the zip"),
    ),
    request_body(
        content = Vec<u8>,
        content_type = "application/octet-stream",
        description = "The package zip (sent as application/zip or application/octet-stream)"
    ),
    responses((status = 201, description = "The new action, `Succeeded`; the package is downloadable", body = Entity<MachineAction>)),
    security(("bearer" = ["Machine.CollectForensics"]))
)]
pub async fn import(
    State(state): State<AppState>,
    caller: Caller,
    base: BaseUrl,
    Path(machine): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let access = caller.admit(&state, Api::ImportInvestigationPackage).await?;
    let machine = caller_machine(&state, &caller, &access, &machine, Intent::Act).await?;
    let query = query.unwrap_or_default();
    let tags = super::actions::Tags::from_query(&query)?;
    let comment = url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k.eq_ignore_ascii_case("comment"))
        .map(|(_, v)| v.trim().to_owned())
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| "Imported offline collection".to_owned());
    let action_id = Uuid::new_v4();
    let claim = Destination::Import { machine_id: &machine.id };
    let received = match ingest::receive(&state, &caller.tenant_id, action_id, &headers, body, Signer::Any, claim).await
    {
        Ok(received) => received,
        Err(Refusal::Transient(e)) => return Err(e),
        Err(Refusal::Invalid { code, why, .. }) => return Err(ApiError::new(code, why)),
    };
    let now = state.now();
    let enrolled = machine.agent_public_key.as_deref() == Some(received.signed_by.as_str());
    let mut action = MachineAction::new_pending(
        ActionType::CollectInvestigationPackage,
        &machine.id,
        Some(machine.facts.computer_dns_name.clone()),
        &caller.requestor,
        comment,
        now,
    );
    tags.apply(&mut action);
    action.id = action_id;
    action.status = ActionStatus::Succeeded;
    action.request_source = REQUEST_SOURCE_IMPORT.to_owned();
    if let Some(profile) = &received.profile {
        action.profile = profile.clone();
    }
    // Who signed it is part of the package's chain of custody.
    action.troubleshoot_info = Some(format!(
        "Imported by {}; manifest signed by Ed25519 key {} ({})",
        caller.requestor,
        received.signed_by,
        if enrolled { "the machine's enrolled agent key" } else { "not the machine's enrolled agent key" }
    ));
    let package = PackageRecord {
        action_id,
        tenant_id: caller.tenant_id.clone(),
        blob_key: received.key.clone(),
        size: received.size,
        sha256: received.sha256.clone(),
        stored_at: now,
        deleted_at: None,
    };
    audit::note_target(action_id);
    audit::note_detail(custody_detail(&machine.id, &received));
    let entry = audit::entry_for_call(StatusCode::CREATED.as_u16());
    if let Err(e) = state.store.tenant(&caller.tenant_id).import_package(&action, &package, entry.as_ref()).await {
        let _ = state.blobs.delete(&received.key).await;
        return Err(e.into());
    }
    state.dispatcher.action_changed();
    tracing::info!(%action_id, machine_id = %machine.id, size = received.size, signer = %received.signed_by, "package imported");
    Ok(reply(StatusCode::CREATED, &Entity { context: base.context(context::ACTION), value: action }))
}
