//! The token endpoint's answers, in the shapes Entra ID gives them
//! (`../shared/spec/mde-api.md` §6.1): what MDE clients parse after
//! `POST /{tenant}/oauth2/v2.0/token` or `POST /{tenant}/oauth2/token`.

use serde::{Deserialize, Serialize};

/// Success at the v2.0 endpoint: numbers are JSON numbers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenResponseV2 {
    pub token_type: String,
    pub expires_in: u64,
    pub ext_expires_in: u64,
    pub access_token: String,
}

/// Success at the v1 endpoint: every number is a string of decimal seconds, as v1 clients
/// (ADAL-era scripts, PSMDATP, SOAR connectors) have always received them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenResponseV1 {
    pub token_type: String,
    pub expires_in: String,
    pub ext_expires_in: String,
    /// Expiry, seconds since the Unix epoch.
    pub expires_on: String,
    /// Start of validity, seconds since the Unix epoch.
    pub not_before: String,
    /// The audience asked for (`resource`).
    pub resource: String,
    pub access_token: String,
}

/// A failure, as Entra ID answers it (RFC 6749 §5.2 plus Entra's fields).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OAuthError {
    /// The RFC 6749 code: `invalid_request`, `invalid_client`, `unsupported_grant_type`, ...
    pub error: String,
    /// `AADSTS<code>: <message>` followed by the trace id, correlation id and timestamp.
    pub error_description: String,
    pub error_codes: Vec<u32>,
    /// `YYYY-MM-DD hh:mm:ssZ`.
    pub timestamp: String,
    pub trace_id: String,
    pub correlation_id: String,
}
