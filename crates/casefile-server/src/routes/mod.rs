//! The route table: every public, agent, token and download route in one place, with
//! its OpenAPI description and its audit event ([`table`]).

mod actions;
mod admin;
mod agent;
mod console;
mod custody;
mod download;
mod enrollment_tokens;
pub(crate) mod errors;
mod import;
mod machines;
pub(crate) mod oauth;
pub use oauth::CLI_CLIENT_ID;
mod odata;
mod openapi;
mod users;

use axum::Router;
use axum::extract::{FromRequestParts, Request};
use axum::http::header::{CONTENT_TYPE, HOST};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post, put};
use casefile_proto::ErrorCode;
use serde::Serialize;
use uuid::Uuid;

use utoipa::{Modify as _, OpenApi as _};
use utoipa_axum::router::UtoipaMethodRouter;
use utoipa_axum::routes;

use crate::audit::Event;
use crate::error::ApiError;
use crate::rbac::Access;
use crate::state::AppState;

/// The server's routes, each declared once: where it is served, what the OpenAPI
/// document says about it (the handler's `#[utoipa::path]`, through `routes!`) and what
/// the audit trail calls its calls. `/openapi.json` is generated from this table, so the
/// document cannot describe a route that is not served, nor miss one that is.
pub(crate) fn table() -> Table {
    table_with(true)
}

/// [`table`], with the web console's routes or without them (`[console] enabled`).
fn table_with(console: bool) -> Table {
    use crate::audit::Event::{ByRoute, Named, Report};
    let agent = |path: &str| format!("{}{path}", casefile_proto::agent::PREFIX);
    Table::new()
        // The public API (MDE's paths).
        .api(routes!(machines::list), ByRoute)
        .api(routes!(machines::get), ByRoute)
        .api(routes!(actions::collect), Named("collect"))
        .api(routes!(actions::list_for_machine), ByRoute)
        .api(routes!(machines::tags), ByRoute)
        .api(routes!(import::import), Named("package.import"))
        .api(routes!(actions::list), ByRoute)
        .api(routes!(actions::get), ByRoute)
        .api(routes!(actions::cancel), Named("cancel"))
        .api(routes!(download::package_uri), Named("link.issue"))
        .api(routes!(custody::custody), ByRoute)
        .api(routes!(download::download), Named("package.download"))
        // casefile's own administration API.
        .api(routes!(admin::list), ByRoute)
        .api(routes!(admin::create), ByRoute)
        .api(routes!(admin::get), ByRoute)
        .api(routes!(admin::disable), ByRoute)
        .api(routes!(admin::enable), ByRoute)
        .api(routes!(admin::rotate_secret), ByRoute)
        .api(routes!(admin::set_roles), ByRoute)
        .hidden("/api/admin/applications/{id}/roles", put(admin::set_roles), ByRoute)
        .api(routes!(admin::audit), ByRoute)
        .api(routes!(admin::roles), ByRoute)
        .api(routes!(admin::put_role), ByRoute)
        .api(routes!(admin::delete_role), ByRoute)
        .api(routes!(admin::device_groups), ByRoute)
        .api(routes!(admin::create_device_group), ByRoute)
        .api(routes!(admin::set_ungrouped), ByRoute)
        .api(routes!(admin::delete_device_group), ByRoute)
        .api(routes!(users::list), ByRoute)
        .api(routes!(users::create), ByRoute)
        .api(routes!(users::disable), ByRoute)
        .api(routes!(users::enable), ByRoute)
        .api(routes!(users::set_password), ByRoute)
        .api(routes!(enrollment_tokens::list), ByRoute)
        .api(routes!(enrollment_tokens::create), ByRoute)
        .api(routes!(enrollment_tokens::revoke), ByRoute)
        // Where Entra ID serves them: clients change only their login host.
        .hidden("/{tenant}/oauth2/v2.0/token", post(oauth::token_v2), Named("token.issue"))
        .hidden("/{tenant}/oauth2/token", post(oauth::token_v1), Named("token.issue"))
        .hidden("/{tenant}/oauth2/v2.0/authorize", get(oauth::authorize).post(oauth::authorize), ByRoute)
        .hidden("/{tenant}/oauth2/authorize", get(oauth::authorize).post(oauth::authorize), ByRoute)
        .hidden("/{tenant}/v2.0/.well-known/openid-configuration", get(oauth::openid_configuration_v2), ByRoute)
        .hidden("/{tenant}/.well-known/openid-configuration", get(oauth::openid_configuration_v1), ByRoute)
        .hidden("/{tenant}/discovery/v2.0/keys", get(jwks), ByRoute)
        .hidden("/{tenant}/discovery/keys", get(jwks), ByRoute)
        .hidden("/discovery/v2.0/keys", get(jwks), ByRoute)
        .api(routes!(jwks), ByRoute)
        // The agent API.
        .hidden(&agent("/enroll"), post(agent::enroll), Named("agent.enroll"))
        .hidden(&agent("/enroll/challenge"), post(agent::enroll_challenge), ByRoute)
        .hidden(&agent("/hello"), post(agent::hello), Named("agent.start"))
        .hidden(&agent("/actions/next"), get(agent::next_task), ByRoute)
        .hidden(&agent("/actions/{id}/package"), put(agent::upload_package), Named("package.upload"))
        .hidden(&agent("/actions/{id}/failure"), post(agent::report_failure), Named("action.fail"))
        .hidden(&agent("/actions/{id}/cancelled"), post(agent::confirm_cancel), Named("cancel.confirm"))
        .hidden(&agent("/actions/{id}/accepted"), post(agent::accept), Named("action.accept"))
        .hidden(&agent("/actions/{id}/progress"), put(agent::report_progress), Report("action.progress"))
        .console(console)
}

