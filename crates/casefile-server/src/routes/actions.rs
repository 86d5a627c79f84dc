//! `/api/machines/{id}/collectInvestigationPackage` and `/api/machineactions`.

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use casefile_odata::{CmpOp, Expr, Value};
use casefile_proto::ErrorCode;
use casefile_proto::action::{ActionType, CancelActionRequest, CollectRequest, MachineAction};
use casefile_proto::odata::{Collection, Entity, context};
use casefile_store::{CancelOutcome, CancelRequest};

use super::openapi::ListOptions;
use super::{BaseUrl, Intent, Path, caller_action, caller_machine, odata, reply};
use crate::audit;
use crate::auth::{Api, Caller};
use crate::error::{ApiError, ApiResult};
use crate::rbac::Access;
use crate::state::AppState;

/// Largest request body the collect call reads.
const MAX_BODY: usize = 64 * 1024;
/// Longest comment accepted.
const MAX_COMMENT_CHARS: usize = 4000;

/// Collects an investigation package from a machine (`Machine.CollectForensics`).
#[utoipa::path(
    post,
    path = "/api/machines/{id}/collectInvestigationPackage",
    tag = "MachineActions",
    params(("id" = String, Path, description = "Machine id (40 hex characters) or computer name")),
    request_body(content = CollectRequest, content_type = "application/json"),
    responses((status = 201, description = "The new action, `Pending`", body = Entity<MachineAction>)),
    security(("bearer" = ["Machine.CollectForensics"]))
)]
pub async fn collect(
    State(state): State<AppState>,
    caller: Caller,
    base: BaseUrl,
    Path(machine): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let access = caller.admit(&state, Api::CollectInvestigationPackage).await?;
    let (comment, tags, profile) = comment_from_body(&headers, body).await?;
    let machine = caller_machine(&state, &caller, &access, &machine, Intent::Act).await?;
    let profile = crate::profiles::for_collection(&state, &caller.tenant_id, &machine, profile.as_deref()).await?;
    let mut action = MachineAction::new_pending(
        ActionType::CollectInvestigationPackage,
        &machine.id,
        Some(machine.facts.computer_dns_name.clone()),
        &caller.requestor,
        comment,
        state.now(),
    );
    tags.apply(&mut action);
    action.profile = profile;
    audit::note_target(action.id);
    audit::note_detail(serde_json::json!({
        "machineId": machine.id,
        "comment": action.requestor_comment,
        "externalId": action.external_id,
        "title": action.title,
        "profile": action.profile,
    }));
    let entry = audit::entry_for_call(StatusCode::CREATED.as_u16());
    state.store.tenant(&caller.tenant_id).create_action(&action, entry.as_ref()).await?;
    crate::cluster::wake(&state, &machine.id).await;
    state.dispatcher.action_changed();
    tracing::info!(action_id = %action.id, machine_id = %machine.id, requestor = %caller.requestor, "collection requested");
    Ok(reply(StatusCode::CREATED, &Entity { context: base.context(context::ACTION), value: action }))
}

/// Reads `{"Comment": "...", "ExternalId": "...", "Title": "..."}` as MDE does: JSON
/// content type, exact key case for `Comment`; and casefile's `Profile`.
async fn comment_from_body(headers: &HeaderMap, body: Body) -> ApiResult<(String, Tags, Option<String>)> {
    let object = json_object(headers, body).await?.ok_or_else(|| {
        ApiError::new(ErrorCode::InvalidRequestBody, "Request body is incorrect: a JSON object is expected")
    })?;
    let tags = Tags::of(&object)?;
    let comment = comment_of(&object)?.ok_or_else(|| {
        let hint = object
            .keys()
            .find(|k| k.eq_ignore_ascii_case("comment"))
            .map(|k| format!(" (body parameters are case-sensitive: found '{k}')"))
            .unwrap_or_default();
        ApiError::new(ErrorCode::MissingRequiredParameter, format!("Parameter Comment is missing{hint}"))
    })?;
    let profile = match object.get("Profile") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(name)) => Some(name.clone()),
        Some(_) => {
            return Err(ApiError::new(
                ErrorCode::InvalidRequestBody,
                "Request body is incorrect: Profile must be a string (a profile name)",
            ));
        }
    };
    Ok((comment, tags, profile))
}

