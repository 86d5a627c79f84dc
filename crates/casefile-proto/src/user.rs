//! Local console users, as the admin API (`/api/admin/users`) shows and takes them. The
//! password is never shown; it is kept as an argon2id hash.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct User {
    /// The user's principal name: what roles name and `requestor` shows.
    pub name: String,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: String,
    #[schema(value_type = String, format = DateTime)]
    pub password_changed_at: String,
    /// Set while the user is disabled (no sign-in, no session).
    #[schema(value_type = Option<String>, format = DateTime)]
    pub disabled_at: Option<String>,
    /// Failed sign-ins since the last success (the wait before the next attempt grows).
    pub failed_sign_ins: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UserList {
    pub value: Vec<User>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUserRequest {
    /// 1 to 128 letters, digits and `. _ - @`.
    pub name: String,
    /// At least 12 characters.
    pub password: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetPasswordRequest {
    pub password: String,
}