/// The route table, served: `/openapi.json` from it, JSON errors for unknown paths and
/// wrong methods, and the audit trail around every route.
pub fn router(state: AppState) -> Router {
    let (routes, document) = table_with(state.config.console.enabled).into_parts();
    let document = document.to_json().map_err(|e| e.to_string());
    routes
        .route(
            "/openapi.json",
            get(move || async move {
                match document {
                    Ok(json) => ([(CONTENT_TYPE, "application/json")], json).into_response(),
                    Err(e) => ApiError::internal_from(e).into_response(),
                }
            }),
        )
        .fallback(not_found)
        // After every route: it applies to the routes already declared.
        .method_not_allowed_fallback(errors::method_not_allowed)
        // Inside the router, where the matched route is known.
        .layer(axum::middleware::from_fn_with_state(state.clone(), crate::audit::middleware))
        .with_state(state)
}

/// The OpenAPI document of [`table`], as `/openapi.json` serves it.
#[cfg(test)]
fn openapi() -> utoipa::openapi::OpenApi {
    table().into_parts().1
}

/// Routes with their documentation and audit events, being declared.
pub(crate) struct Table {
    router: Router<AppState>,
    document: utoipa::openapi::OpenApi,
    /// Every route's path, as declared (for the tests that walk them all).
    paths: Vec<String>,
}

impl Table {
    fn new() -> Self {
        Self { router: Router::new(), document: openapi::ApiDoc::openapi(), paths: Vec::new() }
    }

    /// A route of the public contract: method and path from its handler's
    /// `#[utoipa::path]`. The document keeps MDE's spelling (`collectInvestigationPackage`);
    /// the route is its lower-case form, which [`normalize_path`] folds requests to. (This
    /// is why `utoipa_axum::OpenApiRouter::routes`, which routes the documented spelling,
    /// is not used.)
    fn api(mut self, (schemas, paths, handler): UtoipaMethodRouter<AppState>, event: Event) -> Self {
        let handler = with_event(handler, event);
        for (path, item) in paths.paths {
            self.router = self.router.route(&routed_path(&path), handler.clone());
            self.paths.push(path.clone());
            match self.document.paths.paths.get_mut(&path) {
                Some(existing) => existing.merge_operations(item),
                None => {
                    self.document.paths.paths.insert(path, item);
                }
            }
        }
        self.document.components.get_or_insert_with(Default::default).schemas.extend(schemas);
        self
    }

    /// A route outside the public contract (the token endpoints, the agent API).
    fn hidden(mut self, path: &str, handler: MethodRouter<AppState>, event: Event) -> Self {
        self.router = self.router.route(path, with_event(handler, event));
        self.paths.push(path.to_owned());
        self
    }

    /// The web console's pages (`console::routes`), when it is on.
    fn console(self, on: bool) -> Self {
        if on { console::routes(self) } else { self }
    }

    /// The declared paths, each once.
    pub(crate) fn paths(&self) -> Vec<String> {
        let mut paths = self.paths.clone();
        paths.sort();
        paths.dedup();
        paths
    }

    fn into_parts(self) -> (Router<AppState>, utoipa::openapi::OpenApi) {
        let mut document = self.document;
        // After the paths are in: it adds the answers every /api operation can give.
        openapi::Conventions.modify(&mut document);
        (self.router, document)
    }
}

