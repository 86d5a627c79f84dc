//! `getPackageUri` and the signed download it points to.

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_TYPE, LOCATION, REFERRER_POLICY};
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
        .tenant(&caller.tenant_id)
        .package(id)
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
        (status = 307, description = "With `[blobs] redirect_downloads`: `Location` is a presigned URL of the package in the bucket, valid for a short time"),
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
        .tenant(&tenant)
        .package(claims.act)
        .await?
        .filter(|p| p.sha256 == claims.sha && p.deleted_at.is_none())
        .ok_or_else(|| ApiError::not_found("The package this link points to is no longer stored"))?;
    if state.config.blobs.redirect_downloads {
        return redirect(&state, &claims, &package).await;
    }
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

/// `307` to a presigned URL of the package in the bucket, valid for
/// `blobs.redirect_ttl_seconds` and never past the link's own expiry.
async fn redirect(
    state: &AppState,
    claims: &links::LinkClaims,
    package: &casefile_store::PackageRecord,
) -> ApiResult<Response> {
    let remaining = claims.exp.saturating_sub(state.now().timestamp());
    let ttl = state.config.blobs.redirect_ttl_seconds.min(u64::try_from(remaining).unwrap_or(0));
    if ttl == 0 {
        return Err(ApiError::forbidden("The download link has expired; request a new one with getPackageUri"));
    }
    let url = state
        .blobs
        .presigned_get(&package.blob_key, std::time::Duration::from_secs(ttl), PACKAGE_FILE_NAME)
        .await
        .map_err(|e| match e {
            object_store::Error::NotFound { .. } => {
                state.metrics.blob_error("presign", false);
                ApiError::not_found("The package this link points to is no longer stored")
            }
            e => {
                state.metrics.blob_error("presign", false);
                ApiError::internal_from(e)
            }
        })?
        .ok_or_else(|| ApiError::internal_from("blobs.redirect_downloads is set but packages are not in a bucket"))?;
    tracing::info!(action_id = %claims.act, tenant = %claims.tid, ttl, "package download redirected to the bucket");
    audit::note_detail(serde_json::json!({"redirect": true, "validSeconds": ttl}));
    let mut response = StatusCode::TEMPORARY_REDIRECT.into_response();
    let headers = response.headers_mut();
    let location = HeaderValue::from_str(url.as_str()).map_err(ApiError::internal_from)?;
    headers.insert(LOCATION, location);
    // The URL is a credential for the package until it expires.
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
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
