//! `/api/machines`.

use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use casefile_proto::ErrorCode;
use casefile_proto::machine::{HealthStatus, Machine, MachineId, ONBOARDED};
use casefile_proto::machine::{TagAction, TagRequest};
use casefile_proto::odata::{Collection, Entity, context};
use casefile_proto::rbac::{DeviceGroup, UNGROUPED};
use casefile_proto::time::Timestamp;
use casefile_store::{Listed, MachineRecord};

use super::openapi::ListOptions;
use super::{BaseUrl, Intent, Json, Path, caller_machine, odata, reply};
use crate::audit;
use crate::auth::{Api, Caller};
use crate::clock::seconds_before;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Enrolled machines, most recently seen first, with OData options.
#[utoipa::path(
    get,
    path = "/api/machines",
    tag = "Machines",
    params(ListOptions),
    responses((status = 200, description = "A page of machines", body = Collection<Machine>)),
    security(("bearer" = ["Machine.Read.All", "Machine.ReadWrite.All"]))
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    base: BaseUrl,
    uri: Uri,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let access = caller.admit(&state, Api::ListMachines).await?;
    let mut request = odata::parse(query.as_deref(), &odata::MACHINE_SCHEMA)?;
    let active_since = active_since(&state);
    request.query.filter =
        request.query.filter.take().map(|f| odata::lower_machine_filter(f, active_since)).transpose()?;
    access.restrict(&mut request.query);
    let listed = state.store.machines(&caller.tenant_id, &request.query).await?;
    let groups = state.store.device_groups(&caller.tenant_id).await?;
    let machines = Listed {
        items: listed.items.into_iter().map(|r| to_machine(&state, &groups, r)).collect::<Result<Vec<_>, _>>()?,
        total: listed.total,
        more: listed.more,
    };
    odata::respond(&base, uri.path(), query.as_deref(), "Machines", &request, machines)
}

/// One machine, by id or computer name.
#[utoipa::path(
    get,
    path = "/api/machines/{id}",
    tag = "Machines",
    params(("id" = String, Path, description = "Machine id (40 hex characters) or computer name")),
    responses((status = 200, description = "The machine", body = Entity<Machine>)),
    security(("bearer" = ["Machine.Read.All", "Machine.ReadWrite.All"]))
)]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    base: BaseUrl,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let access = caller.admit(&state, Api::GetMachine).await?;
    let record = caller_machine(&state, &caller, &access, &id, Intent::Read).await?;
    let groups = state.store.device_groups(&caller.tenant_id).await?;
    let machine = to_machine(&state, &groups, record)?;
    Ok(reply(StatusCode::OK, &Entity { context: base.context(context::MACHINE), value: machine }))
}

/// Machines seen since then are `Active`.
fn active_since(state: &AppState) -> Timestamp {
    seconds_before(state.now(), state.config.agents.inactive_after_seconds)
}

/// Adds or removes a machine tag (MDE's `POST /api/machines/{id}/tags`); the machine's
/// device group follows its tags.
#[utoipa::path(
    post,
    path = "/api/machines/{id}/tags",
    tag = "Machines",
    params(("id" = String, Path, description = "Machine id (40 hex characters) or computer name")),
    request_body(content = TagRequest, content_type = "application/json"),
    responses((status = 200, description = "The machine with its tags", body = Entity<Machine>)),
    security(("bearer" = ["Machine.ReadWrite.All"]))
)]
pub async fn tags(
    State(state): State<AppState>,
    caller: Caller,
    base: BaseUrl,
    Path(id): Path<String>,
    Json(request): Json<TagRequest>,
) -> ApiResult<Response> {
    let access = caller.admit(&state, Api::TagMachine).await?;
    let record = caller_machine(&state, &caller, &access, &id, Intent::Act).await?;
    let tag = request.value.trim();
    if tag.is_empty() || tag.chars().count() > MAX_TAG_CHARS {
        return Err(ApiError::new(
            ErrorCode::InvalidInput,
            format!("Invalid input Value: a tag has 1 to {MAX_TAG_CHARS} characters"),
        ));
    }
    // Adding a tag it has, or removing one it lacks, changes nothing.
    let record = state
        .store
        .change_machine_tag(&caller.tenant_id, &record.id, tag, request.action == TagAction::Add)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("Machine {id} was not found")))?;
    crate::rbac::regroup(&state, &record).await?;
    audit::note_target(&record.id);
    audit::note_detail(serde_json::json!({"tag": tag, "action": format!("{:?}", request.action)}));
    let record = caller_machine(&state, &caller, &crate::rbac::Access::Unrestricted, &record.id, Intent::Read).await?;
    let groups = state.store.device_groups(&caller.tenant_id).await?;
    let machine = to_machine(&state, &groups, record)?;
    Ok(reply(StatusCode::OK, &Entity { context: base.context(context::MACHINE), value: machine }))
}

/// Longest machine tag accepted.
const MAX_TAG_CHARS: usize = 200;

fn to_machine(state: &AppState, groups: &[DeviceGroup], r: MachineRecord) -> ApiResult<Machine> {
    let group_name = match r.rbac_group_id {
        Some(id) => groups.iter().find(|g| g.id == id).map(|g| g.name.clone()),
        None => Some(UNGROUPED.to_owned()),
    };
    let health = if r.last_seen >= active_since(state) { HealthStatus::Active } else { HealthStatus::Inactive };
    let id = MachineId::parse(&r.id)
        .ok_or_else(|| ApiError::internal_from(format!("stored machine id {} is malformed", r.id)))?;
    Ok(Machine {
        id,
        computer_dns_name: r.facts.computer_dns_name,
        first_seen: r.first_seen,
        last_seen: r.last_seen,
        os_platform: r.facts.os_platform,
        version: r.facts.os_version.clone(),
        os_version: r.facts.os_version,
        os_processor: None,
        last_ip_address: r.last_ip_address,
        last_external_ip_address: None,
        agent_version: r.facts.agent_version,
        os_build: r.facts.os_build,
        health_status: health,
        device_value: None,
        rbac_group_id: r.rbac_group_id,
        rbac_group_name: group_name,
        risk_score: None,
        exposure_level: None,
        is_aad_joined: false,
        aad_device_id: None,
        machine_tags: r.machine_tags,
        onboarding_status: ONBOARDED.to_owned(),
        os_architecture: r.facts.os_architecture,
        managed_by: None,
        ip_addresses: r.facts.ip_addresses,
    })
}
