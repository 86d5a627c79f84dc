//! Delegated users' access (`../shared/spec/mde-api.md` §6.3): what their roles let them do
//! and which device groups they see. Application tokens are tenant-wide: their access is
//! everything their permissions allow.
//!
//! A user holds a role when the role names the user (object id or UPN) or one of the
//! user's identity-provider groups (`groups` claim). A device group, and "Ungrouped devices
//! (default)" alike, is visible to a user in one of its user groups, or to every user when
//! it names none. `Administrator` ignores device groups. A tenant without roles gives
//! delegated users nothing (security by default).

use std::collections::HashSet;

use casefile_proto::TenantId;
use casefile_proto::rbac::{self, DeviceGroup, Role, permission};
use casefile_store::query::{CmpOp, Expr, OrderBy, Value};
use casefile_store::{ListQuery, MachineRecord, StoreError, Visibility};

use crate::auth::{Api, Caller};
use crate::error::ApiError;
use crate::state::AppState;

/// What a caller may do and see, beyond its token's permissions.
#[derive(Debug, Clone)]
pub enum Access {
    /// An application, or a user holding `Administrator`.
    Unrestricted,
    User {
        permissions: HashSet<String>,
        visible: Visibility,
    },
}

impl Access {
    pub async fn of(state: &AppState, caller: &Caller) -> Result<Self, ApiError> {
        let Some(user) = &caller.user else {
            return Ok(Self::Unrestricted);
        };
        let names: Vec<&str> = user.oid.iter().chain(user.upn.iter()).map(String::as_str).collect();
        let holds = |role: &Role| {
            role.users.iter().any(|u| names.iter().any(|n| n.eq_ignore_ascii_case(u)))
                || role.groups.iter().any(|g| user.groups.iter().any(|ug| ug.eq_ignore_ascii_case(g)))
        };
        let roles = state.store.roles(&caller.tenant_id).await?;
        let permissions: HashSet<String> =
            roles.iter().filter(|r| holds(r)).flat_map(|r| r.permissions.iter().cloned()).collect();
        if permissions.contains(permission::ADMINISTRATOR) {
            return Ok(Self::Unrestricted);
        }
        let member = |wanted: &[String]| {
            wanted.is_empty() || wanted.iter().any(|want| user.groups.iter().any(|has| has.eq_ignore_ascii_case(want)))
        };
        let groups = state.store.device_groups(&caller.tenant_id).await?;
        let visible = Visibility {
            groups: groups.iter().filter(|g| member(&g.user_groups)).map(|g| g.id).collect(),
            ungrouped: member(&state.store.ungrouped_user_groups(&caller.tenant_id).await?),
        };
        Ok(Self::User { permissions, visible })
    }

    /// Refuses the call unless the user's roles grant what `api` needs.
    pub fn require(&self, api: Api) -> Result<(), ApiError> {
        let Self::User { permissions, .. } = self else {
            return Ok(());
        };
        let needed = api.role_permission();
        if permissions.contains(needed) {
            return Ok(());
        }
        Err(ApiError::forbidden(format!(
            "The user does not have the role permission '{needed}' this API needs; ask an administrator for a role granting it"
        )))
    }

    /// The restriction lists apply.
    pub fn visibility(&self) -> Option<Visibility> {
        match self {
            Self::Unrestricted => None,
            Self::User { visible, .. } => Some(visible.clone()),
        }
    }

    /// Whether `machine` is in a group the caller sees.
    pub fn sees(&self, machine: &MachineRecord) -> bool {
        match self {
            Self::Unrestricted => true,
            Self::User { visible, .. } => match machine.rbac_group_id {
                None => visible.ungrouped,
                Some(group) => visible.groups.contains(&group),
            },
        }
    }

    /// Applies the caller's visibility to a list.
    pub fn restrict(&self, query: &mut ListQuery) {
        query.visible = self.visibility();
    }
}

/// Puts `machine` into the group its name, tags and platform match now.
pub async fn regroup(state: &AppState, machine: &MachineRecord) -> Result<(), StoreError> {
    let groups = state.store.device_groups(&machine.tenant_id).await?;
    regroup_with(state, &groups, machine).await
}

async fn regroup_with(state: &AppState, groups: &[DeviceGroup], machine: &MachineRecord) -> Result<(), StoreError> {
    let group =
        rbac::group_of(groups, &machine.facts.computer_dns_name, &machine.machine_tags, &machine.facts.os_platform)
            .map(|g| g.id);
    if group != machine.rbac_group_id {
        state.store.set_machine_group(&machine.tenant_id, &machine.id, group).await?;
    }
    Ok(())
}

