//! What the store keeps, beyond the wire entities of `casefile-proto`.

use casefile_proto::TenantId;
use casefile_proto::action::{ActionStatus, MachineAction};
use casefile_proto::machine::IpAddress;
use casefile_proto::time::Timestamp;
use uuid::Uuid;

#[derive(Debug, Clone)]
pub struct SigningKeyRecord {
    pub kid: String,
    /// What the key signs, e.g. `token`.
    pub purpose: String,
    pub algorithm: String,
    pub private_key: Vec<u8>,
    pub public_key: Vec<u8>,
    pub created_at: Timestamp,
    pub retired_at: Option<Timestamp>,
}

/// An application registration: a client of the token endpoint (client credentials).
#[derive(Debug, Clone, PartialEq)]
pub struct ApplicationRecord {
    /// The OAuth2 `client_id`, also the tokens' `appid` and `oid`.
    pub client_id: Uuid,
    pub tenant_id: TenantId,
    /// Unique within the tenant, compared without letter case; the tokens' `app_displayname`.
    pub name: String,
    /// argon2 PHC string of the client secret; the secret itself is never stored.
    pub secret_hash: String,
    /// Application permissions granted: the tokens' `roles`.
    pub roles: Vec<String>,
    pub created_at: Timestamp,
    /// When the secret was last replaced; `None` while it is the one made at creation.
    pub secret_rotated_at: Option<Timestamp>,
    /// Set while the application is disabled: it gets no tokens.
    pub disabled_at: Option<Timestamp>,
}

#[derive(Debug, Clone)]
pub struct EnrollmentTokenRecord {
    pub id: Uuid,
    pub tenant_id: TenantId,
    pub token_hash: String,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
    /// How many enrollments the token allows (1 unless made with more).
    pub uses_allowed: u32,
    /// How many enrollments it has made.
    pub uses: u32,
    pub last_used_at: Option<Timestamp>,
}

impl EnrollmentTokenRecord {
    /// Why the token cannot enroll at `now`, or `None` when it can.
    pub fn unusable(&self, now: Timestamp) -> Option<&'static str> {
        if self.revoked_at.is_some() {
            Some("revoked")
        } else if self.expires_at <= now {
            Some("expired")
        } else if self.uses >= self.uses_allowed {
            Some("used up")
        } else {
            None
        }
    }
}

/// A proof that the enrolling agent holds the machine's registered key: the server
/// checked the signature over `nonce` with `key`; the store checks that `key` is still the
/// machine's and consumes the challenge, in the enrollment's transaction.
#[derive(Debug, Clone)]
pub struct KeyProof {
    pub key: String,
    pub nonce: String,
}

/// An enrollment by token: one use of the token, and the machine created, or re-keyed when
/// it proved its registered key or an administrator reset its identity.
#[derive(Debug, Clone)]
pub struct TokenEnrollment {
    pub token_hash: String,
    pub machine: MachineEnrollment,
    pub proof: Option<KeyProof>,
    /// Written in the same transaction when the enrollment succeeds.
    pub audit: Option<AuditEntry>,
}

/// How an enrollment by token ended.
#[derive(Debug, Clone)]
pub enum EnrollOutcome {
    /// A machine that did not exist.
    Created(MachineRecord),
    /// An existing machine whose agent proved its registered key.
    Rekeyed(MachineRecord),
    /// An existing machine whose identity an administrator had reset.
    Recreated(MachineRecord),
    /// The token is unknown, revoked, expired or used up (nothing changed).
    TokenUnusable,
    /// The machine exists and neither a valid proof nor a reset allows re-keying it
    /// (nothing changed, the token's use included).
    MachineEnrolled,
    /// The challenge is unknown, expired, already used or for another machine.
    ChallengeInvalid,
}

/// A challenge issued to a machine's agent for re-enrollment.
#[derive(Debug, Clone)]
pub struct EnrollChallengeRecord {
    pub machine_id: String,
    pub nonce: String,
    pub expires_at: Timestamp,
}

