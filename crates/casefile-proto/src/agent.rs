//! The agent API: how agents enroll, wait for work and report results. Served under
//! `/agent/v1`, authenticated by the agent's own credential (enrollment: by an
//! enrollment token).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::machine::IpAddress;

/// Path prefix of the agent API.
pub const PREFIX: &str = "/agent/v1";
/// Query parameter (`=1`) of `GET /agent/v1/actions/next` by which an agent says it confirms
/// receipt of what the poll hands out (`POST /agent/v1/actions/{id}/accepted`).
pub const CONFIRM_PARAM: &str = "confirm";
/// Header carrying the hex SHA-256 of an uploaded package.
pub const SHA256_HEADER: &str = "x-casefile-sha256";

/// Facts about the host, sent at enrollment and at every agent start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostInfo {
    pub computer_dns_name: String,
    pub os_platform: String,
    pub os_version: Option<String>,
    pub os_architecture: Option<String>,
    pub os_build: Option<i64>,
    pub agent_version: String,
    #[serde(default)]
    pub ip_addresses: Vec<IpAddress>,
}

/// `POST /agent/v1/enroll` with `Authorization: Bearer <enrollment token>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnrollRequest {
    /// Stable identity of the host (e.g. `/etc/machine-id`); the server derives the
    /// machine id from it and the tenant, so re-enrolling the same host keeps its id.
    pub host_id: String,
    pub host: HostInfo,
    /// The agent's Ed25519 public key (base64), for verifying what it signs.
    pub public_key: Option<String>,
    /// Required to enroll a machine that is already enrolled: proof that the agent holds
    /// the machine's registered key (see [`EnrollChallenge`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof: Option<EnrollProof>,
}

/// `POST /agent/v1/enroll/challenge` with `Authorization: Bearer <enrollment token>`: asks
/// for a challenge to re-enroll the (already enrolled) machine of `host_id`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnrollChallengeRequest {
    pub host_id: String,
}

/// A single-use challenge, valid for `expires_in_seconds`. The agent signs
/// [`reenroll_message`] with the machine's registered key and sends it as the
/// enrollment's [`EnrollProof`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnrollChallenge {
    pub machine_id: String,
    pub nonce: String,
    pub expires_in_seconds: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnrollProof {
    pub nonce: String,
    /// Ed25519 signature (base64) over [`reenroll_message`].
    pub signature: String,
}

/// What a re-enrolling agent signs: domain-separated, binding the challenge to the machine
/// and to the key it registers next (`""` when it registers none), so a signature is good
/// for that one enrollment only.
pub fn reenroll_message(nonce: &str, machine_id: &str, new_public_key: Option<&str>) -> Vec<u8> {
    format!("casefile-reenroll-v1\0{nonce}\0{machine_id}\0{}", new_public_key.unwrap_or_default()).into_bytes()
}

/// An enrollment token as `casefile enroll-token list --json` and the admin API show it
/// (never the secret).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnrollmentToken {
    pub id: Uuid,
    pub tenant_id: String,
    pub created_at: String,
    pub expires_at: String,
    pub revoked_at: Option<String>,
    pub uses_allowed: u32,
    pub uses: u32,
    pub last_used_at: Option<String>,
    /// `usable`, `revoked`, `expired` or `used up`.
    pub state: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EnrollmentTokenList {
    pub value: Vec<EnrollmentToken>,
}

/// `POST /api/admin/enrollmentTokens`: how many enrollments the token allows, and for how long.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateEnrollmentTokenRequest {
    /// Enrollments allowed (default 1, at most 100,000).
    #[serde(default)]
    pub uses: Option<u32>,
    /// Lifetime in seconds (default one day, at most 365 days).
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
}

/// A new enrollment token: its secret, shown this once, and its record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnrollmentTokenSecret {
    /// `cfe_…`: what `casefile-agent --enroll-token` takes. Never shown again.
    pub token: String,
    pub enrollment_token: EnrollmentToken,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnrollResponse {
    pub machine_id: String,
    pub tenant_id: String,
    /// The agent's credential: shown once, stored by the server only as a hash.
    pub credential: String,
}

/// `POST /agent/v1/hello`: the agent (re)starts and reports its host facts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HelloRequest {
    pub host: HostInfo,
    /// Actions whose result (package, failure report, cancel confirmation) the agent kept
    /// across its restart and is still delivering: the server does not fail them as
    /// abandoned. Older agents send none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holding: Vec<Uuid>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HelloResponse {
    pub machine_id: String,
    /// Actions that were `InProgress` for this machine and were failed because the
    /// agent restarted without finishing them.
    pub abandoned_actions: Vec<Uuid>,
    /// How long the server holds a poll open, in seconds.
    pub poll_wait_seconds: u64,
    /// How long a running action's agent may stay silent before the action ends
    /// `TimeOut`: the agent keeps retrying an upload at least this long. 0 from servers
    /// that do not say.
    #[serde(default)]
    pub silent_timeout_seconds: u64,
}

/// Work handed to an agent by `GET /agent/v1/actions/next`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AgentTask {
    /// The action is already `InProgress` when the agent receives it. An agent that polled
    /// with [`CONFIRM_PARAM`] confirms receipt with `POST /agent/v1/actions/{id}/accepted`;
    /// an unconfirmed hand-out is offered again after a short lease (the answer may have
    /// been lost on the way).
    CollectInvestigationPackage {
        action_id: Uuid,
        requestor: String,
        comment: String,
        /// What to collect; an older server sends none, meaning the standard profile.
        #[serde(default)]
        profile: Option<crate::profile::Profile>,
    },
    /// Stop that collection, discard what it wrote, then confirm with
    /// `POST /agent/v1/actions/{id}/cancelled`. Repeated until confirmed.
    Cancel { action_id: Uuid },
}

/// `PUT /agent/v1/actions/{id}/progress`: how far the collection and its upload have got
/// (the server stamps the time and shows it as the action's `casefileProgress`).
pub type ProgressReport = crate::action::Progress;

/// `POST /agent/v1/actions/{id}/failure`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ActionFailure {
    pub error_h_result: i32,
    pub troubleshoot_info: String,
}

/// Answer to a verified package upload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UploadReceipt {
    pub action_id: Uuid,
    pub size: u64,
    pub sha256: String,
}
