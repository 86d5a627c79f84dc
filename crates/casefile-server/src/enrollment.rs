//! Enrollment tokens and machine identities (issue 9 items 1 and 2), for the CLI
//! (`casefile enroll-token ...`, `casefile machine reset-identity`) and the agent routes.
//!
//! An enrollment token lets an agent create a machine that does not exist yet, one
//! machine per use. It never re-keys an existing machine: that takes a signature by the
//! machine's registered key over a single-use challenge, or an administrator's reset.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use casefile_proto::agent::{EnrollmentToken, reenroll_message};
use casefile_proto::time::{Timestamp, format};
use casefile_store::{AuditEntry, EnrollmentTokenRecord, MachineRecord, Store, StoreError};
use uuid::Uuid;

use crate::secrets;
use casefile_proto::TenantId;

/// The longest an enrollment token may live: a token is a standing permission to add
/// machines, so it must end.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(365 * 24 * 3600);
/// The most enrollments one token may allow.
pub const MAX_TOKEN_USES: u32 = 100_000;
/// How long a re-enrollment challenge may be answered.
pub const CHALLENGE_TTL: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum EnrollmentError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub type Result<T, E = EnrollmentError> = std::result::Result<T, E>;

/// A new token for `tenant`, allowing `uses` enrollments until `now + ttl`; the secret is
/// returned this once and stored only as a hash.
pub async fn create_token(
    store: &dyn Store,
    tenant: &str,
    ttl: Duration,
    uses: u32,
    now: Timestamp,
) -> Result<(String, EnrollmentTokenRecord)> {
    let tenant = tenant_of(tenant)?;
    if ttl.is_zero() || ttl > MAX_TOKEN_TTL {
        return Err(EnrollmentError::Invalid(format!(
            "the lifetime must be between 1 and {} seconds",
            MAX_TOKEN_TTL.as_secs()
        )));
    }
    if !(1..=MAX_TOKEN_USES).contains(&uses) {
        return Err(EnrollmentError::Invalid(format!("--uses must be between 1 and {MAX_TOKEN_USES}")));
    }
    let expires_at = chrono::Duration::from_std(ttl)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .ok_or_else(|| EnrollmentError::Invalid("the lifetime runs past the end of time".to_owned()))?;
    let token = secrets::generate(secrets::ENROLLMENT_PREFIX);
    let record = EnrollmentTokenRecord {
        id: Uuid::new_v4(),
        tenant_id: tenant,
        token_hash: secrets::hash(&token),
        created_at: now,
        expires_at,
        revoked_at: None,
        uses_allowed: uses,
        uses: 0,
        last_used_at: None,
    };
    store.insert_enrollment_token(&record).await?;
    Ok((token, record))
}

pub fn to_wire(r: &EnrollmentTokenRecord, now: Timestamp) -> EnrollmentToken {
    EnrollmentToken {
        id: r.id,
        tenant_id: r.tenant_id.to_string(),
        created_at: format(&r.created_at),
        expires_at: format(&r.expires_at),
        revoked_at: r.revoked_at.as_ref().map(format),
        uses_allowed: r.uses_allowed,
        uses: r.uses,
        last_used_at: r.last_used_at.as_ref().map(format),
        state: r.unusable(now).unwrap_or("usable").to_owned(),
    }
}

/// The tenant an operator named (a command line, an admin request).
fn tenant_of(raw: &str) -> Result<TenantId> {
    TenantId::parse(raw).ok_or_else(|| EnrollmentError::Invalid(format!("'{raw}' is not a valid tenant id")))
}

pub async fn list_tokens(store: &dyn Store, tenant: &str, now: Timestamp) -> Result<Vec<EnrollmentToken>> {
    let tenant = &tenant_of(tenant)?;
    Ok(store.enrollment_tokens(tenant).await?.iter().map(|r| to_wire(r, now)).collect())
}

/// Revokes a token by its id: no enrollment uses it from now on.
pub async fn revoke_token(store: &dyn Store, tenant: &str, id: &str, now: Timestamp) -> Result<EnrollmentToken> {
    let tenant = &tenant_of(tenant)?;
    let id = Uuid::try_parse(id.trim())
        .map_err(|_| EnrollmentError::Invalid(format!("'{id}' is not a token id (a GUID, as `list` shows)")))?;
    let revoked = store
        .revoke_enrollment_token(tenant, id, now)
        .await?
        .ok_or_else(|| EnrollmentError::NotFound(format!("no enrollment token {id} in tenant '{tenant}'")))?;
    Ok(to_wire(&revoked, now))
}

/// Voids a machine's credential and key, audited as `machine.reset-identity` by `actor`:
/// its agent is refused from now on and the next enrollment by token makes it afresh.
pub async fn reset_identity(
    store: &dyn Store,
    tenant: &str,
    machine_id: &str,
    actor: &str,
    now: Timestamp,
) -> Result<MachineRecord> {
    let tenant = &tenant_of(tenant)?;
    let machine_id = machine_id.trim().to_ascii_lowercase();
    let before = store
        .machine(tenant, &machine_id)
        .await?
        .filter(|m| m.id == machine_id)
        .ok_or_else(|| EnrollmentError::NotFound(format!("no machine {machine_id} in tenant '{tenant}'")))?;
    let entry = AuditEntry {
        at: now,
        tenant_id: Some(tenant.to_string()),
        actor_kind: "admin".to_owned(),
        actor: actor.to_owned(),
        event: "machine.reset-identity".to_owned(),
        target: Some(machine_id.clone()),
        outcome: "ok".to_owned(),
        http_status: None,
        source_ip: None,
        correlation_id: None,
        detail: Some(serde_json::json!({
            "computerDnsName": before.facts.computer_dns_name,
            "voidedAgentKey": before.agent_public_key,
        })),
    };
    store
        .reset_machine_identity(tenant, &machine_id, &entry)
        .await?
        .ok_or_else(|| EnrollmentError::NotFound(format!("no machine {machine_id} in tenant '{tenant}'")))
}

/// Whether `signature` (base64) is `key`'s (base64 Ed25519) over the re-enrollment message.
pub fn proof_holds(key: &str, signature: &str, nonce: &str, machine_id: &str, new_key: Option<&str>) -> bool {
    let Ok(key) = casefile_package::signature::parse_public_key(key) else {
        return false;
    };
    let Some(signature) = STANDARD
        .decode(signature.trim())
        .ok()
        .and_then(|b| <[u8; 64]>::try_from(b.as_slice()).ok())
        .map(|b| ed25519_dalek::Signature::from_bytes(&b))
    else {
        return false;
    };
    key.verify_strict(&reenroll_message(nonce, machine_id, new_key), &signature).is_ok()
}
