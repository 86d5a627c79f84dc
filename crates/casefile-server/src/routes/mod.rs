//! The route list: every public, agent and download route in one place.

mod actions;
mod admin;
mod agent;
mod custody;
mod download;
mod import;
mod machines;
mod oauth;
mod odata;
mod openapi;

use axum::Router;
use axum::extract::{FromRequestParts, Request};
use axum::http::header::{CONTENT_TYPE, HOST};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use casefile_proto::ErrorCode;
use serde::Serialize;
use uuid::Uuid;

use crate::error::ApiError;
use crate::links::DOWNLOAD_PATH;
use crate::rbac::Access;
use crate::state::AppState;

/// Routes are written in lower case: [`normalize_path`] folds public API paths to it.
pub fn router(state: AppState) -> Router {
    let public = Router::new()
        .route("/api/machines", get(machines::list))
        .route("/api/machines/{id}", get(machines::get))
        .route("/api/machines/{id}/collectinvestigationpackage", post(actions::collect))
        .route("/api/machines/{id}/machineactions", get(actions::list_for_machine))
        .route("/api/machines/{id}/tags", post(machines::tags))
        .route("/api/machines/{id}/importinvestigationpackage", post(import::import))
        .route("/api/machineactions", get(actions::list))
        .route("/api/machineactions/{id}", get(actions::get))
        .route("/api/machineactions/{id}/cancel", post(actions::cancel))
        .route("/api/machineactions/{id}/getpackageuri", get(download::package_uri))
        .route("/api/machineactions/{id}/custody", get(custody::custody));
    let admin_api = Router::new()
        .route("/api/admin/applications", get(admin::list).post(admin::create))
        .route("/api/admin/applications/{id}", get(admin::get))
        .route("/api/admin/applications/{id}/disable", post(admin::disable))
        .route("/api/admin/applications/{id}/enable", post(admin::enable))
        .route("/api/admin/applications/{id}/rotatesecret", post(admin::rotate_secret))
        .route("/api/admin/applications/{id}/roles", post(admin::set_roles).put(admin::set_roles))
        .route("/api/admin/audit", get(admin::audit))
        .route("/api/admin/roles", get(admin::roles))
        .route("/api/admin/roles/{name}", put(admin::put_role).delete(admin::delete_role))
        .route("/api/admin/devicegroups", get(admin::device_groups).post(admin::create_device_group))
        .route("/api/admin/devicegroups/ungrouped", put(admin::set_ungrouped))
        .route("/api/admin/devicegroups/{id}", axum::routing::delete(admin::delete_device_group));
    // Where Entra ID serves them: clients change only their login host.
    let login = Router::new()
        .route("/{tenant}/oauth2/v2.0/token", post(oauth::token_v2))
        .route("/{tenant}/oauth2/token", post(oauth::token_v1))
        .route("/{tenant}/oauth2/v2.0/authorize", get(oauth::authorize).post(oauth::authorize))
        .route("/{tenant}/oauth2/authorize", get(oauth::authorize).post(oauth::authorize))
        .route("/{tenant}/v2.0/.well-known/openid-configuration", get(oauth::openid_configuration_v2))
        .route("/{tenant}/.well-known/openid-configuration", get(oauth::openid_configuration_v1))
        .route("/{tenant}/discovery/v2.0/keys", get(jwks))
        .route("/{tenant}/discovery/keys", get(jwks))
        .route("/discovery/v2.0/keys", get(jwks));
    let agent = Router::new()
        .route("/enroll", post(agent::enroll))
        .route("/enroll/challenge", post(agent::enroll_challenge))
        .route("/hello", post(agent::hello))
        .route("/actions/next", get(agent::next_task))
        .route("/actions/{id}/package", put(agent::upload_package))
        .route("/actions/{id}/failure", post(agent::report_failure))
        .route("/actions/{id}/cancelled", post(agent::confirm_cancel))
        .route("/actions/{id}/accepted", post(agent::accept));
    Router::new()
        .merge(public)
        .merge(admin_api)
        .merge(login)
        .nest(casefile_proto::agent::PREFIX, agent)
        .route(DOWNLOAD_PATH, get(download::download))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/openapi.json", get(openapi::document))
        .fallback(not_found)
        // Inside the router, where the matched route is known.
        .layer(axum::middleware::from_fn_with_state(state.clone(), crate::audit::middleware))
        .with_state(state)
}

