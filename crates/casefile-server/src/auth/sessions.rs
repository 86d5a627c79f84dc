//! Console sessions: a random secret in an HttpOnly, Secure, SameSite=Lax cookie, its
//! SHA-256 in the store (shared by every replica), an idle and an absolute end. A session
//! stands for a delegated user: [`caller`] gives the same [`Caller`] a delegated token of
//! that user would, so the console passes the API's permission, role and device-group
//! checks, quotas and audit trail unchanged.

use casefile_proto::TenantId;
use casefile_store::{SessionIdentity, SessionRecord, StoreError};
use uuid::Uuid;

use super::permissions;
use super::{Caller, UserIdentity};
use crate::secrets;
use crate::state::AppState;

/// The cookie: `__Host-` makes browsers require `Secure`, `Path=/` and no `Domain`.
pub const COOKIE: &str = "__Host-casefile-session";
const SECRET_PREFIX: &str = "cfc_";
/// `last_seen` is written at most this often (idle expiry is counted in minutes).
const TOUCH_EVERY_SECONDS: i64 = 60;

/// A console session's delegated permissions: every one the console's pages use. What a
/// user may actually do is decided by the roles RBAC gives that user, as for any
/// delegated token (`rbac::Access`).
pub(crate) const DELEGATED_SCOPES: &[&str] = &[
    permissions::MACHINE_READ,
    permissions::MACHINE_READ_WRITE,
    permissions::MACHINE_COLLECT_FORENSICS,
    permissions::CASEFILE_ADMIN,
];

/// Starts a session; returns the secret for the cookie.
pub async fn start(
    state: &AppState,
    tenant: &TenantId,
    identity: SessionIdentity,
    local_user: Option<Uuid>,
) -> Result<(String, SessionRecord), StoreError> {
    let secret = secrets::generate(SECRET_PREFIX);
    let now = state.now();
    let record = SessionRecord {
        id_hash: secrets::hash(&secret),
        tenant_id: tenant.clone(),
        local_user,
        identity,
        csrf: secrets::generate(""),
        created_at: now,
        last_seen: now,
        expires_at: now + chrono::Duration::hours(state.config.console.absolute_hours as i64),
    };
    state.store.create_session(&record).await?;
    Ok((secret, record))
}

/// The live session the cookie's secret names; `None` when there is none or it ended
/// (idle too long, past its absolute end, or its local user disabled or given a new
/// password). `touch`: the request is the user's (a page's own live refresh is not, so it
/// does not keep an unattended session alive).
pub async fn find(state: &AppState, secret: &str, touch: bool) -> Result<Option<SessionRecord>, StoreError> {
    if !secret.starts_with(SECRET_PREFIX) || secret.len() > 128 {
        return Ok(None);
    }
    let Some(session) = state.store.session(&secrets::hash(secret)).await? else {
        return Ok(None);
    };
    let now = state.now();
    let idle = chrono::Duration::minutes(state.config.console.idle_minutes as i64);
    if now >= session.expires_at || now - session.last_seen >= idle {
        state.store.delete_session(&session.id_hash).await?;
        return Ok(None);
    }
    if let Some(user_id) = session.local_user
        && !local_user_holds(state, &session, user_id).await?
    {
        state.store.delete_session(&session.id_hash).await?;
        return Ok(None);
    }
    if touch && (now - session.last_seen).num_seconds() >= TOUCH_EVERY_SECONDS {
        state.store.touch_session(&session.id_hash, now).await?;
    }
    Ok(Some(session))
}

/// Whether the local user a session was started for still may have it: the same user
/// (not one deleted and made again under its name), enabled, and its password unchanged
/// since the session began. Disabling and new passwords delete sessions themselves; this
/// catches the one started while such a change was committing.
async fn local_user_holds(state: &AppState, session: &SessionRecord, user_id: uuid::Uuid) -> Result<bool, StoreError> {
    let Some(name) = &session.identity.upn else { return Ok(false) };
    let user = state.store.tenant(&session.tenant_id).user_by_name(name).await?;
    Ok(user.is_some_and(|u| u.id == user_id && u.disabled_at.is_none() && u.password_changed_at <= session.created_at))
}

pub async fn end(state: &AppState, secret: &str) -> Result<(), StoreError> {
    state.store.delete_session(&secrets::hash(secret)).await.map(|_| ())
}

/// Whether `offered` is the session's CSRF secret (compared in constant time).
pub fn csrf_matches(session: &SessionRecord, offered: &str) -> bool {
    subtle_eq(session.csrf.as_bytes(), offered.as_bytes())
}

fn subtle_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The caller a session acts as: the delegated user it signed in.
pub fn caller(session: &SessionRecord) -> Caller {
    let id = &session.identity;
    let user = UserIdentity { oid: id.oid.clone(), upn: id.upn.clone(), groups: id.groups.clone() };
    let requestor = id.upn.clone().unwrap_or_else(|| id.subject.clone());
    let principal = id.oid.clone().or_else(|| id.upn.clone()).unwrap_or_else(|| id.subject.clone());
    Caller {
        tenant_id: session.tenant_id.clone(),
        principal,
        requestor,
        roles: Vec::new(),
        scopes: DELEGATED_SCOPES.iter().map(|s| s.to_string()).collect(),
        user: Some(user),
    }
}
