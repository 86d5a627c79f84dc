//! `/api/machines`.

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use casefile_proto::machine::{HealthStatus, Machine, MachineId, ONBOARDED};
use casefile_proto::odata::{Collection, Entity, context};
use casefile_store::MachineRecord;

use super::{BaseUrl, Path, odata, paging};
use crate::auth::{Api, Caller};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    base: BaseUrl,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    caller.authorize(Api::ListMachines)?;
    let page = paging(query.as_deref())?;
    let records = state.store.machines(&caller.tenant_id, page).await?;
    let value = records.into_iter().map(|r| to_machine(&state, r)).collect::<Result<Vec<_>, _>>()?;
    Ok(odata(
        StatusCode::OK,
        &Collection { context: base.context(context::MACHINES), count: None, value, next_link: None },
    ))
}

pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    base: BaseUrl,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    caller.authorize(Api::GetMachine)?;
    let record = state
        .store
        .machine(&caller.tenant_id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("Machine {id} was not found")))?;
    let machine = to_machine(&state, record)?;
    Ok(odata(StatusCode::OK, &Entity { context: base.context(context::MACHINE), value: machine }))
}

fn to_machine(state: &AppState, r: MachineRecord) -> ApiResult<Machine> {
    let inactive_after = chrono::Duration::seconds(state.config.agents.inactive_after_seconds as i64);
    let health =
        if chrono::Utc::now() - r.last_seen > inactive_after { HealthStatus::Inactive } else { HealthStatus::Active };
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
