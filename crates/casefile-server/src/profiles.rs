//! Which profile a collection runs: the one its request names, else its device group's
//! default, else the configured default (`[profiles]`), and the definition sent to the
//! agent with the task.

use casefile_proto::profile::Profile;
use casefile_proto::{ErrorCode, TenantId};
use casefile_store::MachineRecord;

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// The profile a new collection on `machine` runs. A named profile that does not exist is
/// the caller's error, with the names that do.
pub async fn for_collection(
    state: &AppState,
    tenant: &TenantId,
    machine: &MachineRecord,
    requested: Option<&str>,
) -> ApiResult<String> {
    let config = &state.config.profiles;
    let profiles = config.resolved().map_err(ApiError::internal_from)?;
    if let Some(name) = requested {
        if profiles.contains_key(name) {
            return Ok(name.to_owned());
        }
        let known = profiles.keys().cloned().collect::<Vec<_>>().join(", ");
        // A name is echoed only when it could be one: the message is not a mirror.
        let named = if casefile_proto::profile::valid_name(name) { format!(" '{name}'") } else { String::new() };
        return Err(ApiError::new(
            ErrorCode::InvalidRequestBody,
            format!("Request body is incorrect: no profile is named{named}; the profiles are {known}"),
        ));
    }
    if !config.groups.is_empty()
        && let Some(group_id) = machine.rbac_group_id
    {
        let groups = state.store.tenant(tenant).device_groups().await?;
        if let Some(profile) = groups.iter().find(|g| g.id == group_id).and_then(|group| config.groups.get(&group.name))
        {
            return Ok(profile.clone());
        }
    }
    Ok(config.default.clone())
}

/// The definition of `name` as the agent runs it; `None` when the configuration no longer
/// defines it (changed since the collection was requested).
pub fn definition(state: &AppState, name: &str) -> ApiResult<Option<Profile>> {
    let mut profiles = state.config.profiles.resolved().map_err(ApiError::internal_from)?;
    Ok(profiles.remove(name))
}