/// Host facts an agent reports at enrollment and at every start.
#[derive(Debug, Clone, Default)]
pub struct HostFacts {
    pub computer_dns_name: String,
    pub os_platform: String,
    pub os_version: Option<String>,
    pub os_architecture: Option<String>,
    pub os_build: Option<i64>,
    pub agent_version: Option<String>,
    pub ip_addresses: Vec<IpAddress>,
}

#[derive(Debug, Clone)]
pub struct MachineEnrollment {
    pub id: String,
    pub tenant_id: TenantId,
    pub facts: HostFacts,
    pub credential_hash: String,
    pub agent_public_key: Option<String>,
    pub last_ip_address: Option<String>,
    pub at: Timestamp,
}

#[derive(Debug, Clone)]
pub struct MachineRecord {
    pub id: String,
    pub tenant_id: TenantId,
    pub facts: HostFacts,
    pub last_ip_address: Option<String>,
    pub machine_tags: Vec<String>,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    pub agent_public_key: Option<String>,
    /// Its device group; `None`: ungrouped.
    pub rbac_group_id: Option<i64>,
}

/// A status change, with the fields the new status carries.
#[derive(Debug, Clone)]
pub struct Transition {
    pub to: ActionStatus,
    pub at: Timestamp,
    pub error_h_result: Option<i32>,
    pub troubleshoot_info: Option<String>,
    pub cancellation_requestor: Option<String>,
    pub cancellation_comment: Option<String>,
}

impl Transition {
    pub fn to(to: ActionStatus, at: Timestamp) -> Self {
        Self {
            to,
            at,
            error_h_result: None,
            troubleshoot_info: None,
            cancellation_requestor: None,
            cancellation_comment: None,
        }
    }

    pub fn failure(to: ActionStatus, at: Timestamp, hresult: i32, why: impl Into<String>) -> Self {
        Self { error_h_result: Some(hresult), troubleshoot_info: Some(why.into()), ..Self::to(to, at) }
    }
}

/// A package that passed size and hash verification.
#[derive(Debug, Clone)]
pub struct PackageRecord {
    pub action_id: Uuid,
    pub tenant_id: TenantId,
    pub blob_key: String,
    pub size: u64,
    pub sha256: String,
    pub stored_at: Timestamp,
    /// Set once retention removed the package's bytes.
    pub deleted_at: Option<Timestamp>,
}

/// A cancellation asked for through the public API.
#[derive(Debug, Clone)]
pub struct CancelRequest {
    pub requestor: String,
    pub comment: Option<String>,
    pub at: Timestamp,
}

/// What a cancellation request found.
#[derive(Debug, Clone)]
pub enum CancelOutcome {
    /// The action was `Pending`: it is `Cancelled` now.
    Cancelled(MachineAction),
    /// The action is `InProgress`: its agent is asked to stop and confirm.
    Requested(MachineAction),
    /// The action had already ended; nothing changed.
    AlreadyFinal(MachineAction),
}

/// One entry of the audit trail, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub at: Timestamp,
    /// `None` when the tenant is unknown (a token that did not verify).
    pub tenant_id: Option<String>,
    /// `application`, `user`, `agent`, `link` or `anonymous`.
    pub actor_kind: String,
    /// Who: an application id, a user's UPN, a machine id; `-` when unknown.
    pub actor: String,
    /// What happened, e.g. `collect`, `cancel`, `token.issue`, `package.ingest`.
    pub event: String,
    /// What it concerned: an action id, a machine id, an application id.
    pub target: Option<String>,
    /// `ok`, or why it was refused.
    pub outcome: String,
    pub http_status: Option<u16>,
    pub source_ip: Option<String>,
    pub correlation_id: Option<String>,
    /// Event-specific facts as JSON (sizes, hashes, comments).
    pub detail: Option<serde_json::Value>,
}

/// A stored audit entry with its sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub seq: i64,
    pub entry: AuditEntry,
}

/// Which audit entries to read; every field narrows.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub tenant_id: Option<String>,
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
    pub event: Option<String>,
    pub actor: Option<String>,
    pub target: Option<String>,
    /// Entries after this sequence number (for paging).
    pub after_seq: Option<i64>,
    pub limit: u32,
}

