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
use casefile_proto::rbac::{DeviceGroup, DeviceGroupList, Role, RoleList, UngroupedAccess};

use super::{Json, Path, Query};
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
    path = "/api/admin/applications/{id}",
    tag = "Applications",
    params(("id" = String, Path, description = "The application's client id (a GUID)")),
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
    path = "/api/admin/applications/{id}/disable",
    tag = "Applications",
    params(("id" = String, Path, description = "The application's client id (a GUID)")),
    responses((status = 200, description = "The application, disabled", body = Application)),
    security(("bearer" = ["Casefile.Admin"]))
)]
pub async fn disable(state: State<AppState>, caller: Caller, client_id: Path<String>) -> ApiResult<Response> {
    set_enabled(state, caller, client_id, false).await
}

/// Enables a disabled application again.
#[utoipa::path(
    post,
    path = "/api/admin/applications/{id}/enable",
    tag = "Applications",
    params(("id" = String, Path, description = "The application's client id (a GUID)")),
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
    path = "/api/admin/applications/{id}/rotateSecret",
    tag = "Applications",
    params(("id" = String, Path, description = "The application's client id (a GUID)")),
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
    path = "/api/admin/applications/{id}/roles",
    tag = "Applications",
    params(("id" = String, Path, description = "The application's client id (a GUID)")),
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

/// Filters of the audit trail (all optional; every one narrows).
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Entries at or after this time (RFC 3339).
    since: Option<String>,
    /// Entries before this time (RFC 3339).
    until: Option<String>,
    /// An event name, e.g. `collect`, `package.download`, `token.issue`, `access.refused`.
    event: Option<String>,
    /// Who acted (an application's name or id, a user's UPN, a machine id).
    actor: Option<String>,
    /// What it concerned (an action id, a machine id, an application id).
    target: Option<String>,
    /// Continue after this sequence number (`nextAfter` of the previous page).
    after: Option<i64>,
    /// Page size, at most 10,000 (default 1,000).
    top: Option<u32>,
}

/// The tenant's audit trail, oldest first.
#[utoipa::path(
    get,
    path = "/api/admin/audit",
    tag = "Applications",
    params(AuditQuery),
    responses((status = 200, description = "A page of the audit trail", body = casefile_proto::audit::AuditList)),
    security(("bearer" = ["Casefile.Admin"]))
)]
pub async fn audit(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<AuditQuery>,
) -> ApiResult<Response> {
    caller.admit(&state, Api::ReadAudit).await?;
    let time = |name: &str, raw: &Option<String>| {
        raw.as_deref()
            .map(|t| {
                chrono::DateTime::parse_from_rfc3339(t).map(|t| t.with_timezone(&chrono::Utc)).map_err(|e| {
                    ApiError::new(
                        ErrorCode::InvalidInput,
                        format!("Invalid input {name}: '{t}' is not an RFC 3339 time: {e}"),
                    )
                })
            })
            .transpose()
    };
    let top = query.top.unwrap_or(1000).min(10_000);
    let filter = casefile_store::AuditFilter {
        tenant_id: Some(caller.tenant_id.to_string()),
        since: time("since", &query.since)?,
        until: time("until", &query.until)?,
        event: query.event,
        actor: query.actor,
        target: query.target,
        after_seq: query.after,
        limit: top.saturating_add(1),
    };
    let mut records = state.store.audit(&filter).await?;
    let more = records.len() > top as usize;
    records.truncate(top as usize);
    let next_after = if more { records.last().map(|r| r.seq) } else { None };
    let value = records.into_iter().map(crate::audit::to_wire).collect();
    Ok(Json(casefile_proto::audit::AuditList { value, next_after }).into_response())
}

/// The tenant's roles for delegated users.
#[utoipa::path(
    get,
    path = "/api/admin/roles",
    tag = "Access",
    responses((status = 200, description = "The tenant's roles", body = RoleList)),
    security(("bearer" = ["Casefile.Admin"]))
)]
pub async fn roles(State(state): State<AppState>, caller: Caller) -> ApiResult<Response> {
    caller.admit(&state, Api::ManageAccess).await?;
    let value = state.store.roles(&caller.tenant_id).await?;
    Ok(Json(RoleList { value }).into_response())
}

