//! `getPackageUri` and the signed download it points to.

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use casefile_proto::action::{ActionStatus, ActionType};
use casefile_proto::odata::{Value, context};
use casefile_proto::{ErrorCode, PACKAGE_FILE_NAME};

use super::{BaseUrl, Intent, Path, caller_action, reply};
use crate::audit;
use crate::auth::{Api, Caller};
use crate::error::{ApiError, ApiResult};
use crate::links;
use crate::state::AppState;

/// A short-lived download link of the action's investigation package.
#[utoipa::path(
    get,
    path = "/api/machineactions/{id}/getPackageUri",
    tag = "MachineActions",
    params(("id" = uuid::Uuid, Path, description = "Id (a GUID) of a `Succeeded` CollectInvestigationPackage action")),
    responses((status = 200, description = "The link, valid for a short time, needing no bearer token", body = Value<String>)),
    security(("bearer" = ["Machine.Read.All", "Machine.ReadWrite.All"]))
)]
pub async fn package_uri(
    State(state): State<AppState>,
    caller: Caller,
    base: BaseUrl,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let access = caller.admit(&state, Api::GetPackageUri).await?;
    let action = caller_action(&state, &caller, &access, &id, Intent::Read).await?;
    audit::note_target(action.id);
    let id = action.id;
    if action.action_type != ActionType::CollectInvestigationPackage {
        return Err(ApiError::new(
            ErrorCode::InvalidInput,
            "Provided Guid is not a valid id for a CollectInvestigationPackage action",
        ));
    }
    if action.status != ActionStatus::Succeeded {
        return Err(ApiError::not_found(format!(
            "The investigation package of action {id} is not available: the action is {}",
            action.status
        )));
    }
    let package = state
        .store
        .package(&caller.tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("The investigation package of action {id} is not stored")))?;
    if let Some(deleted) = package.deleted_at {
        return Err(ApiError::not_found(format!(
            "The investigation package of action {id} was deleted on {} at the end of its retention period ({})",
            deleted.format("%Y-%m-%dT%H:%M:%SZ"),
            period(state.config.packages.retention_seconds)
        )));
    }
    let link =
        links::Link { tenant: &caller.tenant_id, action: id, sha256: &package.sha256, requestor: &caller.requestor };
    let url = links::issue(&state.keyring, &base.0, &link, state.config.link_ttl())?;
    audit::note_detail(
        serde_json::json!({"sha256": package.sha256, "validSeconds": state.config.packages.link_ttl_seconds}),
    );
    Ok(reply(StatusCode::OK, &Value { context: base.context(context::STRING), value: url }))
}

/// Streams the package. Authorised by the link's own signature, not a bearer token.
#[utoipa::path(
    get,
    path = "/safedownload/WDATP_Investigation_Package.zip",
    tag = "MachineActions",
    params(("token" = String, Query, description = "The signed token of a getPackageUri link")),
    responses(
        (status = 200, description = "The package zip; `x-casefile-sha256` carries its SHA-256", content_type = "application/zip", body = Vec<u8>),
        (status = 403, description = "The link is missing, invalid or expired", body = casefile_proto::ErrorBody),
        (status = 404, description = "The package is no longer stored", body = casefile_proto::ErrorBody),
    )
)]
pub async fn download(State(state): State<AppState>, RawQuery(query): RawQuery) -> ApiResult<Response> {
    let token = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
        .ok_or_else(|| ApiError::forbidden("The download link has no token; request one with getPackageUri"))?;
    let claims = links::verify(&state.keyring, &token)?;
    audit::note_actor("link", if claims.sub.is_empty() { "-" } else { &claims.sub }, &claims.tid);
    audit::note_target(claims.act);
    // Signed by this server, so a bad tenant here means a key from elsewhere: refused alike.
    let tenant = casefile_proto::TenantId::parse(&claims.tid)
        .ok_or_else(|| ApiError::forbidden("The download link's tenant is not a tenant id"))?;
    let package = state
        .store
        .package(&tenant, claims.act)
        .await?
        .filter(|p| p.sha256 == claims.sha && p.deleted_at.is_none())
        .ok_or_else(|| ApiError::not_found("The package this link points to is no longer stored"))?;
    let (size, stream) = state.blobs.get(&package.blob_key).await.map_err(|e| {
        state.metrics.blob_error("get", false);
        ApiError::internal_from(e)
    })?;
    tracing::info!(action_id = %claims.act, tenant = %claims.tid, size, "package download");
    let mut response = Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/zip"));
    headers.insert(CONTENT_LENGTH, HeaderValue::from(size));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{PACKAGE_FILE_NAME}\"")) {
        headers.insert(CONTENT_DISPOSITION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&package.sha256) {
        headers.insert("x-casefile-sha256", v);
    }
    Ok(response)
}

fn period(seconds: u64) -> String {
    match seconds {
        s if s >= 86_400 && s % 86_400 == 0 => format!("{} days", s / 86_400),
        s => format!("{s} seconds"),
    }
}