/// The handler with its audit event noted as it runs (a layer on the matched method only,
/// so a wrong method is recorded by route).
fn with_event(handler: MethodRouter<AppState>, event: Event) -> MethodRouter<AppState> {
    match event {
        Event::Named(name) => handler.route_layer(axum::middleware::from_fn_with_state(name, crate::audit::named)),
        Event::Report(name) => handler.route_layer(axum::middleware::from_fn_with_state(name, crate::audit::report)),
        Event::ByRoute => handler,
    }
}

/// `/api/machines/{id}/collectInvestigationPackage` → `/api/machines/{id}/collectinvestigationpackage`:
/// fixed segments of API paths in lower case, parameters as they are.
fn routed_path(documented: &str) -> String {
    if !documented.starts_with("/api/") {
        return documented.to_owned();
    }
    documented
        .split('/')
        .map(|segment| if segment.starts_with('{') { segment.to_owned() } else { segment.to_ascii_lowercase() })
        .collect::<Vec<_>>()
        .join("/")
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
const COLLECTIONS: &[&str] =
    &["machines", "machineactions", "applications", "roles", "devicegroups", "users", "enrollmenttokens"];
/// Fixed segments that stand where a parameter could (`/devicegroups/ungrouped`).
const FIXED_AFTER_COLLECTION: &[&str] = &["ungrouped"];

async fn not_found(uri: Uri) -> ApiError {
    ApiError::new(ErrorCode::NotFound, format!("No resource matches '{}'", uri.path()))
}

/// The public signing keys of access tokens and links.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "Server", responses((status = 200, description = "JSON Web Key Set", body = Object)))]
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
#[derive(Clone)]
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
    let machine = match state.store.tenant(&caller.tenant_id).machine(id_or_name).await {
        Ok(found) => found.ok_or_else(|| ApiError::not_found(missing()))?,
        // Any agent can report any name, so a shared name identifies none of the machines
        // (issue 9 item 2): the caller picks one by id.
        Err(casefile_store::StoreError::AmbiguousName { candidates, .. }) => {
            // Only the candidates the caller may see are listed.
            let named = state.store.tenant(&caller.tenant_id).machines_named(id_or_name).await?;
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
    let action =
        state.store.tenant(&caller.tenant_id).action(id).await?.ok_or_else(|| ApiError::not_found(missing()))?;
    if let Access::User { .. } = access {
        let machine = state.store.tenant(&caller.tenant_id).machine(&action.machine_id).await?;
        if !machine.is_some_and(|m| access.sees(&m)) {
            return Err(out_of_reach(intent, missing()));
        }
    }
    Ok(action)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The public contract as committed in `docs/openapi.json`: every change to it shows in
    /// review. To accept a change: `UPDATE_SNAPSHOTS=1 cargo test -p casefile-server openapi`.
    #[test]
    fn the_openapi_document_is_the_committed_one() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
        let current = openapi().to_pretty_json().unwrap() + "\n";
        if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
            std::fs::write(&path, &current).unwrap();
            return;
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        if committed != current {
            let line = committed.lines().zip(current.lines()).position(|(a, b)| a != b);
            let line = line.unwrap_or(committed.lines().count().min(current.lines().count()));
            panic!(
                "the OpenAPI document differs from docs/openapi.json from line {}:\n  committed: {}\n  now:       {}\n\
                 Review the change, then accept it with `UPDATE_SNAPSHOTS=1 cargo test -p casefile-server openapi`.",
                line + 1,
                committed.lines().nth(line).unwrap_or("(end)"),
                current.lines().nth(line).unwrap_or("(end)"),
            );
        }
    }

    /// A documented path, as a client spells it, reaches its route.
    #[test]
    fn documented_paths_fold_to_their_routes() {
        for path in openapi().paths.paths.keys() {
            let request =
                Request::builder().uri(path.replace('{', "%7B").replace('}', "%7D")).body(axum::body::Body::empty());
            let folded = normalize_path(request.unwrap()).uri().path().replace("%7B", "{").replace("%7D", "}");
            assert_eq!(folded, routed_path(path), "{path}");
        }
        assert_eq!(
            routed_path("/api/machines/{id}/collectInvestigationPackage"),
            "/api/machines/{id}/collectinvestigationpackage"
        );
        assert_eq!(
            routed_path("/safedownload/WDATP_Investigation_Package.zip"),
            "/safedownload/WDATP_Investigation_Package.zip"
        );
    }
}
