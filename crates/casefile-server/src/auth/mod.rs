//! Who is calling and what they may do. Public API callers present a bearer JWT
//! (checked for signature, `exp`, `nbf`, `iss`, `aud` and the permission each API needs);
//! agents present the credential they got at enrollment.
//!
//! - `keys`: the signing keys (rotation, retirement, reload while running);
//! - `caller`: bearer token → `Caller` (application or delegated user, `requestor`);
//! - `permissions`: API → accepted `roles` and `scp`;
//! - `applications`: app registrations, the clients of the token endpoint;
//! - `tokens`: the access tokens the token endpoint issues;
//! - `issuers`: external identity providers (Entra ID, Keycloak, any OIDC provider)
//!   whose tokens are accepted, with their keys (JWKS);
//! - `cache`: tokens already verified.

pub mod applications;
mod cache;
pub mod caller;
pub mod issuers;
pub mod keys;
pub mod passwords;
pub mod permissions;
pub mod sessions;
pub mod tokens;
pub mod users;

pub use cache::VerifiedTokens;
pub use caller::{AccessClaims, Caller, UserIdentity};
pub use issuers::TrustedIssuers;
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
    /// A trusted issuer is misconfigured, or its key set cannot be read.
    #[error("{0}")]
    Issuer(String),
}

/// Why an access token is refused; `caller::token_error` words it for the caller.
#[derive(Debug)]
pub enum TokenRejected {
    /// The signature or a claim check failed (jsonwebtoken's verdict).
    Invalid(jsonwebtoken::errors::Error),
    /// Not three base64url parts of JSON, or claims of the wrong types.
    Malformed,
    /// `iss` is neither this server's nor a trusted issuer's.
    UntrustedIssuer,
    /// The tenant an issuer's `{tenantid}` stands for is not the token's `tid`.
    IssuerTenantMismatch,
    /// `tid` is not among the issuer's `allowed_tids`.
    TenantNotAllowed,
    /// The issuer maps to no casefile tenant and the token has no `tid`.
    NoTenant,
    /// `alg` is `none`: the token is not signed.
    Unsigned,
    /// `alg` is not the algorithm pinned to the key the token names (HMAC included).
    AlgorithmNotAccepted,
    /// The header names no key (`kid`).
    NoKeyId,
    /// No key of the issuer has the token's `kid`, even after fetching its keys again.
    UnknownKey,
    /// The issuer's keys could not be fetched yet.
    KeysUnavailable,
}

impl From<jsonwebtoken::errors::Error> for TokenRejected {
    fn from(e: jsonwebtoken::errors::Error) -> Self {
        Self::Invalid(e)
    }
}
