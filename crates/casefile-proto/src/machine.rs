//! The Machine entity (`../shared/spec/mde-api.md` §4.5) as far as casefile knows it.

use serde::{Deserialize, Serialize};

use crate::time::{self, Timestamp};

/// A machine id: 40 lowercase hex characters, as MDE's device ids.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(try_from = "String", into = "String")]
pub struct MachineId(String);

impl MachineId {
    pub fn parse(raw: &str) -> Option<Self> {
        let ok = raw.len() == 40 && raw.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        ok.then(|| Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for MachineId {
    type Error = String;
    fn try_from(raw: String) -> Result<Self, String> {
        Self::parse(&raw).ok_or_else(|| format!("'{raw}' is not a machine id (40 lowercase hex)"))
    }
}

impl From<MachineId> for String {
    fn from(id: MachineId) -> String {
        id.0
    }
}

impl std::fmt::Display for MachineId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum HealthStatus {
    Active,
    Inactive,
    ImpairedCommunication,
    NoSensorData,
    NoSensorDataImpairedCommunication,
    Unknown,
}

/// One entry of `ipAddresses`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IpAddress {
    pub ip_address: String,
    pub mac_address: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub operational_status: Option<String>,
}

/// The Machine entity. Fields casefile cannot know (risk, exposure, AAD) are `null`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Machine {
    pub id: MachineId,
    pub computer_dns_name: String,
    #[serde(with = "time")]
    #[schema(value_type = String, format = DateTime)]
    pub first_seen: Timestamp,
    #[serde(with = "time")]
    #[schema(value_type = String, format = DateTime)]
    pub last_seen: Timestamp,
    pub os_platform: String,
    pub os_version: Option<String>,
    pub os_processor: Option<String>,
    pub version: Option<String>,
    pub last_ip_address: Option<String>,
    pub last_external_ip_address: Option<String>,
    pub agent_version: Option<String>,
    pub os_build: Option<i64>,
    pub health_status: HealthStatus,
    pub device_value: Option<String>,
    pub rbac_group_id: Option<i64>,
    pub rbac_group_name: Option<String>,
    pub risk_score: Option<String>,
    pub exposure_level: Option<String>,
    pub is_aad_joined: bool,
    pub aad_device_id: Option<String>,
    pub machine_tags: Vec<String>,
    pub onboarding_status: String,
    pub os_architecture: Option<String>,
    pub managed_by: Option<String>,
    pub ip_addresses: Vec<IpAddress>,
}

/// `onboardingStatus` of every enrolled agent.
pub const ONBOARDED: &str = "Onboarded";

/// Body of `POST /api/machines/{id}/tags`, as MDE takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TagRequest {
    #[serde(rename = "Value")]
    pub value: String,
    #[serde(rename = "Action")]
    pub action: TagAction,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum TagAction {
    Add,
    Remove,
}