/// MDE clients send `GetPackageUri` and `getPackageUri`, `/api/v1.0/...` and `/api/...`,
/// and trailing slashes: fold public API paths to one lower-case form before routing.
/// Only the routes' fixed segments are folded: a parameter (the segment after a
/// collection, see [`COLLECTIONS`]) keeps its case, so a role created as `SOC-Analysts`
/// stays so and errors echo ids as they were sent.
pub fn normalize_path(mut request: Request) -> Request {
    let uri = request.uri();
    let path = uri.path();
    if !path.get(..5).is_some_and(|p| p.eq_ignore_ascii_case("/api/")) && !path.eq_ignore_ascii_case("/api") {
        return request;
    }
    let mut segments: Vec<&str> = path.split('/').skip(1).collect();
    if segments.get(1).is_some_and(|s| s.eq_ignore_ascii_case("v1.0")) {
        segments.remove(1);
    }
    while segments.len() > 1 && segments.last() == Some(&"") {
        segments.pop();
    }
    let mut folded = String::with_capacity(path.len());
    let mut after_collection = false;
    for segment in segments {
        folded.push('/');
        let fixed = !after_collection || FIXED_AFTER_COLLECTION.iter().any(|f| segment.eq_ignore_ascii_case(f));
        if fixed {
            folded.push_str(&segment.to_ascii_lowercase());
        } else {
            folded.push_str(segment);
        }
        after_collection = fixed && COLLECTIONS.iter().any(|c| segment.eq_ignore_ascii_case(c));
    }
    let rebuilt = match uri.query() {
        Some(q) => format!("{folded}?{q}"),
        None => folded,
    };
    if let Ok(new_uri) = rebuilt.parse::<Uri>() {
        *request.uri_mut() = new_uri;
    }
    request
}

/// Path segments followed by a parameter (`/machines/{id}`, `/roles/{name}`).
const COLLECTIONS: &[&str] = &["machines", "machineactions", "applications", "roles", "devicegroups"];
/// Fixed segments that stand where a parameter could (`/devicegroups/ungrouped`).
const FIXED_AFTER_COLLECTION: &[&str] = &["ungrouped"];

async fn not_found(uri: Uri) -> ApiError {
    ApiError::new(ErrorCode::NotFound, format!("No resource matches '{}'", uri.path()))
}

async fn jwks(axum::extract::State(state): axum::extract::State<AppState>) -> Response {
    axum::Json(state.keyring.jwks()).into_response()
}

/// `axum::Json` whose rejections answer in the API's error shape.
pub(crate) struct Json<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> axum::extract::FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(ApiError::new(
                ErrorCode::InvalidRequestBody,
                format!("Request body is incorrect: {}", rejection.body_text()),
            )),
        }
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// `axum::extract::Query` whose rejections answer in the API's error shape.
pub(crate) struct Query<T>(pub T);

impl<T: serde::de::DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Self(value)),
            Err(rejection) => {
                Err(ApiError::new(ErrorCode::InvalidInput, format!("Invalid query: {}", rejection.body_text())))
            }
        }
    }
}

/// `axum::extract::Path` whose rejections answer in the API's error shape.
pub(crate) struct Path<T>(pub T);

impl<T: serde::de::DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Self(value)),
            Err(rejection) => Err(ApiError::bad_request(format!("Invalid path: {}", rejection.body_text()))),
        }
    }
}

/// A success body as MDE sends it: OData JSON with `OData-Version: 4.0`.
pub(crate) fn reply<T: Serialize>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(json) => {
            let mut response = (status, json).into_response();
            let headers = response.headers_mut();
            headers.insert(
                CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/json; odata.metadata=minimal; odata.streaming=true; charset=utf-8",
                ),
            );
            headers.insert("odata-version", HeaderValue::from_static("4.0"));
            response
        }
        Err(e) => ApiError::internal_from(e).into_response(),
    }
}

/// The base URL clients reached us at: `public_url` when configured; else the scheme
/// and host the client used, as a trusted proxy forwarded them (`X-Forwarded-Proto/-Host`)
/// or as the connection and its `Host` header show.
pub(crate) struct BaseUrl(pub String);

