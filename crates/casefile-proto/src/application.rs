//! casefile's own admin API for application registrations (`/api/admin/applications`)
//! and the JSON the `casefile app` commands print. Not part of the MDE contract: keys are
//! snake_case like the OAuth2 parameters (`client_id`, `client_secret`) they pair with.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::time::{self, Timestamp};

/// An application registration: a client of the token endpoint. Its secret is never
/// shown again after creation or rotation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Application {
    /// The OAuth2 `client_id`; the tokens' `appid`.
    pub client_id: Uuid,
    pub tenant_id: String,
    /// Unique within the tenant (letter case aside); the tokens' `app_displayname` and the
    /// `requestor` of the actions the application creates.
    pub name: String,
    /// Application permissions, issued as the tokens' `roles`.
    pub roles: Vec<String>,
    /// `false` while disabled: the token endpoint refuses the application.
    pub enabled: bool,
    #[serde(with = "time")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    /// When the secret was last replaced; `null` while it is the one made at creation.
    #[serde(with = "time::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub secret_rotated_at: Option<Timestamp>,
    #[serde(with = "time::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub disabled_at: Option<Timestamp>,
}

/// An application with its new secret: the answer to creating one or rotating its
/// secret, the only time the secret is shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ApplicationSecret {
    #[serde(flatten)]
    pub application: Application,
    /// The OAuth2 `client_secret`. Store it now: only its hash is kept.
    pub client_secret: String,
}

/// `{"value": [...]}`: the tenant's applications, by name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ApplicationList {
    pub value: Vec<Application>,
}

/// `POST /api/admin/applications`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApplicationRequest {
    pub name: String,
    /// Application permissions, e.g. `["Machine.CollectForensics", "Machine.Read.All"]`.
    pub roles: Vec<String>,
}

/// `POST /api/admin/applications/{client_id}/roles`: replaces the roles.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetRolesRequest {
    pub roles: Vec<String>,
}
