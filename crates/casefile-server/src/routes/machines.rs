//! `/api/machines`.

use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use casefile_proto::machine::{HealthStatus, Machine, MachineId, ONBOARDED};
use casefile_proto::odata::{Collection, Entity, context};
use casefile_proto::time::Timestamp;
use casefile_store::{Listed, MachineRecord};

use super::openapi::ListOptions;
use super::{BaseUrl, Path, caller_machine, odata, reply};
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
    caller.admit(&state, Api::ListMachines).await?;
    let mut request = odata::parse(query.as_deref(), &odata::MACHINE_SCHEMA)?;
    let active_since = active_since(&state);
    request.query.filter =
        request.query.filter.take().map(|f| odata::lower_machine_filter(f, active_since)).transpose()?;
    let listed = state.store.machines(&caller.tenant_id, &request.query).await?;
    let machines = Listed {
        items: listed.items.into_iter().map(|r| to_machine(&state, r)).collect::<Result<Vec<_>, _>>()?,
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
    caller.admit(&state, Api::GetMachine).await?;
    let record = caller_machine(&state, &caller, &id).await?;
    let machine = to_machine(&state, record)?;
    Ok(reply(StatusCode::OK, &Entity { context: base.context(context::MACHINE), value: machine }))
}

/// Machines seen since then are `Active`.
fn active_since(state: &AppState) -> Timestamp {
    seconds_before(state.now(), state.config.agents.inactive_after_seconds)
}

fn to_machine(state: &AppState, r: MachineRecord) -> ApiResult<Machine> {
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
        rbac_group_id: None,
        rbac_group_name: None,
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
