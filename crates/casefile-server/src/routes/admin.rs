//! `/api/admin/applications`: the caller's tenant's application registrations, managed
//! over the API as `casefile app ...` manages them on the server (`Casefile.Admin`).
//! casefile's own API, not MDE's; errors keep the MDE shape.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use casefile_proto::ErrorCode;
use casefile_proto::application::{
    Application, ApplicationList, ApplicationSecret, CreateApplicationRequest, SetRolesRequest,
};

use super::{Json, Path};
use crate::auth::applications::{self, ApplicationError};
use crate::auth::{Api, Caller};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Lists the tenant's applications, by name.
#[utoipa::path(
    get,
    path = "/api/admin/applications",
    tag = "Applications",
    responses((status = 200, description = "The tenant's applications", body = ApplicationList)),
    security(("bearer" = ["Casefile.Admin"]))
)]
pub async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Response> {
    caller.admit(&state, Api::ListApplications).await?;
    let value = applications::list(state.store.as_ref(), &caller.tenant_id).await.map_err(api_error)?;
    Ok(Json(ApplicationList { value }).into_response())
}

/// One application of the tenant.
#[utoipa::path(
    get,
    path = "/api/admin/applications/{client_id}",
    tag = "Applications",
    params(("client_id" = String, Path, description = "The application's client id (a GUID)")),
    responses((status = 200, description = "The application", body = Application)),
    security(("bearer" = ["Casefile.Admin"]))
)]
pub async fn get(State(state): State<AppState>, caller: Caller, Path(client_id): Path<String>) -> ApiResult<Response> {
    caller.admit(&state, Api::ListApplications).await?;
    let app = applications::get(state.store.as_ref(), &caller.tenant_id, &client_id).await.map_err(api_error)?;
    Ok(Json(app).into_response())
}

/// Registers an application; the answer holds its client secret, shown this once.
#[utoipa::path(
    post,
    path = "/api/admin/applications",
    tag = "Applications",
    request_body(content = CreateApplicationRequest, content_type = "application/json"),
    responses((status = 201, description = "The new application and its secret", body = ApplicationSecret)),
    security(("bearer" = ["Casefile.Admin"]))
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Json(request): Json<CreateApplicationRequest>,
) -> ApiResult<Response> {
    caller.admit(&state, Api::CreateApplication).await?;
    let created =
        applications::create(state.store.as_ref(), &caller.tenant_id, &request.name, &request.roles, state.now())
            .await
            .map_err(api_error)?;
    tracing::info!(client_id = %created.application.client_id, name = %created.application.name, by = %caller.requestor, "application created");
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

/// Disables an application: it gets no new tokens.
#[utoipa::path(
    post,
    path = "/api/admin/applications/{client_id}/disable",
    tag = "Applications",
    params(("client_id" = String, Path, description = "The application's client id (a GUID)")),
    responses((status = 200, description = "The application, disabled", body = Application)),
    security(("bearer" = ["Casefile.Admin"]))
)]
pub async fn disable(state: State<AppState>, caller: Caller, client_id: Path<String>) -> ApiResult<Response> {
    set_enabled(state, caller, client_id, false).await
}

/// Enables a disabled application again.
#[utoipa::path(
    post,
    path = "/api/admin/applications/{client_id}/enable",
    tag = "Applications",
    params(("client_id" = String, Path, description = "The application's client id (a GUID)")),
    responses((status = 200, description = "The application, enabled", body = Application)),
    security(("bearer" = ["Casefile.Admin"]))
)]
pub async fn enable(state: State<AppState>, caller: Caller, client_id: Path<String>) -> ApiResult<Response> {
    set_enabled(state, caller, client_id, true).await
}

async fn set_enabled(
    State(state): State<AppState>,
    caller: Caller,
    Path(client_id): Path<String>,
    enabled: bool,
) -> ApiResult<Response> {
    caller.admit(&state, Api::UpdateApplication).await?;
    let app = applications::set_enabled(state.store.as_ref(), &caller.tenant_id, &client_id, enabled, state.now())
        .await
        .map_err(api_error)?;
    tracing::info!(client_id = %app.client_id, enabled, by = %caller.requestor, "application state changed");
    Ok(Json(app).into_response())
}

/// Replaces the application's client secret; the old one stops working at once and the
/// answer holds the new one, shown this once.
#[utoipa::path(
    post,
    path = "/api/admin/applications/{client_id}/rotateSecret",
    tag = "Applications",
    params(("client_id" = String, Path, description = "The application's client id (a GUID)")),
    responses((status = 200, description = "The application and its new secret", body = ApplicationSecret)),
    security(("bearer" = ["Casefile.Admin"]))
)]
pub async fn rotate_secret(
    State(state): State<AppState>,
    caller: Caller,
    Path(client_id): Path<String>,
) -> ApiResult<Response> {
    caller.admit(&state, Api::UpdateApplication).await?;
    let rotated = applications::rotate_secret(state.store.as_ref(), &caller.tenant_id, &client_id, state.now())
        .await
        .map_err(api_error)?;
    tracing::info!(client_id = %rotated.application.client_id, by = %caller.requestor, "application secret rotated");
    Ok(Json(rotated).into_response())
}

/// Replaces the application's roles; tokens issued from now on carry them.
#[utoipa::path(
    post,
    path = "/api/admin/applications/{client_id}/roles",
    tag = "Applications",
    params(("client_id" = String, Path, description = "The application's client id (a GUID)")),
    request_body(content = SetRolesRequest, content_type = "application/json"),
    responses((status = 200, description = "The application with its new roles", body = Application)),
    security(("bearer" = ["Casefile.Admin"]))
)]
pub async fn set_roles(
    State(state): State<AppState>,
    caller: Caller,
    Path(client_id): Path<String>,
    Json(request): Json<SetRolesRequest>,
) -> ApiResult<Response> {
    caller.admit(&state, Api::UpdateApplication).await?;
    let app = applications::set_roles(state.store.as_ref(), &caller.tenant_id, &client_id, &request.roles)
        .await
        .map_err(api_error)?;
    tracing::info!(client_id = %app.client_id, roles = ?app.roles, by = %caller.requestor, "application roles changed");
    Ok(Json(app).into_response())
}

fn api_error(e: ApplicationError) -> ApiError {
    match e {
        ApplicationError::NotFound(id) => ApiError::not_found(format!("Application {id} was not found")),
        ApplicationError::Store(e) => e.into(),
        ApplicationError::Hash(cause) => ApiError::internal_from(cause),
        invalid => ApiError::new(ErrorCode::InvalidInput, invalid.to_string()),
    }
}