/// The caller's own labels of an action: `ExternalId` (a case number a playbook filters on
/// later) and `Title`. MDE's metadata declares both on every action and on Cancel; its
/// documentation spells the first `ExternalID` and its entity `externalId`, so every
/// spelling seen is accepted.
#[derive(Debug, Default)]
pub(super) struct Tags {
    external_id: Option<String>,
    title: Option<String>,
}

/// Longest `ExternalId`: case and ticket numbers are far shorter, and every list row carries it.
pub(super) const MAX_EXTERNAL_ID_CHARS: usize = 256;
/// Longest `Title`.
pub(super) const MAX_TITLE_CHARS: usize = 1000;
const EXTERNAL_ID_KEYS: &[&str] = &["ExternalId", "ExternalID", "externalId", "externalID"];
const TITLE_KEYS: &[&str] = &["Title", "title"];

impl Tags {
    fn of(object: &serde_json::Map<String, serde_json::Value>) -> ApiResult<Self> {
        Ok(Self {
            external_id: tag_of(object, "ExternalId", EXTERNAL_ID_KEYS, MAX_EXTERNAL_ID_CHARS)?,
            title: tag_of(object, "Title", TITLE_KEYS, MAX_TITLE_CHARS)?,
        })
    }

    /// From query parameters (the import call's body is the package), any key case.
    pub(super) fn from_query(query: &str) -> ApiResult<Self> {
        let find = |name: &str, max| {
            let mut values =
                url::form_urlencoded::parse(query.as_bytes()).filter(|(k, _)| k.eq_ignore_ascii_case(name));
            let value = values.next().map(|(_, v)| v.into_owned());
            if values.next().is_some() {
                return Err(ApiError::new(ErrorCode::InvalidInput, format!("Invalid input {name}: it is given twice")));
            }
            value.map(|v| checked_tag(name, v, max)).transpose().map(Option::flatten)
        };
        Ok(Self { external_id: find("ExternalId", MAX_EXTERNAL_ID_CHARS)?, title: find("Title", MAX_TITLE_CHARS)? })
    }

    pub(super) fn apply(self, action: &mut MachineAction) {
        action.external_id = self.external_id;
        action.title = self.title;
    }
}

/// One label under any of its `spellings`: a string (or `null`, as absent), given once.
fn tag_of(
    object: &serde_json::Map<String, serde_json::Value>,
    name: &str,
    spellings: &[&str],
    max_chars: usize,
) -> ApiResult<Option<String>> {
    let mut given = spellings.iter().filter_map(|k| object.get(*k).map(|v| (*k, v)));
    let Some((key, value)) = given.next() else {
        return Ok(None);
    };
    // Two spellings in one body: which one the caller meant is a guess.
    if let Some((other, _)) = given.next() {
        return Err(ApiError::new(
            ErrorCode::InvalidRequestBody,
            format!("Request body is incorrect: {name} is given twice (as '{key}' and '{other}')"),
        ));
    }
    match value {
        serde_json::Value::String(s) => checked_tag(name, s.clone(), max_chars),
        serde_json::Value::Null => Ok(None),
        _ => Err(ApiError::new(
            ErrorCode::InvalidRequestBody,
            format!("Request body is incorrect: {key} must be a string"),
        )),
    }
}

/// A label as stored: trimmed, bounded, one line of printable text; empty means none.
fn checked_tag(name: &str, value: String, max_chars: usize) -> ApiResult<Option<String>> {
    let value = value.trim();
    // Unlike a comment, a label is one line: a line break would split CSV exports and
    // log lines, and an escape sequence would reach analysts' terminals.
    if let Some(c) = value.chars().find(|c| c.is_control()) {
        return Err(ApiError::new(
            ErrorCode::InvalidInput,
            format!("Invalid input {name}: it contains the control character U+{:04X}", u32::from(c)),
        ));
    }
    if value.chars().count() > max_chars {
        return Err(ApiError::new(
            ErrorCode::InvalidInput,
            format!("Invalid input {name}: it is longer than {max_chars} characters"),
        ));
    }
    Ok(Some(value.to_owned()).filter(|v| !v.is_empty()))
}

