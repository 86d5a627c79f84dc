//! `GET /api/machineactions/{id}/custody` (casefile's own): a package's chain of custody
//! in one record: who requested it and why, when it was dispatched to which agent, what
//! the agent collected (manifest hash, signing key), what the server verified and stored
//! (size, SHA-256), and every link issued and download made (who, when, from where).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use casefile_proto::audit::{Custody, StoredPackage};
use casefile_proto::time::format;
use casefile_store::AuditFilter;

use super::{Intent, Path, caller_action, reply};
use crate::audit;
use crate::auth::{Api, Caller};
use crate::error::ApiResult;
use crate::state::AppState;

/// Most events one record lists; an action collects a handful.
const MAX_EVENTS: u32 = 10_000;

/// The chain of custody of an action's package.
#[utoipa::path(
    get,
    path = "/api/machineactions/{id}/custody",
    tag = "MachineActions",
    params(("id" = uuid::Uuid, Path, description = "MachineAction id (a GUID)")),
    responses((status = 200, description = "The action's chain of custody", body = Custody)),
    security(("bearer" = ["Machine.Read.All", "Machine.ReadWrite.All"]))
)]
pub async fn custody(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<Response> {
    let access = caller.admit(&state, Api::GetMachineAction).await?;
    let action = caller_action(&state, &caller, &access, &id, Intent::Read).await?;
    let package = state.store.package(&caller.tenant_id, action.id).await?.map(|p| StoredPackage {
        size: p.size,
        sha256: p.sha256,
        stored_at: format(&p.stored_at),
        deleted_at: p.deleted_at.as_ref().map(format),
    });
    let filter = AuditFilter {
        tenant_id: Some(caller.tenant_id.to_string()),
        target: Some(action.id.to_string()),
        limit: MAX_EVENTS,
        ..AuditFilter::default()
    };
    let mut records = state.store.audit(&filter).await?;
    // In the order things happened: a call's entry is written when it ends, after the
    // steps it set off may have been written.
    records.sort_by_key(|r| (r.entry.at, r.seq));
    let events = records.into_iter().map(audit::to_wire).collect();
    let record = Custody {
        action_id: action.id,
        machine_id: action.machine_id,
        computer_dns_name: action.computer_dns_name,
        status: action.status,
        requested_by: action.requestor,
        requested_at: format(&action.creation_date_time_utc),
        request_comment: action.requestor_comment,
        package,
        events,
    };
    Ok(reply(StatusCode::OK, &record))
}
