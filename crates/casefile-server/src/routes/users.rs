//! `/api/admin/users`: the tenant's local console users, managed over the API as
//! `casefile user ...` manages them on the server (`Casefile.Admin`, role `Administrator`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use casefile_proto::ErrorCode;
use casefile_proto::user::{CreateUserRequest, SetPasswordRequest, User, UserList};
use casefile_store::UserRecord;

use super::{Json, Path};
use crate::audit;
use crate::auth::users::{self, UserError};
use crate::auth::{Api, Caller};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

pub(crate) fn to_wire(u: &UserRecord) -> User {
    let time = |t: &casefile_proto::time::Timestamp| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    User {
        name: u.name.clone(),
        created_at: time(&u.created_at),
        password_changed_at: time(&u.password_changed_at),
        disabled_at: u.disabled_at.as_ref().map(time),
        failed_sign_ins: u.failed_logins,
    }
}

fn api_error(e: UserError) -> ApiError {
    match e {
        UserError::NotFound(name) => ApiError::not_found(format!("User {name} was not found")),
        UserError::Store(e) => e.into(),
        UserError::Hash(cause) => ApiError::internal_from(cause),
        invalid => ApiError::new(ErrorCode::InvalidInput, invalid.to_string()),
    }
}

/// The tenant's local users, by name.
#[utoipa::path(
    get,
    path = "/api/admin/users",
    tag = "Access",
    responses((status = 200, description = "The tenant's local users", body = UserList)),
    security(("bearer" = ["Casefile.Admin"]))
)]
pub async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Response> {
    caller.admit(&state, Api::ManageAccess).await?;
    let found = users::list(&*state.store, &caller.tenant_id).await.map_err(api_error)?;
    Ok(Json(UserList { value: found.iter().map(to_wire).collect() }).into_response())
}

/// Creates a local user (its principal name is its name: roles name it so).
#[utoipa::path(
    post,
    path = "/api/admin/users",
    tag = "Access",
    request_body(content = CreateUserRequest, content_type = "application/json"),
    responses((status = 201, description = "The new user", body = User)),
    security(("bearer" = ["Casefile.Admin"]))
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Json(request): Json<CreateUserRequest>,
) -> ApiResult<Response> {
    caller.admit(&state, Api::ManageAccess).await?;
    audit::note_target(request.name.chars().take(128).collect::<String>());
    let user = users::create(&*state.store, &caller.tenant_id, &request.name, &request.password, state.now())
        .await
        .map_err(api_error)?;
    tracing::info!(user = %user.name, by = %caller.requestor, "local user created");
    Ok((StatusCode::CREATED, Json(to_wire(&user))).into_response())
}

/// Disables a user: no sign-in, and its sessions end now.
#[utoipa::path(
    post,
    path = "/api/admin/users/{name}/disable",
    tag = "Access",
    params(("name" = String, Path, description = "The user's name")),
    responses((status = 200, description = "The user, disabled", body = User)),
    security(("bearer" = ["Casefile.Admin"]))
)]
pub async fn disable(state: State<AppState>, caller: Caller, name: Path<String>) -> ApiResult<Response> {
    set_disabled(state, caller, name, true).await
}

#[utoipa::path(
    post,
    path = "/api/admin/users/{name}/enable",
    tag = "Access",
    params(("name" = String, Path, description = "The user's name")),
    responses((status = 200, description = "The user, enabled", body = User)),
    security(("bearer" = ["Casefile.Admin"]))
)]
pub async fn enable(state: State<AppState>, caller: Caller, name: Path<String>) -> ApiResult<Response> {
    set_disabled(state, caller, name, false).await
}

async fn set_disabled(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    disabled: bool,
) -> ApiResult<Response> {
    caller.admit(&state, Api::ManageAccess).await?;
    audit::note_target(&name);
    let user =
        users::set_disabled(&*state.store, &caller.tenant_id, &name, disabled, state.now()).await.map_err(api_error)?;
    Ok(Json(to_wire(&user)).into_response())
}

/// Sets a new password; the user's sessions end.
#[utoipa::path(
    post,
    path = "/api/admin/users/{name}/password",
    tag = "Access",
    params(("name" = String, Path, description = "The user's name")),
    request_body(content = SetPasswordRequest, content_type = "application/json"),
    responses((status = 200, description = "The user", body = User)),
    security(("bearer" = ["Casefile.Admin"]))
)]
pub async fn set_password(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Json(request): Json<SetPasswordRequest>,
) -> ApiResult<Response> {
    caller.admit(&state, Api::ManageAccess).await?;
    audit::note_target(&name);
    let user = users::reset_password(&*state.store, &caller.tenant_id, &name, &request.password, state.now())
        .await
        .map_err(api_error)?;
    Ok(Json(to_wire(&user)).into_response())
}