/// A local console user (`casefile user create`): signs in with a name and password.
#[derive(Debug, Clone)]
pub struct UserRecord {
    pub id: Uuid,
    pub tenant_id: TenantId,
    /// The user's principal name: what roles name (`--users NAME`) and `requestor` shows.
    /// Unique within the tenant, compared without letter case.
    pub name: String,
    /// argon2id PHC string; the password itself is never stored.
    pub password_hash: String,
    pub created_at: Timestamp,
    pub password_changed_at: Timestamp,
    /// Set while the user is disabled: no sign-in, no session.
    pub disabled_at: Option<Timestamp>,
    /// Failed sign-ins since the last success: the wait before the next attempt grows with it.
    pub failed_logins: u32,
    pub last_failed_at: Option<Timestamp>,
}

/// How long after its last failed sign-in a user with `failures` failed sign-ins in a row
/// must wait before the next attempt is checked: nothing for the first `free` failures,
/// then 2^(failures − free − 1) seconds, at most `max`.
pub fn sign_in_wait(
    failures: u32,
    last_failed: Option<Timestamp>,
    now: Timestamp,
    free: u32,
    max: std::time::Duration,
) -> Option<std::time::Duration> {
    let last = last_failed?;
    let over = failures.checked_sub(free).filter(|&n| n > 0)?;
    let wait = std::time::Duration::from_secs(1u64 << (over - 1).min(20)).min(max);
    let since = (now - last).to_std().unwrap_or(std::time::Duration::ZERO);
    wait.checked_sub(since).filter(|left| !left.is_zero())
}

/// The sign-in backoff a store applies (see [`UserStore::attempt_sign_in`]).
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub free: u32,
    pub max: std::time::Duration,
}

/// A change to a local user. Disabling it or setting a password ends its sessions.
#[derive(Debug, Clone)]
pub enum UserChange {
    Disable {
        at: Timestamp,
    },
    Enable,
    Password {
        hash: String,
        at: Timestamp,
    },
    /// A failed sign-in: counted, for the backoff.
    LoginFailed {
        at: Timestamp,
    },
    /// A sign-in that succeeded: the failure count starts again.
    LoginSucceeded,
}

impl UserRecord {
    /// Applies `change` to the record; `true` when it ends the user's sessions.
    pub fn apply(&mut self, change: &UserChange) -> bool {
        match change {
            UserChange::Disable { at } => {
                self.disabled_at = self.disabled_at.or(Some(*at));
                true
            }
            UserChange::Enable => {
                self.disabled_at = None;
                false
            }
            UserChange::Password { hash, at } => {
                self.password_hash = hash.clone();
                self.password_changed_at = *at;
                self.failed_logins = 0;
                self.last_failed_at = None;
                true
            }
            UserChange::LoginFailed { at } => {
                self.failed_logins = self.failed_logins.saturating_add(1);
                self.last_failed_at = Some(*at);
                false
            }
            UserChange::LoginSucceeded => {
                self.failed_logins = 0;
                false
            }
        }
    }
}

/// Who a console session is: a local user, or a user of a trusted OpenID Connect issuer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SessionIdentity {
    /// `local`, or the issuer (`iss`) that signed the user in.
    pub issuer: String,
    /// The issuer's `sub` (a local user's id).
    pub subject: String,
    /// The principal name roles match (a local user's name; `upn` / `preferred_username`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upn: Option<String>,
    /// The object id roles may name (`oid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oid: Option<String>,
    /// Identity-provider groups (`groups`), which roles and device groups may name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}

/// A signed-in console session. The browser holds the secret; the store its SHA-256.
#[derive(Debug, Clone)]
pub struct SessionRecord {
    /// SHA-256 (hex) of the session secret in the cookie.
    pub id_hash: String,
    pub tenant_id: TenantId,
    /// The local user, so disabling it or changing its password ends the session.
    pub local_user: Option<Uuid>,
    pub identity: SessionIdentity,
    /// The secret every form and state-changing request must echo (CSRF).
    pub csrf: String,
    pub created_at: Timestamp,
    /// The last request's time (written at most once a minute): idle expiry counts from it.
    pub last_seen: Timestamp,
    /// The absolute end of the session, whatever its use.
    pub expires_at: Timestamp,
}