/// Regroups every machine of `tenant` among `groups`, a page at a time. Pages follow the
/// machine id, which never changes (`lastSeen` order would move under polling agents).
async fn regroup_tenant(state: &AppState, tenant: &TenantId, groups: &[DeviceGroup]) -> Result<u64, StoreError> {
    const PAGE: u64 = 1000;
    let mut after: Option<String> = None;
    let mut done = 0;
    loop {
        let query = ListQuery {
            filter: after.map(|id| Expr::Compare { property: "id", op: CmpOp::Gt, value: Value::String(id) }),
            order_by: vec![OrderBy { property: "id", descending: false }],
            ..ListQuery::first(PAGE)
        };
        let page = state.store.machines(tenant, &query).await?;
        for machine in &page.items {
            regroup_with(state, groups, machine).await?;
        }
        done += page.items.len() as u64;
        match page.items.last() {
            Some(last) if page.more => after = Some(last.id.clone()),
            _ => return Ok(done),
        }
    }
}

/// Checks a role before it is stored: known permissions, a name.
pub fn check_role(role: &Role) -> Result<(), String> {
    if role.name.trim().is_empty() {
        return Err("a role needs a name".to_owned());
    }
    match role.permissions.iter().find(|p| !permission::ALL.contains(&p.as_str())) {
        Some(unknown) => Err(format!("unknown role permission '{unknown}'; known: {}", permission::ALL.join(", "))),
        None => Ok(()),
    }
}

/// Checks a device group before it is stored.
pub fn check_group(group: &DeviceGroup) -> Result<(), String> {
    if group.name.trim().is_empty() || group.name.eq_ignore_ascii_case(rbac::UNGROUPED) {
        return Err(format!("a device group needs a name other than '{}'", rbac::UNGROUPED));
    }
    if group.rank < 1 {
        return Err("rank starts at 1 (the highest)".to_owned());
    }
    if group.rules.is_empty() || group.rules.iter().any(|r| r.values.is_empty() || r.values.len() > 10) {
        return Err("a device group needs at least one rule, each with 1 to 10 values".to_owned());
    }
    Ok(())
}

fn invalid(why: String) -> ApiError {
    ApiError::new(casefile_proto::ErrorCode::InvalidInput, why)
}

/// Creates or replaces a role (CLI and admin API).
pub async fn put_role(state: &AppState, tenant: &TenantId, role: Role) -> Result<Role, ApiError> {
    check_role(&role).map_err(invalid)?;
    state.store.put_role(tenant, &role).await?;
    Ok(role)
}

pub async fn delete_role(state: &AppState, tenant: &TenantId, name: &str) -> Result<(), ApiError> {
    if state.store.delete_role(tenant, name).await? {
        Ok(())
    } else {
        Err(ApiError::not_found(format!("Role {name} was not found")))
    }
}

/// Creates a device group and regroups the tenant's machines.
pub async fn create_group(state: &AppState, tenant: &TenantId, group: DeviceGroup) -> Result<DeviceGroup, ApiError> {
    check_group(&group).map_err(invalid)?;
    let created = match state.store.create_device_group(tenant, &group).await {
        Err(StoreError::Duplicate(why)) => return Err(invalid(why)),
        other => other?,
    };
    regroup_tenant(state, tenant, &state.store.device_groups(tenant).await?).await?;
    Ok(created)
}

/// Deletes a device group; its machines join whatever group they match next.
pub async fn delete_group(state: &AppState, tenant: &TenantId, id: i64) -> Result<(), ApiError> {
    let mut groups = state.store.device_groups(tenant).await?;
    if !groups.iter().any(|g| g.id == id) {
        return Err(ApiError::not_found(format!("Device group {id} was not found")));
    }
    // Its machines move to their next group first, so none is ungrouped (visible to more
    // users) in between.
    groups.retain(|g| g.id != id);
    regroup_tenant(state, tenant, &groups).await?;
    state.store.delete_device_group(tenant, id).await?;
    Ok(())
}

/// Sets who sees "Ungrouped devices (default)" (empty: every user).
pub async fn set_ungrouped_access(
    state: &AppState,
    tenant: &TenantId,
    user_groups: Vec<String>,
) -> Result<(), ApiError> {
    state.store.set_ungrouped_user_groups(tenant, &user_groups).await?;
    Ok(())
}
