//! OData envelopes of the public API.

use serde::{Deserialize, Serialize};

/// A collection: `{"@odata.context": ..., "value": [...]}`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Collection<T> {
    #[serde(rename = "@odata.context")]
    pub context: String,
    #[serde(rename = "@odata.count", skip_serializing_if = "Option::is_none", default)]
    pub count: Option<u64>,
    pub value: Vec<T>,
    #[serde(rename = "@odata.nextLink", skip_serializing_if = "Option::is_none", default)]
    pub next_link: Option<String>,
}

/// A single entity with its `@odata.context` in front.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Entity<T> {
    #[serde(rename = "@odata.context")]
    pub context: String,
    #[serde(flatten)]
    pub value: T,
}

/// A primitive value, as `getPackageUri` answers: `{"@odata.context": ...#Edm.String, "value": ...}`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Value<T> {
    #[serde(rename = "@odata.context")]
    pub context: String,
    pub value: T,
}

/// The `@odata.context` suffixes, one per answer shape.
pub mod context {
    pub const ACTION: &str = "$metadata#MachineActions/$entity";
    pub const ACTIONS: &str = "$metadata#MachineActions";
    pub const MACHINE: &str = "$metadata#Machines/$entity";
    pub const MACHINES: &str = "$metadata#Machines";
    pub const STRING: &str = "$metadata#Edm.String";
}