impl BaseUrl {
    /// `@odata.context` for `suffix` (e.g. `$metadata#MachineActions`).
    pub fn context(&self, suffix: &str) -> String {
        format!("{}/api/{suffix}", self.0)
    }
}

impl FromRequestParts<AppState> for BaseUrl {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if let Some(url) = &state.config.public_url {
            return Ok(Self(url.trim_end_matches('/').to_owned()));
        }
        // Set by the accept loop, which alone knows the connection and the proxies.
        let origin = parts.extensions.get::<crate::proxy::Origin>();
        let scheme = origin.map_or(if state.config.tls.plain_http { "http" } else { "https" }, |o| o.scheme);
        let host = origin
            .and_then(|o| o.forwarded_host.clone())
            .or_else(|| {
                parts
                    .headers
                    .get(HOST)
                    .and_then(|h| h.to_str().ok())
                    .filter(|h| crate::proxy::valid_host(h))
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| state.config.listen.to_string());
        Ok(Self(format!("{scheme}://{host}")))
    }
}

/// Parses a MachineAction id as MDE does (an `Edm.Guid`).
pub(crate) fn action_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::try_parse(raw).map_err(|_| {
        ApiError::bad_request(format!(
            "The key value ({raw}) from request is not valid. The key value should be format of type 'Edm.Guid'."
        ))
    })
}

/// What a call does with the machine or action it names: for a user outside its device
/// group, a read answers `404` (as if it did not exist, like the filtered lists) and an
/// action `403` (§6.3 DECISION).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Intent {
    Read,
    Act,
}

fn out_of_reach(intent: Intent, not_found: String) -> ApiError {
    match intent {
        Intent::Read => ApiError::not_found(not_found),
        Intent::Act => ApiError::forbidden("The machine is outside the device groups this user may act on"),
    }
}

/// The caller's machine, by id or computer name, or `404`; `400` listing the candidate
/// ids for a name that several machines report.
pub(crate) async fn caller_machine(
    state: &AppState,
    caller: &crate::auth::Caller,
    access: &Access,
    id_or_name: &str,
    intent: Intent,
) -> Result<casefile_store::MachineRecord, ApiError> {
    let missing = || format!("Machine {id_or_name} was not found");
    let machine = match state.store.machine(&caller.tenant_id, id_or_name).await {
        Ok(found) => found.ok_or_else(|| ApiError::not_found(missing()))?,
        // Any agent can report any name, so a shared name identifies none of the machines
        // (issue 9 item 2): the caller picks one by id.
        Err(casefile_store::StoreError::AmbiguousName { candidates, .. }) => {
            // Only the candidates the caller may see are listed.
            let named = state.store.machines_named(&caller.tenant_id, id_or_name).await?;
            let visible: Vec<_> = named.iter().filter(|m| access.sees(m)).map(|m| m.id.as_str()).collect();
            return Err(ApiError::new(
                ErrorCode::InvalidInput,
                format!(
                    "The name '{id_or_name}' matches {} machines; name one by id: {}",
                    candidates.len(),
                    if visible.is_empty() { "none of them is visible to you".to_owned() } else { visible.join(", ") }
                ),
            ));
        }
        Err(e) => return Err(e.into()),
    };
    if !access.sees(&machine) {
        return Err(out_of_reach(intent, missing()));
    }
    Ok(machine)
}

/// The caller's action `raw` (an `Edm.Guid`), or the MDE errors for a bad or unknown id.
pub(crate) async fn caller_action(
    state: &AppState,
    caller: &crate::auth::Caller,
    access: &Access,
    raw: &str,
    intent: Intent,
) -> Result<casefile_proto::MachineAction, ApiError> {
    let id = action_id(raw)?;
    let missing = || format!("MachineAction {id} was not found");
    let action = state.store.action(&caller.tenant_id, id).await?.ok_or_else(|| ApiError::not_found(missing()))?;
    if let Access::User { .. } = access {
        let machine = state.store.machine(&caller.tenant_id, &action.machine_id).await?;
        if !machine.is_some_and(|m| access.sees(&m)) {
            return Err(out_of_reach(intent, missing()));
        }
    }
    Ok(action)
}
