//! `/api/machines/{id}/collectInvestigationPackage` and `/api/machineactions`.

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use casefile_proto::ErrorCode;
use casefile_proto::action::{ActionType, MachineAction};
use casefile_proto::odata::{Collection, Entity, context};
use casefile_store::ActionFilter;

use super::{BaseUrl, Path, caller_action, odata, paging};
use crate::auth::{Api, Caller};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Largest request body the collect call reads.
const MAX_BODY: usize = 64 * 1024;
/// Longest comment accepted.
const MAX_COMMENT_CHARS: usize = 4000;

pub async fn collect(
    State(state): State<AppState>,
    caller: Caller,
    base: BaseUrl,
    Path(machine): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    caller.authorize(Api::CollectInvestigationPackage)?;
    let comment = comment_from_body(&headers, body).await?;
    let machine = state
        .store
        .machine(&caller.tenant_id, &machine)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("Machine {machine} was not found")))?;
    let action = MachineAction::new_pending(
        ActionType::CollectInvestigationPackage,
        &machine.id,
        Some(machine.facts.computer_dns_name.clone()),
        &caller.requestor,
        comment,
        chrono::Utc::now(),
    );
    state.store.create_action(&caller.tenant_id, &action).await?;
    state.dispatcher.notify(&machine.id);
    state.dispatcher.action_changed();
    tracing::info!(action_id = %action.id, machine_id = %machine.id, requestor = %caller.requestor, "collection requested");
    Ok(odata(StatusCode::CREATED, &Entity { context: base.context(context::ACTION), value: action }))
}

/// Reads `{"Comment": "..."}` as MDE does: JSON content type, exact key case.
async fn comment_from_body(headers: &HeaderMap, body: Body) -> ApiResult<String> {
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
    let value: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::new(ErrorCode::InvalidRequestBody, format!("Request body is incorrect: {e}")))?;
    let object = value.as_object().ok_or_else(|| {
        ApiError::new(ErrorCode::InvalidRequestBody, "Request body is incorrect: a JSON object is expected")
    })?;
    let comment = match object.get("Comment") {
        Some(serde_json::Value::String(s)) => s.trim().to_owned(),
        Some(_) => {
            return Err(ApiError::new(
                ErrorCode::InvalidRequestBody,
                "Request body is incorrect: Comment must be a string",
            ));
        }
        None => {
            let hint = object
                .keys()
                .find(|k| k.eq_ignore_ascii_case("comment"))
                .map(|k| format!(" (body parameters are case-sensitive: found '{k}')"))
                .unwrap_or_default();
            return Err(ApiError::new(
                ErrorCode::MissingRequiredParameter,
                format!("Parameter Comment is missing{hint}"),
            ));
        }
    };
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

pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    base: BaseUrl,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    caller.authorize(Api::GetMachineAction)?;
    let action = caller_action(&state, &caller, &id).await?;
    Ok(odata(StatusCode::OK, &Entity { context: base.context(context::ACTION), value: action }))
}

pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    base: BaseUrl,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    caller.authorize(Api::ListMachineActions)?;
    let page = paging(query.as_deref())?;
    let value = state.store.actions(&caller.tenant_id, &ActionFilter::default(), page).await?;
    Ok(odata(
        StatusCode::OK,
        &Collection { context: base.context(context::ACTIONS), count: None, value, next_link: None },
    ))
}
