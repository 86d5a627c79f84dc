//! Who is calling and what they may do. Public API callers present a bearer JWT
//! (checked for signature, `exp`, `nbf`, `iss`, `aud` and the permission each API needs);
//! agents present the credential they got at enrollment.
//!
//! - `keys`: the signing keys (rotation, retirement, reload while running);
//! - `caller`: bearer token → `Caller` (application or delegated user, `requestor`);
//! - `permissions`: API → accepted `roles` and `scp`;
//! - `applications`: app registrations, the clients of the token endpoint;
//! - `tokens`: the access tokens the token endpoint issues;
//! - `cache`: tokens already verified.

pub mod applications;
mod cache;
pub mod caller;
pub mod keys;
pub mod permissions;
pub mod tokens;

pub use cache::VerifiedTokens;
pub use caller::{AccessClaims, Caller, UserIdentity};
pub use keys::{KEY_PURPOSE_TOKENS, Keyring};
pub use permissions::Api;

/// Audiences an MDE client may ask a token for (`../shared/spec/mde-api.md` §6.2); the
/// tokens this server mints use the first.
pub const MDE_AUDIENCES: &[&str] = &[
    "https://api.securitycenter.microsoft.com",
    "https://api.securitycenter.windows.com",
    "https://securitycenter.onmicrosoft.com/windowsatpservice",
    "https://api.security.microsoft.com",
    "fc780465-2017-40d4-a0c5-307022471b92",
];

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("signing key: {0}")]
    Key(String),
    #[error(transparent)]
    Store(#[from] casefile_store::StoreError),
    #[error("token: {0}")]
    Jwt(#[from] jsonwebtoken::errors::Error),
}