/// Creates or replaces the role `name`.
#[utoipa::path(
    put,
    path = "/api/admin/roles/{name}",
    tag = "Access",
    params(("name" = String, Path, description = "The role's name")),
    request_body(content = Role, content_type = "application/json"),
    responses((status = 200, description = "The role as stored", body = Role)),
    security(("bearer" = ["Casefile.Admin"]))
)]
pub async fn put_role(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Json(role): Json<Role>,
) -> ApiResult<Response> {
    caller.admit(&state, Api::ManageAccess).await?;
    let role = crate::rbac::put_role(&state, &caller.tenant_id, Role { name, ..role }).await?;
    Ok(Json(role).into_response())
}

#[utoipa::path(
    delete,
    path = "/api/admin/roles/{name}",
    tag = "Access",
    params(("name" = String, Path, description = "The role's name")),
    responses((status = 204, description = "Deleted")),
    security(("bearer" = ["Casefile.Admin"]))
)]
pub async fn delete_role(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    caller.admit(&state, Api::ManageAccess).await?;
    crate::rbac::delete_role(&state, &caller.tenant_id, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The tenant's device groups, best rank first.
#[utoipa::path(
    get,
    path = "/api/admin/devicegroups",
    tag = "Access",
    responses((status = 200, description = "The tenant's device groups", body = DeviceGroupList)),
    security(("bearer" = ["Casefile.Admin"]))
)]
pub async fn device_groups(State(state): State<AppState>, caller: Caller) -> ApiResult<Response> {
    caller.admit(&state, Api::ManageAccess).await?;
    let value = state.store.device_groups(&caller.tenant_id).await?;
    let ungrouped_user_groups = state.store.ungrouped_user_groups(&caller.tenant_id).await?;
    Ok(Json(DeviceGroupList { value, ungrouped_user_groups }).into_response())
}

/// Sets the user groups that see "Ungrouped devices (default)" (empty: every user).
#[utoipa::path(
    put,
    path = "/api/admin/devicegroups/ungrouped",
    tag = "Access",
    request_body(content = UngroupedAccess, content_type = "application/json"),
    responses((status = 200, description = "Stored", body = UngroupedAccess)),
    security(("bearer" = ["Casefile.Admin"]))
)]
pub async fn set_ungrouped(
    State(state): State<AppState>,
    caller: Caller,
    Json(access): Json<UngroupedAccess>,
) -> ApiResult<Response> {
    caller.admit(&state, Api::ManageAccess).await?;
    crate::rbac::set_ungrouped_access(&state, &caller.tenant_id, access.user_groups.clone()).await?;
    Ok(Json(access).into_response())
}

/// Creates a device group; machines are regrouped at once.
#[utoipa::path(
    post,
    path = "/api/admin/devicegroups",
    tag = "Access",
    request_body(content = DeviceGroup, content_type = "application/json"),
    responses((status = 201, description = "The group, with its id", body = DeviceGroup)),
    security(("bearer" = ["Casefile.Admin"]))
)]
pub async fn create_device_group(
    State(state): State<AppState>,
    caller: Caller,
    Json(group): Json<DeviceGroup>,
) -> ApiResult<Response> {
    caller.admit(&state, Api::ManageAccess).await?;
    let group = crate::rbac::create_group(&state, &caller.tenant_id, group).await?;
    Ok((StatusCode::CREATED, Json(group)).into_response())
}

#[utoipa::path(
    delete,
    path = "/api/admin/devicegroups/{id}",
    tag = "Access",
    params(("id" = i64, Path, description = "The group's id")),
    responses((status = 204, description = "Deleted; its machines regrouped")),
    security(("bearer" = ["Casefile.Admin"]))
)]
pub async fn delete_device_group(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> ApiResult<StatusCode> {
    caller.admit(&state, Api::ManageAccess).await?;
    crate::rbac::delete_group(&state, &caller.tenant_id, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