/// The cancel call's body: `Comment` is optional, and so is the body itself. MDE declares
/// `ExternalId` and `Title` on Cancel too: they are checked like an action's, but an action
/// keeps the labels its requester gave it (a playbook finds it by the case number it was
/// created with, whoever cancels it).
async fn optional_comment(headers: &HeaderMap, body: Body) -> ApiResult<Option<String>> {
    if headers.get(CONTENT_TYPE).is_none() && headers.get(CONTENT_LENGTH).is_none_or(|v| v == "0") {
        return Ok(None);
    }
    match json_object(headers, body).await? {
        Some(object) => {
            Tags::of(&object)?;
            comment_of(&object)
        }
        None => Ok(None),
    }
}

/// The body as a JSON object (`None` for an empty body); JSON content type required.
async fn json_object(headers: &HeaderMap, body: Body) -> ApiResult<Option<serde_json::Map<String, serde_json::Value>>> {
    let content_type = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mime = content_type.split(';').next().unwrap_or("").trim();
    if !mime.eq_ignore_ascii_case("application/json") {
        return Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            format!("Content-Type must be application/json, got '{content_type}'"),
        ));
    }
    let bytes = axum::body::to_bytes(body, MAX_BODY)
        .await
        .map_err(|_| ApiError::new(ErrorCode::PayloadTooLarge, format!("The request body exceeds {MAX_BODY} bytes")))?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    match serde_json::from_slice(&bytes) {
        Ok(serde_json::Value::Object(object)) => Ok(Some(object)),
        Ok(_) => {
            Err(ApiError::new(ErrorCode::InvalidRequestBody, "Request body is incorrect: a JSON object is expected"))
        }
        Err(e) => Err(ApiError::new(ErrorCode::InvalidRequestBody, format!("Request body is incorrect: {e}"))),
    }
}

/// `Comment` of a request body: a non-empty string of bounded length when present.
fn comment_of(object: &serde_json::Map<String, serde_json::Value>) -> ApiResult<Option<String>> {
    let comment = match object.get("Comment") {
        Some(serde_json::Value::String(s)) => s.trim().to_owned(),
        Some(_) => {
            return Err(ApiError::new(
                ErrorCode::InvalidRequestBody,
                "Request body is incorrect: Comment must be a string",
            ));
        }
        None => return Ok(None),
    };
    checked_comment(comment).map(Some)
}

/// A comment as it is stored and shown back: not empty, not too long, and free of control
/// characters (a NUL or an escape sequence would reach analysts' terminals and CSV
/// exports); tab and line breaks are text.
pub(super) fn checked_comment(comment: String) -> ApiResult<String> {
    if let Some(c) = comment.chars().find(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r')) {
        return Err(ApiError::new(
            ErrorCode::InvalidInput,
            format!("Invalid input Comment: it contains the control character U+{:04X}", u32::from(c)),
        ));
    }
    if comment.is_empty() {
        return Err(ApiError::new(ErrorCode::InvalidInput, "Invalid input Comment: it must not be empty"));
    }
    if comment.chars().count() > MAX_COMMENT_CHARS {
        return Err(ApiError::new(
            ErrorCode::InvalidInput,
            format!("Invalid input Comment: it is longer than {MAX_COMMENT_CHARS} characters"),
        ));
    }
    Ok(comment)
}

/// One machine action (`Machine.Read.All` or `Machine.ReadWrite.All`).
#[utoipa::path(
    get,
    path = "/api/machineactions/{id}",
    tag = "MachineActions",
    params(("id" = uuid::Uuid, Path, description = "MachineAction id (a GUID)")),
    responses((status = 200, description = "The action", body = Entity<MachineAction>)),
    security(("bearer" = ["Machine.Read.All", "Machine.ReadWrite.All"]))
)]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    base: BaseUrl,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let access = caller.admit(&state, Api::GetMachineAction).await?;
    let action = caller_action(&state, &caller, &access, &id, Intent::Read).await?;
    Ok(reply(StatusCode::OK, &Entity { context: base.context(context::ACTION), value: action }))
}

/// Machine actions of the tenant, newest first, with OData options.
#[utoipa::path(
    get,
    path = "/api/machineactions",
    tag = "MachineActions",
    params(ListOptions),
    responses((status = 200, description = "A page of actions", body = Collection<MachineAction>)),
    security(("bearer" = ["Machine.Read.All", "Machine.ReadWrite.All"]))
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    base: BaseUrl,
    uri: Uri,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let access = caller.admit(&state, Api::ListMachineActions).await?;
    list_actions(&state, &caller, &access, &base, &uri, query.as_deref(), None).await
}

