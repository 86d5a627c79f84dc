//! `/api/admin/enrollmentTokens`: the tenant's enrollment tokens, managed over the API as
//! `casefile enroll-token` manages them on the server (`Casefile.Admin`, role
//! `Administrator`). The secret is shown once, at creation.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use casefile_proto::ErrorCode;
use casefile_proto::agent::{
    CreateEnrollmentTokenRequest, EnrollmentToken, EnrollmentTokenList, EnrollmentTokenSecret,
};

use super::{Json, Path};
use crate::audit;
use crate::auth::{Api, Caller};
use crate::enrollment::{self, EnrollmentError};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);

fn api_error(e: EnrollmentError) -> ApiError {
    match e {
        EnrollmentError::NotFound(why) => ApiError::not_found(why),
        EnrollmentError::Store(e) => e.into(),
        EnrollmentError::Invalid(why) => ApiError::new(ErrorCode::InvalidInput, why),
    }
}

/// The tenant's enrollment tokens, newest first (never their secrets).
#[utoipa::path(
    get,
    path = "/api/admin/enrollmentTokens",
    tag = "Access",
    responses((status = 200, description = "The tenant's enrollment tokens", body = EnrollmentTokenList)),
    security(("bearer" = ["Casefile.Admin"]))
)]
pub async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Response> {
    caller.admit(&state, Api::ManageAccess).await?;
    let value =
        enrollment::list_tokens(&*state.store, caller.tenant_id.as_str(), state.now()).await.map_err(api_error)?;
    Ok(Json(EnrollmentTokenList { value }).into_response())
}

/// A new enrollment token; the answer holds its secret, shown this once.
#[utoipa::path(
    post,
    path = "/api/admin/enrollmentTokens",
    tag = "Access",
    request_body(content = CreateEnrollmentTokenRequest, content_type = "application/json"),
    responses((status = 201, description = "The new token and its secret", body = EnrollmentTokenSecret)),
    security(("bearer" = ["Casefile.Admin"]))
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Json(request): Json<CreateEnrollmentTokenRequest>,
) -> ApiResult<Response> {
    caller.admit(&state, Api::ManageAccess).await?;
    let ttl = request.ttl_seconds.map(Duration::from_secs).unwrap_or(DEFAULT_TTL);
    let now = state.now();
    let (token, record) =
        enrollment::create_token(&*state.store, caller.tenant_id.as_str(), ttl, request.uses.unwrap_or(1), now)
            .await
            .map_err(api_error)?;
    audit::note_target(record.id);
    audit::note_detail(serde_json::json!({"uses": record.uses_allowed, "expiresAt": record.expires_at.to_rfc3339()}));
    let created = EnrollmentTokenSecret { token, enrollment_token: enrollment::to_wire(&record, now) };
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

/// Revokes a token: no enrollment uses it from now on.
#[utoipa::path(
    post,
    path = "/api/admin/enrollmentTokens/{id}/revoke",
    tag = "Access",
    params(("id" = uuid::Uuid, Path, description = "The token's id")),
    responses((status = 200, description = "The token, revoked", body = EnrollmentToken)),
    security(("bearer" = ["Casefile.Admin"]))
)]
pub async fn revoke(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<Response> {
    caller.admit(&state, Api::ManageAccess).await?;
    audit::note_target(&id);
    let revoked = enrollment::revoke_token(&*state.store, caller.tenant_id.as_str(), &id, state.now())
        .await
        .map_err(api_error)?;
    Ok(Json(revoked).into_response())
}