/// `GET /api/machines/{id}/machineactions`: the machine's actions, with the same OData
/// options as the full list.
#[utoipa::path(
    get,
    path = "/api/machines/{id}/machineactions",
    tag = "MachineActions",
    params(("id" = String, Path, description = "Machine id or computer name"), ListOptions),
    responses((status = 200, description = "A page of the machine's actions", body = Collection<MachineAction>)),
    security(("bearer" = ["Machine.Read.All", "Machine.ReadWrite.All"]))
)]
pub async fn list_for_machine(
    State(state): State<AppState>,
    caller: Caller,
    base: BaseUrl,
    uri: Uri,
    Path(machine): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let access = caller.admit(&state, Api::ListMachineActions).await?;
    let machine = caller_machine(&state, &caller, &access, &machine, Intent::Read).await?;
    list_actions(&state, &caller, &access, &base, &uri, query.as_deref(), Some(&machine.id)).await
}

async fn list_actions(
    state: &AppState,
    caller: &Caller,
    access: &Access,
    base: &BaseUrl,
    uri: &Uri,
    raw_query: Option<&str>,
    machine_id: Option<&str>,
) -> ApiResult<Response> {
    let mut request = odata::parse(raw_query, &odata::ACTION_SCHEMA)?;
    let requested = request.query.filter.take().map(odata::lower_action_filter).transpose()?;
    let of_machine = machine_id.map(|id| Expr::Compare {
        property: "machineId",
        op: CmpOp::Eq,
        value: Value::String(id.to_owned()),
    });
    request.query.filter = match (of_machine, requested) {
        (Some(m), Some(f)) => Some(Expr::And(Box::new(m), Box::new(f))),
        (m, f) => m.or(f),
    };
    access.restrict(&mut request.query);
    let listed = state.store.tenant(&caller.tenant_id).actions(&request.query).await?;
    odata::respond(base, uri.path(), raw_query, "MachineActions", &request, listed)
}

/// `POST /api/machineactions/{id}/cancel`: a `Pending` action is cancelled at once; a
/// running collection is stopped by its agent, which confirms, and then ends `Cancelled`.
#[utoipa::path(
    post,
    path = "/api/machineactions/{id}/cancel",
    tag = "MachineActions",
    params(("id" = uuid::Uuid, Path, description = "MachineAction id (a GUID)")),
    request_body(content = Option<CancelActionRequest>, content_type = "application/json"),
    responses((
        status = 200,
        description = "`Cancelled`, or still `InProgress` with the cancellation recorded until the agent confirms",
        body = Entity<MachineAction>
    )),
    security((
        "bearer" = [
            "Machine.CollectForensics",
            "Machine.Isolate",
            "Machine.RestrictExecution",
            "Machine.Scan",
            "Machine.Offboard",
            "Machine.StopAndQuarantine",
            "Machine.LiveResponse"
        ]
    ))
)]
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    base: BaseUrl,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let access = caller.admit(&state, Api::CancelMachineAction).await?;
    let id = caller_action(&state, &caller, &access, &id, Intent::Act).await?.id;
    audit::note_target(id);
    let comment = optional_comment(&headers, body).await?;
    audit::note_detail(serde_json::json!({"comment": comment}));
    let request = CancelRequest { requestor: caller.requestor.clone(), comment, at: state.now() };
    let entry = audit::entry_for_call(StatusCode::OK.as_u16());
    let outcome = state
        .store
        .tenant(&caller.tenant_id)
        .request_cancel(id, &request, entry.as_ref())
        .await?
        .ok_or_else(|| ApiError::not_found(format!("MachineAction {id} was not found")))?;
    let action = match outcome {
        CancelOutcome::Cancelled(action) => {
            state.dispatcher.action_changed();
            tracing::info!(action_id = %id, requestor = %caller.requestor, "pending action cancelled");
            action
        }
        CancelOutcome::Requested(action) => {
            crate::cluster::wake(&state, &action.machine_id).await;
            tracing::info!(action_id = %id, requestor = %caller.requestor, "cancellation sent to the agent");
            action
        }
        CancelOutcome::AlreadyFinal(action) => {
            return Err(ApiError::bad_request(format!(
                "MachineAction {id} cannot be cancelled: it has already ended with status {}",
                action.status
            )));
        }
    };
    Ok(reply(StatusCode::OK, &Entity { context: base.context(context::ACTION), value: action }))
}
